"""The backend's caches (run_s3fs.fs.core.caches and the namespace's use of them): TTLs,
negative entries, bounds, tree invalidation, listings patched by our own changes."""

from __future__ import annotations

import stat
import time

from run_s3fs.fs.core.caches import Bounded, in_tree
from run_s3fs.fs.core.namespace import MISSING, DirEntry, Namespace, NamespaceSettings
from run_s3fs.fs.layout import Attr

A = Attr(stat.S_IFREG | 0o644, 1, 0, 0, 0, 0, 0)
B = Attr(stat.S_IFREG | 0o600, 2, 0, 0, 0, 0, 0)


def namespace(stat_ttl: float = 10, negative_ttl: float = 1, max_entries: int = 10) -> Namespace:
    # These paths never reach the engine: none is given.
    settings = NamespaceSettings("", 0, 0, stat_ttl, negative_ttl, max_entries, 8)
    return Namespace(None, settings)  # type: ignore[arg-type]


def test_in_tree():
    assert in_tree("/d", "/d") and in_tree("/d/x/y", "/d") and in_tree("/anything", "/")
    assert not in_tree("/dx", "/d") and not in_tree("/", "/d")


def test_stat_cache_positive_negative_and_expiry():
    ns = namespace(stat_ttl=0.3, negative_ttl=0.1)
    ns.store("/a", A)
    ns.store("/gone", None)
    assert ns.cached("/a") is A and ns.cached("/gone") is MISSING and ns.cached("/x") is None
    time.sleep(0.15)
    assert ns.cached("/gone") is None  # negative entries expire sooner
    assert ns.cached("/a") is A
    time.sleep(0.2)
    assert ns.cached("/a") is None


def test_stat_cache_max_age():
    ns = namespace()
    ns.store("/a", A)
    assert ns.cached("/a", max_age=1) is A
    time.sleep(0.12)
    assert ns.cached("/a", max_age=0.1) is None  # too old for a revalidating open
    assert ns.cached("/a") is A


def test_bounded_lru_and_tree_invalidation():
    c: Bounded[str, Attr] = Bounded(3, ttl=10)
    for p in ("/d", "/d/x", "/d/y", "/e"):
        c.put(p, A)
    assert c.get("/d") is None  # the oldest went
    c.put("/d", A)  # pushes /d/x out
    assert c.get("/d/y", touch=True) is A  # used: now the newest
    c.put("/f", A)  # pushes /e out, not /d/y
    assert c.get("/e") is None and c.get("/d/y") is A
    assert sorted(a.size for a in c.pop_tree("/d")) == [1, 1]
    assert c.get("/d/y") is None and c.get("/f") is A


def test_bounded_drops_expired_entries_nobody_asks_for():
    # A workload that keeps making new names (and deleting old ones) must not fill the
    # cache up to its bound with entries long expired: the soak run's memory grew so.
    c: Bounded[str, object] = Bounded(100_000, ttl=0.2)
    for i in range(1000):
        c.put(f"/gone{i}", MISSING, ttl=0.05)
    c.put("/kept", A)
    time.sleep(0.1)
    c.put("/new", A)
    assert len(c) == 2 and c.get("/kept") is A


def test_zero_ttl_caches_nothing():
    ns = namespace(stat_ttl=0, negative_ttl=0)
    ns.store("/a", A)
    ns.store("/b", None)
    assert ns.cached("/a") is None and ns.cached("/b") is None


def test_bounded_update_keeps_age_and_lifetime():
    c: Bounded[str, int] = Bounded(10, ttl=0.2)
    c.put("k", 1)
    c.update("k", lambda v: v + 1)
    c.update("absent", lambda v: v + 1)  # nothing to change
    assert c.get("k") == 2 and c.get("absent") is None
    time.sleep(0.25)
    assert c.get("k") is None


def test_our_own_changes_patch_the_parent_listing():
    ns = namespace(negative_ttl=0.3)
    ns.listings.put("/d", {"x": DirEntry("x", False)})
    ns.store("/d/x", A)
    ns.changed("/d/y", exists=True, is_dir=True)
    ns.changed("/d/x", exists=False)
    ns.changed("/other/z", exists=True)  # not cached: no effect
    assert ns.listings.get("/d") == {"y": DirEntry("y", True)}
    assert ns.listings.get("/other") is None
    assert ns.cached("/d/x") is None  # its attributes are forgotten too
    ns.changed("/d/y")  # unknown whether it is there now: the listing goes
    assert ns.listings.get("/d") is None
    ns.listings.put("/", {"a": DirEntry("a", False)})
    time.sleep(0.35)
    assert ns.listings.get("/") is None


def test_changed_tree_forgets_everything_below():
    ns = namespace()
    for p in ("/d", "/d/x", "/d/sub/y", "/dx"):
        ns.store(p, A)
    ns.listings.put("/d/sub", {"y": DirEntry("y", False)})
    ns.changed_tree("/d", exists=False)
    assert [ns.cached(p) for p in ("/d", "/d/x", "/d/sub/y")] == [None, None, None]
    assert ns.cached("/dx") is A and ns.listings.get("/d/sub") is None


def test_objects_known_by_etag_and_time():
    ns = namespace(max_entries=2)
    ns.objects.put("k", ('"e1"', 100, A))
    assert ns.objects.get("k") == ('"e1"', 100, A)
    ns.objects.put("k2", ('"x"', 1, B))
    ns.objects.put("k3", ('"y"', 1, B))
    assert ns.objects.get("k") is None  # bounded
    ns.changed("/k3", exists=True)  # our own change: what we knew of the object goes
    assert ns.objects.get("k3") is None

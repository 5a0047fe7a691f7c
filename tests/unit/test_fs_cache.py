"""The backend's caches (run_s3fs.fs.cache): TTLs, negative entries, bounds, invalidation."""

from __future__ import annotations

import stat
import time

from run_s3fs.fs.cache import MISSING, DirEntry, ListingCache, ObjectAttrCache, StatCache
from run_s3fs.fs.layout import Attr

A = Attr(stat.S_IFREG | 0o644, 1, 0, 0, 0, 0, 0)
B = Attr(stat.S_IFREG | 0o600, 2, 0, 0, 0, 0, 0)


def test_stat_cache_positive_negative_and_expiry():
    c = StatCache(ttl=0.3, negative_ttl=0.1, max_entries=10)
    c.put("/a", A)
    c.put("/gone", None)
    assert c.get("/a") is A and c.get("/gone") is MISSING and c.get("/other") is None
    time.sleep(0.15)
    assert c.get("/gone") is None  # negative entries expire sooner
    assert c.get("/a") is A
    time.sleep(0.2)
    assert c.get("/a") is None


def test_stat_cache_max_age():
    c = StatCache(ttl=10, negative_ttl=1, max_entries=10)
    c.put("/a", A)
    assert c.get("/a", max_age=1) is A
    time.sleep(0.12)
    assert c.get("/a", max_age=0.1) is None  # too old for a revalidating open
    assert c.get("/a") is A


def test_stat_cache_bounded_lru_and_tree_invalidation():
    c = StatCache(ttl=10, negative_ttl=1, max_entries=3)
    for p in ("/d", "/d/x", "/d/y", "/e"):
        c.put(p, A)
    assert c.get("/d") is None  # the oldest went
    c.invalidate_tree("/d")
    assert c.get("/d/x") is None and c.get("/d/y") is None and c.get("/e") is A


def test_stat_cache_drops_expired_entries_nobody_asks_for():
    # A workload that keeps making new names (and deleting old ones) must not fill the
    # cache up to max_entries with entries long expired: the soak run's memory grew so.
    c = StatCache(ttl=0.2, negative_ttl=0.05, max_entries=100_000)
    for i in range(1000):
        c.put(f"/gone{i}", None)
    c.put("/kept", A)
    time.sleep(0.1)
    c.put("/new", A)
    assert len(c) == 2 and c.get("/kept") is A


def test_zero_ttl_caches_nothing():
    c = StatCache(ttl=0, negative_ttl=0, max_entries=10)
    c.put("/a", A)
    assert c.get("/a") is None


def test_listing_cache_update_and_expiry():
    c = ListingCache(ttl=0.2)
    c.put("/d", {"x": DirEntry("x", False)})
    c.update("/d/y", DirEntry("y", True), exists=True)
    c.update("/d/x", DirEntry("x", False), exists=False)
    c.update("/other/z", DirEntry("z", False), exists=True)  # not cached: no effect
    assert c.get("/d") == {"y": DirEntry("y", True)}
    assert c.get("/other") is None
    c.invalidate_parent("/d/y")
    assert c.get("/d") is None
    c.put("/", {"a": DirEntry("a", False)})
    time.sleep(0.25)
    assert c.get("/") is None


def test_object_attr_cache_needs_same_etag_and_time():
    c = ObjectAttrCache(max_entries=2)
    c.put("k", '"e1"', 100, A)
    assert c.get("k", '"e1"', 100) is A
    assert c.get("k", '"e2"', 100) is None  # content changed
    assert c.get("k", '"e1"', 101) is None  # metadata rewritten (copy bumps the time)
    c.put("noetag", "", 1, B)
    assert c.get("noetag", "", 1) is None
    c.put("k2", '"x"', 1, B)
    c.put("k3", '"y"', 1, B)
    assert c.get("k", '"e1"', 100) is None  # bounded
    c.invalidate("k3")
    assert c.get("k3", '"y"', 1) is None

"""Requests made ahead (run_s3fs.fs.core.prefetch): attributes of listed entries fetched
on demand, each HEAD made once, a bounded number in flight; listings fetched ahead.

The fetchers are asynchronous, as the engine's are: here a thread pool's futures."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from run_s3fs.fs.core.prefetch import FAN_OUT_AFTER, NOT_LISTED, AttrsAhead, ListingsAhead
from run_s3fs.fs.engine import Listing
from run_s3fs.fs.layout import Attr


def attr(size: int) -> Attr:
    return Attr(0o100644, size, 0, 0, 0, 0, 0)


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.fetched: list[tuple[str, bool]] = []
        self.running = 0
        self.peak = 0
        self.stored: dict[str, Attr | None] = {}
        self.gate = gate
        self.lock = threading.Lock()

    def fetch(self, key: str, is_prefix: bool) -> Attr | None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        if self.gate is not None:
            self.gate.wait(5)
        with self.lock:
            self.fetched.append((key, is_prefix))
            self.running -= 1
        return None if key.endswith("gone") else attr(len(key))

    def store(self, path: str, a: Attr | None) -> None:
        self.stored[path] = a


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8) as p:
        yield p


def ahead_of(pool, fetch, store, ttl: float, max_in_flight: int = 64) -> AttrsAhead:
    return AttrsAhead(lambda k, p: pool.submit(fetch, k, p), store, ttl, max_in_flight)


def test_unlisted_paths_are_not_handled(pool):
    rec = Recorder()
    pf = ahead_of(pool, rec.fetch, rec.store, ttl=60)
    assert pf.lookup("/d/x") is NOT_LISTED
    pf.listed("/d", {"a": ("d/a", False)})
    assert pf.lookup("/d/b") is NOT_LISTED
    assert pf.lookup("/other/a") is NOT_LISTED
    assert rec.fetched == []


def test_one_lookup_fetches_one_entry_then_a_kind_fans_out(pool):
    rec = Recorder()
    pf = ahead_of(pool, rec.fetch, rec.store, ttl=60)
    files = {f"f{i}": (f"d/f{i}", False) for i in range(10)}
    pf.listed("/d", {**files, "sub": ("d/sub/", True)})
    assert pf.lookup("/d/f0") == attr(len("d/f0"))
    assert rec.fetched == [("d/f0", False)]  # a single `stat`: a single HEAD
    assert FAN_OUT_AFTER == 2
    assert pf.lookup("/d/f5") == attr(len("d/f5"))
    pool.shutdown(wait=True)
    # every file once, the directory not (a different kind, not asked for)
    assert sorted(k for k, _ in rec.fetched) == sorted(k for k, _ in files.values())
    assert set(rec.stored) == {f"/d/f{i}" for i in range(10)}
    # fetched entries are no longer the prefetcher's business: the stat cache has them
    assert pf.lookup("/d/f7") is NOT_LISTED


def test_concurrent_lookups_share_one_fetch(pool):
    gate = threading.Event()
    rec = Recorder(gate)
    pf = ahead_of(pool, rec.fetch, rec.store, ttl=60)
    pf.listed("/d", {"a": ("d/a", False)})
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(pf.lookup("/d/a"))) for _ in range(5)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert rec.fetched == [("d/a", False)]
    assert results == [attr(len("d/a"))] * 5


def test_a_fan_out_keeps_a_bounded_number_in_flight(pool):
    gate = threading.Event()
    rec = Recorder(gate)
    pf = ahead_of(pool, rec.fetch, rec.store, ttl=60, max_in_flight=3)
    pf.listed("/d", {f"f{i}": (f"d/f{i}", False) for i in range(20)})
    waiting = [threading.Thread(target=pf.lookup, args=(f"/d/f{i}",)) for i in (0, 1)]
    for t in waiting:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in waiting:
        t.join(5)
    # the line starts each next fetch as one finishes: wait for it before the pool closes
    deadline = time.monotonic() + 5
    while len(rec.fetched) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.shutdown(wait=True)
    assert len(rec.fetched) == 20
    # the two lookups' own fetches, and the line's three at most
    assert rec.peak <= 5


def test_a_lookup_waiting_for_an_entry_still_in_line_starts_it(pool):
    gate = threading.Event()
    rec = Recorder(gate)
    pf = ahead_of(pool, rec.fetch, rec.store, ttl=60, max_in_flight=1)
    pf.listed("/d", {f"f{i}": (f"d/f{i}", False) for i in range(5)})
    threading.Thread(target=pf.lookup, args=("/d/f0",)).start()
    threading.Thread(target=pf.lookup, args=("/d/f1",)).start()  # the fan-out: f2..f4 in line
    time.sleep(0.2)
    got: list = []
    last = threading.Thread(target=lambda: got.append(pf.lookup("/d/f4")))
    last.start()
    time.sleep(0.2)
    gate.set()
    last.join(5)
    assert got == [attr(len("d/f4"))]


def test_gone_entries_and_errors(pool):
    rec = Recorder()
    pf = ahead_of(pool, rec.fetch, rec.store, ttl=60)
    pf.listed("/d", {"gone": ("d/gone", False)})
    assert pf.lookup("/d/gone") is None  # deleted since the listing: the caller asks anew

    def failing(key: str, is_prefix: bool) -> Attr | None:
        raise OSError(5, "boom")

    pf = ahead_of(pool, failing, rec.store, ttl=60)
    pf.listed("/d", {"a": ("d/a", False)})
    with pytest.raises(OSError):
        pf.lookup("/d/a")
    assert "/d/a" not in rec.stored


def test_forget_drops_listed_entries_and_stale_results(pool):
    gate = threading.Event()
    rec = Recorder(gate)
    pf = ahead_of(pool, rec.fetch, rec.store, ttl=60)
    pf.listed("/d", {"a": ("d/a", False), "b": ("d/b", False)})
    pf.forget("/d/a")
    assert pf.lookup("/d/a") is NOT_LISTED
    # a fetch that started before our own change is not cached
    got: list = []
    t = threading.Thread(target=lambda: got.append(pf.lookup("/d/b")))
    t.start()
    while not pf._pending:  # the lookup has claimed it
        pass
    pf.forget("/d/b")
    gate.set()
    t.join(5)
    assert got == [attr(len("d/b"))]
    assert rec.stored == {}


def test_forget_tree_and_expiry(pool):
    rec = Recorder()
    pf = ahead_of(pool, rec.fetch, rec.store, ttl=60)
    pf.listed("/d/e", {"a": ("d/e/a", False)})
    pf.forget_tree("/d")
    assert pf.lookup("/d/e/a") is NOT_LISTED
    expired = ahead_of(pool, rec.fetch, rec.store, ttl=-1)
    expired.listed("/d", {"a": ("d/a", False)})
    assert expired.lookup("/d/a") is NOT_LISTED


# --- listings fetched ahead ----------------------------------------------------------------


class Lister:
    def __init__(self) -> None:
        self.listed: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, path: str) -> Listing:
        with self.lock:
            self.listed.append(path)
        if path.endswith("broken"):
            raise OSError(5, "listing failed")
        listing = Listing()
        listing.prefixes.append(f"{path}/inner/")  # which call made it, for the asserts
        return listing


def subdirs(n: int) -> list[str]:
    return [f"/t/d{i}" for i in range(n)]


def test_the_second_subdirectory_read_starts_the_rest(pool):
    lister = Lister()
    ahead = ListingsAhead(lambda p: pool.submit(lister, p), ttl=60)
    ahead.listed("/t", subdirs(5))
    assert ahead.take("/t/d0") is None  # one readdir of a subdirectory: no walk yet
    assert lister.listed == []
    assert ahead.take("/t/d1") is None  # the second: d1 is listed by the caller...
    pool.shutdown(wait=True)
    assert sorted(lister.listed) == ["/t/d2", "/t/d3", "/t/d4"]  # ...the rest ahead
    for name in ("d2", "d3", "d4"):
        got = ahead.take(f"/t/{name}")
        assert got is not None and got.prefixes == [f"/t/{name}/inner/"]
    assert ahead.take("/t/d3") is None  # a listing fetched ahead serves one readdir


def test_reading_one_directory_again_is_no_walk(pool):
    lister = Lister()
    ahead = ListingsAhead(lambda p: pool.submit(lister, p), ttl=60)
    ahead.listed("/t", subdirs(5))
    for _ in range(4):
        assert ahead.take("/t/d0") is None  # `ls d0` again and again
    assert ahead.take("/elsewhere/x") is None
    pool.shutdown(wait=True)
    assert lister.listed == []


def test_at_most_ahead_in_flight(pool):
    gate = threading.Event()
    lister = Lister()

    def slow(path: str) -> Listing:
        gate.wait(5)
        return lister(path)

    ahead = ListingsAhead(lambda p: pool.submit(slow, p), ttl=60, ahead=3)
    ahead.listed("/t", subdirs(10))
    ahead.take("/t/d0")
    ahead.take("/t/d1")
    gate.set()
    pool.shutdown(wait=True)
    assert sorted(lister.listed) == ["/t/d2", "/t/d3", "/t/d4"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answered_at_once(lister: Lister):
    def list_dir(path: str) -> Future[Listing]:
        done: Future[Listing] = Future()
        done.set_result(lister(path))
        return done

    return list_dir


def test_each_step_of_a_walk_keeps_its_lead():
    # Answered at once, none is in flight: what the walk has not read yet bounds them.
    lister = Lister()
    ahead = ListingsAhead(answered_at_once(lister), ttl=60, ahead=3)
    ahead.listed("/t", subdirs(10))
    ahead.take("/t/d0")
    ahead.take("/t/d1")
    assert lister.listed == ["/t/d2", "/t/d3", "/t/d4"]
    assert ahead.take("/t/d2") is not None  # a step: one more, the lead stays three
    assert lister.listed == ["/t/d2", "/t/d3", "/t/d4", "/t/d5"]
    assert ahead.take("/t/d3") is not None
    assert ahead.take("/t/d4") is not None
    assert lister.listed[-2:] == ["/t/d6", "/t/d7"]


def test_a_slow_walk_gets_the_lead_it_reads_within_the_ttl():
    # Before, a walk of 0.1 s a directory got 32 listings that a 2 s ttl outlived.
    lister, clock = Lister(), Clock()
    ahead = ListingsAhead(answered_at_once(lister), ttl=2.0, ahead=32, clock=clock)
    ahead.listed("/t", subdirs(100))
    ahead.take("/t/d0")
    clock.now += 0.1
    ahead.take("/t/d1")
    assert len(lister.listed) == 10  # half the ttl at 0.1 s a directory
    for i in range(2, 12):
        clock.now += 0.1
        assert ahead.take(f"/t/d{i}") is not None  # none expired before the walk came
    assert len(lister.listed) == 20
    for i in range(12, 40):  # the walk speeds up: its lead grows to the bound
        clock.now += 0.001
        assert ahead.take(f"/t/d{i}") is not None
    assert len(lister.listed) - 38 == 32


def test_our_change_and_failures_and_age_make_the_caller_list_anew(pool):
    lister = Lister()
    ahead = ListingsAhead(lambda p: pool.submit(lister, p), ttl=60)
    ahead.listed("/t", [*subdirs(4), "/t/broken"])
    ahead.take("/t/d0")
    ahead.take("/t/d1")
    pool.shutdown(wait=True)
    ahead.forget("/t/d2")  # e.g. a file created in d2 after its listing was fetched
    assert ahead.take("/t/d2") is None
    assert ahead.take("/t/broken") is None  # the caller's own LIST reports the error
    ahead.forget_tree("/t")
    assert ahead.take("/t/d3") is None
    other = ThreadPoolExecutor(2)
    expired = ListingsAhead(lambda p: other.submit(Lister(), p), ttl=0.05)
    expired.listed("/t", subdirs(3))
    expired.take("/t/d0")
    expired.take("/t/d1")
    time.sleep(0.2)
    assert expired.take("/t/d2") is None  # fetched too long ago for this readdir


def test_peek_shows_a_listing_ahead_and_leaves_it_for_the_readdir():
    lister, clock = Lister(), Clock()
    ahead = ListingsAhead(answered_at_once(lister), ttl=2.0, clock=clock)
    ahead.listed("/t", subdirs(4))
    assert ahead.peek("/t/d2") is None  # nothing fetched yet
    ahead.take("/t/d0")
    ahead.take("/t/d1")
    peeked = ahead.peek("/t/d2")
    assert peeked is not None and peeked.prefixes == ["/t/d2/inner/"]
    assert ahead.take("/t/d2") is peeked  # still there for its readdir
    assert ahead.peek("/t/d2") is None  # used up by it
    clock.now += 2.5
    assert ahead.peek("/t/d3") is None  # too old to tell anything
    assert lister.listed == ["/t/d2", "/t/d3"]

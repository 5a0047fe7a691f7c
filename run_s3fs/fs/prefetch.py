"""Attributes of listed entries, fetched when they are asked for, not when listed.

A listing gives names, kinds (a common prefix is a directory) and sizes, but not the
s3fs metadata (mode, owner, times): that takes a HEAD per object. `find` needs only the
names and kinds, so `readdir` answers from the listing alone. `ls -l` then asks for
every entry's attributes one after the other: on the second entry of a kind (file or
directory) looked up in a freshly listed directory, HEADs for all that kind's remaining
entries start in parallel, and each lookup waits for its own (or runs it first, if the
pool has not got to it yet). Every HEAD is made once, however many lookups wait on it.

Listings themselves are fetched ahead the same way (`ListingsAhead`): `find`, `du` and
`ls -R` read a directory's subdirectories one after the other, a LIST each; on the
second readdir among the subdirectories of one directory, the listings of the others
start in parallel.
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from run_s3fs.fs.layout import Attr

if TYPE_CHECKING:
    from run_s3fs.fs.s3 import Listing

NOT_LISTED = object()  # the prefetcher knows nothing about this path: look it up anew
FAN_OUT_AFTER = 2  # lookups of one kind in a listing before the rest are fetched in bulk


class _Pending:
    """One HEAD that several lookups may wait for; whoever comes first runs it."""

    def __init__(self, fetch: Callable[[], Attr | None], done: Callable[[_Pending], None]):
        self._fetch = fetch
        self._done = done
        self._lock = threading.Lock()
        self._started = False
        self._finished = threading.Event()
        self.result: Attr | None = None
        self.error: BaseException | None = None
        self.stale = False  # our own change since it started: do not cache the result

    def run(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        try:
            self.result = self._fetch()
        except BaseException as e:  # handed to the waiters
            self.error = e
        finally:
            self._done(self)
            self._finished.set()

    def wait(self) -> Attr | None:
        self.run()  # not started yet: do it in the caller's thread, now
        self._finished.wait()
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class _Listed:
    """A directory's entries whose attributes were not known when it was listed."""

    expires: float
    todo: dict[str, tuple[str, bool]]  # name → (key to HEAD, is a common prefix)
    lookups: dict[bool, int] = field(default_factory=lambda: {False: 0, True: 0})


class Prefetcher:
    """`fetch(key, is_prefix)` asks S3; `store(path, attr)` caches what it found."""

    def __init__(
        self,
        pool: Executor,
        fetch: Callable[[str, bool], Attr | None],
        store: Callable[[str, Attr | None], None],
        ttl: float,
        max_dirs: int = 64,
    ) -> None:
        self._pool = pool
        self._fetch = fetch
        self._store = store
        self._ttl = ttl
        self._max_dirs = max_dirs
        self._dirs: OrderedDict[str, _Listed] = OrderedDict()
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def listed(self, path: str, todo: dict[str, tuple[str, bool]]) -> None:
        """Directory `path` was just listed; `todo` are the entries without attributes."""
        with self._lock:
            self._dirs.pop(path, None)
            if not todo or self._ttl <= 0:
                return
            self._dirs[path] = _Listed(time.monotonic() + self._ttl, dict(todo))
            while len(self._dirs) > self._max_dirs:
                self._dirs.popitem(last=False)

    def lookup(self, path: str) -> Attr | object | None:
        """The attributes of a listed entry (None: gone since), or NOT_LISTED."""
        with self._lock:
            pending = self._pending.get(path)
            if pending is None:
                pending = self._claim(path)
        if pending is None:
            return NOT_LISTED
        return pending.wait()

    def _claim(self, path: str) -> _Pending | None:
        """Under self._lock: start fetching `path` (and, past the threshold, its siblings
        of the same kind) if its directory was listed lately."""
        parent, name = posixpath.split(path)
        listed = self._dirs.get(parent)
        if listed is None:
            return None
        if time.monotonic() >= listed.expires:
            del self._dirs[parent]
            return None
        item = listed.todo.pop(name, None)
        if item is None:
            return None
        mine = self._start(path, *item)
        is_prefix = item[1]
        listed.lookups[is_prefix] += 1
        if listed.lookups[is_prefix] >= FAN_OUT_AFTER:
            for other in [n for n, (_k, p) in listed.todo.items() if p == is_prefix]:
                key, _ = listed.todo.pop(other)
                self._pool.submit(self._start(posixpath.join(parent, other), key, is_prefix).run)
        if not listed.todo:
            del self._dirs[parent]
        return mine

    def _start(self, path: str, key: str, is_prefix: bool) -> _Pending:
        """Under self._lock."""

        def done(p: _Pending) -> None:
            # Under the lock: `forget` either comes before (no caching) or after (and the
            # caller's own invalidation follows it).
            with self._lock:
                if p.error is None and not p.stale:
                    self._store(path, p.result)
                if self._pending.get(path) is p:
                    del self._pending[path]

        pending = _Pending(lambda: self._fetch(key, is_prefix), done)
        self._pending[path] = pending
        return pending

    def forget(self, path: str) -> None:
        """Our own change to `path`: what was listed or is being fetched may be stale.
        Call it before invalidating the stat cache."""
        parent, name = posixpath.split(path)
        with self._lock:
            listed = self._dirs.get(parent)
            if listed is not None:
                listed.todo.pop(name, None)
            pending = self._pending.pop(path, None)
            if pending is not None:
                pending.stale = True

    def forget_tree(self, path: str) -> None:
        """`path` and everything below it (directory renames and removals)."""
        below = path.rstrip("/") + "/"
        with self._lock:
            for p in [p for p in self._dirs if p == path or p.startswith(below)]:
                del self._dirs[p]
            for p in [p for p in self._pending if p == path or p.startswith(below)]:
                self._pending.pop(p).stale = True
        self.forget(path)


@dataclass
class _Walk:
    """A directory whose subdirectories a traversal may be about to read."""

    expires: float
    subdirs: list[str]  # paths, in listing order, not yet read nor fetched
    reads: int = 0


class ListingsAhead:
    """Subdirectory listings fetched in parallel once a traversal is seen.

    `listed(path, subdirs)` records a directory just read; `take(path)`, called by the
    readdir of `path`, returns a listing fetched ahead (waiting for it if in flight) or
    None (list it now). A listing fetched ahead is used by one readdir at most, within
    `ttl` seconds of being fetched: readdir shows what S3 held moments ago, as a listing
    made then would. `forget(dir)` drops what our own change to `dir` made stale.
    """

    def __init__(
        self,
        pool: Executor,
        list_dir: Callable[[str], Listing],
        ttl: float,
        ahead: int = 32,
        max_dirs: int = 64,
    ) -> None:
        self._pool = pool
        self._list_dir = list_dir
        self._ttl = ttl
        self._ahead = ahead
        self._max_dirs = max_dirs
        self._walks: OrderedDict[str, _Walk] = OrderedDict()
        # path → its listing (None: the LIST failed) and when it arrived
        self._fetched: dict[str, Future[tuple[Listing | None, float]]] = {}
        self._lock = threading.Lock()

    def listed(self, path: str, subdirs: list[str]) -> None:
        with self._lock:
            self._walks.pop(path, None)
            if len(subdirs) < 2 or self._ttl <= 0:
                return
            self._walks[path] = _Walk(time.monotonic() + self._ttl, list(subdirs))
            while len(self._walks) > self._max_dirs:
                self._walks.popitem(last=False)

    def take(self, path: str) -> Listing | None:
        with self._lock:
            self._note_read(path)
            fetched = self._fetched.pop(path, None)
        if fetched is None:
            return None
        listing, arrived = fetched.result()
        if listing is None or time.monotonic() - arrived > self._ttl:
            return None  # the caller lists anew (and reports what goes wrong then)
        return listing

    def _note_read(self, path: str) -> None:
        """Under self._lock: `path` is being read; the second read among one directory's
        subdirectories starts the listings of the rest (at most `ahead` in flight)."""
        now = time.monotonic()
        old = [p for p, f in self._fetched.items() if f.done() and now - f.result()[1] > self._ttl]
        for p in old:
            del self._fetched[p]  # fetched for a traversal that went elsewhere
        walk = self._walks.get(posixpath.dirname(path))
        if walk is None:
            return
        if now >= walk.expires:
            del self._walks[posixpath.dirname(path)]
            return
        if path not in walk.subdirs:
            return  # read before (or fetched ahead already): not a new step of a walk
        walk.subdirs.remove(path)
        walk.reads += 1
        if walk.reads < 2:
            return
        room = self._ahead - sum(1 for f in self._fetched.values() if not f.done())
        for sub in walk.subdirs[: max(room, 0)]:
            if sub not in self._fetched:
                self._fetched[sub] = self._start(sub)
        del walk.subdirs[: max(room, 0)]
        walk.expires = now + self._ttl

    def _start(self, path: str) -> Future[tuple[Listing | None, float]]:
        def fetch() -> tuple[Listing | None, float]:
            try:
                listing: Listing | None = self._list_dir(path)
            except Exception:
                listing = None
            return listing, time.monotonic()

        return self._pool.submit(fetch)

    def forget(self, path: str) -> None:
        """Our own change inside directory `path`: its listing fetched ahead is stale."""
        with self._lock:
            self._fetched.pop(path, None)

    def forget_tree(self, path: str) -> None:
        below = path.rstrip("/") + "/"
        with self._lock:
            for p in [p for p in self._fetched if p == path or p.startswith(below)]:
                del self._fetched[p]
            for p in [p for p in self._walks if p == path or p.startswith(below)]:
                del self._walks[p]

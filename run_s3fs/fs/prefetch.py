"""Attributes of listed entries, fetched when they are asked for, not when listed.

A listing gives names, kinds (a common prefix is a directory) and sizes, but not the
s3fs metadata (mode, owner, times): that takes a HEAD per object. `find` needs only the
names and kinds, so `readdir` answers from the listing alone. `ls -l` then asks for
every entry's attributes one after the other: on the second entry of a kind (file or
directory) looked up in a freshly listed directory, HEADs for all that kind's remaining
entries start in parallel, and each lookup waits for its own (or runs it first, if the
pool has not got to it yet). Every HEAD is made once, however many lookups wait on it.
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from run_s3fs.fs.layout import Attr

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

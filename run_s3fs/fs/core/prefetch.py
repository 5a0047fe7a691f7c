"""Requests made ahead of the kernel, where its access pattern shows what comes next.

Attributes of listed entries (`AttrsAhead`). A listing gives names, kinds (a common
prefix is a directory) and sizes, but not s3fs's metadata (mode, owner, times): that
takes a HEAD per object. `find` needs only names and kinds, so readdir answers from the
listing alone. `ls -l` then looks every entry up, one after the other: on the second
lookup of a kind (file or directory) in a freshly listed directory, HEADs for all that
kind's remaining entries are started, `max_in_flight` at a time, and each lookup waits
for its own (started at once if it is still in line). Every HEAD is made once, however
many lookups wait on it.

Listings ahead (`ListingsAhead`): `find`, `du` and `ls -R` read a directory's
subdirectories one after the other, a LIST each; on the second readdir among the
subdirectories of one directory, the listings of the next ones start in parallel, and
each readdir of the walk keeps that lead: `ahead` listings, or fewer if the walk is too
slow to read that many within the time a listing may serve (see ListingsAhead).

Both are asynchronous: the engine's requests are in flight without a thread each.
`Pending` and `Line` also queue the GETs of a file read all over (blocks.Backlog).
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from run_s3fs.fs.core.caches import Bounded, in_tree
from run_s3fs.fs.engine import Listing
from run_s3fs.fs.engine.futures import settle
from run_s3fs.fs.layout import Attr

T = TypeVar("T")

NOT_LISTED = object()  # nothing is known ahead about this path: look it up anew
FAN_OUT_AFTER = 2  # lookups of one kind in a listing before the rest are fetched


class Pending(Generic[T]):
    """One request that several callers may wait for; whoever comes first starts it."""

    def __init__(self, start: Callable[[], Future[T]]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._started = False
        self.future: Future[T] = Future()
        self.stale = False  # our own change since it started: do not cache the result

    @property
    def started(self) -> bool:
        return self._started

    def run(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        try:
            inner = self._start()
        except BaseException as e:
            self.future.set_exception(e)
            return
        inner.add_done_callback(lambda f: settle(self.future, f))

    def wait(self) -> T:
        self.run()  # still in line: start it now, for the caller who needs it
        return self.future.result()

    def cancel(self) -> bool:
        """Never start it, if nobody has yet (then True, and its future is cancelled)."""
        with self._lock:
            if self._started:
                return False
            self._started = True  # a Line passes it by
        self.future.cancel()
        return True


class Line:
    """Pending requests started at most `limit` at a time, in order."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._queue: deque[Pending] = deque()
        self._running = 0
        self._lock = threading.Lock()

    def add(self, pending: Pending) -> None:
        with self._lock:
            self._queue.append(pending)
        self._pump()

    def _pump(self) -> None:
        while True:
            with self._lock:
                if self._running >= self.limit or not self._queue:
                    return
                pending = self._queue.popleft()
                if pending.started:
                    continue  # a waiting caller started it out of line
                self._running += 1
            pending.future.add_done_callback(self._one_done)
            pending.run()

    def _one_done(self, _future: Future) -> None:
        with self._lock:
            self._running -= 1
        self._pump()


@dataclass
class _Listed:
    """A directory's entries whose attributes were not known when it was listed."""

    todo: dict[str, tuple[str, bool]]  # name → (key to HEAD, is a common prefix)
    lookups: dict[bool, int] = field(default_factory=lambda: {False: 0, True: 0})


class AttrsAhead:
    """`fetch(key, is_prefix)` starts a HEAD and gives the entry's attributes (None:
    gone); `store(path, attr)` caches what it found."""

    def __init__(
        self,
        fetch: Callable[[str, bool], Future[Attr | None]],
        store: Callable[[str, Attr | None], None],
        ttl: float,
        max_in_flight: int,
        max_dirs: int = 64,
    ) -> None:
        self._fetch = fetch
        self._store = store
        self._ttl = ttl
        self._dirs: Bounded[str, _Listed] = Bounded(max_dirs, ttl)
        self._pending: dict[str, Pending[Attr | None]] = {}
        self._line = Line(max_in_flight)
        self._lock = threading.Lock()

    def listed(self, path: str, todo: dict[str, tuple[str, bool]]) -> None:
        """Directory `path` was just listed; `todo` are the entries without attributes."""
        with self._lock:
            self._dirs.pop(path)
            if todo and self._ttl > 0:
                self._dirs.put(path, _Listed(dict(todo)))

    def lookup(self, path: str) -> Attr | object | None:
        """The attributes of a listed entry (None: gone since), or NOT_LISTED."""
        siblings: list[Pending[Attr | None]] = []
        with self._lock:
            pending = self._pending.get(path)
            if pending is None:
                pending = self._claim(path, siblings)
        # Started outside the lock: a request that fails at once completes (and takes
        # the lock to record it) in this very thread.
        for sibling in siblings:
            self._line.add(sibling)
        if pending is None:
            return NOT_LISTED
        return pending.wait()

    def _claim(
        self, path: str, siblings: list[Pending[Attr | None]]
    ) -> Pending[Attr | None] | None:
        """Under self._lock: a pending fetch of `path` if its directory was listed lately,
        and (past the threshold) of its siblings of the same kind, added to `siblings`."""
        parent, name = posixpath.split(path)
        listed = self._dirs.get(parent)
        if listed is None:
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
                siblings.append(self._start(posixpath.join(parent, other), key, is_prefix))
        if not listed.todo:
            self._dirs.pop(parent)
        return mine

    def _start(self, path: str, key: str, is_prefix: bool) -> Pending[Attr | None]:
        """Under self._lock."""
        pending: Pending[Attr | None] = Pending(lambda: self._fetch(key, is_prefix))

        def done(future: Future[Attr | None]) -> None:
            # Under the lock: `forget` either comes before (no caching) or after (and the
            # caller's own invalidation follows it).
            with self._lock:
                if future.exception() is None and not pending.stale:
                    self._store(path, future.result())
                if self._pending.get(path) is pending:
                    del self._pending[path]

        pending.future.add_done_callback(done)
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
        with self._lock:
            self._dirs.pop_tree(path)
            for p in [p for p in self._pending if in_tree(p, path)]:
                self._pending.pop(p).stale = True
        self.forget(path)


@dataclass
class _Walk:
    """A directory whose subdirectories a traversal may be about to read."""

    subdirs: list[str]  # paths, in listing order, not yet read nor fetched
    reads: int = 0
    ahead: set[str] = field(default_factory=set)  # fetched ahead, not yet read
    last_read: float | None = None
    pace: float | None = None  # seconds between its reads, smoothed


class ListingsAhead:
    """Subdirectory listings fetched in parallel once a traversal is seen.

    `listed(path, subdirs)` records a directory just read; `take(path)`, called by the
    readdir of `path`, returns a listing fetched ahead (waiting for it if in flight) or
    None (list it now). A listing fetched ahead is used by one readdir at most, within
    `ttl` seconds of being fetched: readdir shows what S3 held moments ago, as a listing
    made then would. A listing the walk comes to later is thrown away and asked again,
    so the lead is what the walk, at its pace so far, reads in half the ttl: on moto
    behind the S3-like link a walk took ~0.1 s a directory, and a lead of 32 made 560
    requests for 404. `forget(dir)` drops what our own change to `dir` made stale;
    `peek(path)` shows a listing fetched ahead without using it up (the lookup of the
    directory itself learns from it: Namespace.lookup).
    """

    def __init__(
        self,
        list_dir: Callable[[str], Future[Listing]],
        ttl: float,
        ahead: int = 32,
        max_dirs: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_dir = list_dir
        self._ttl = ttl
        self._ahead = ahead
        self._clock = clock
        self._walks: Bounded[str, _Walk] = Bounded(max_dirs, ttl)
        # path → its listing (None: the LIST failed) and when it arrived
        self._fetched: dict[str, Future[tuple[Listing | None, float]]] = {}
        self._lock = threading.Lock()

    def listed(self, path: str, subdirs: list[str]) -> None:
        with self._lock:
            self._walks.pop(path)
            if len(subdirs) >= 2 and self._ttl > 0:
                self._walks.put(path, _Walk(list(subdirs)))

    def take(self, path: str) -> Listing | None:
        with self._lock:
            self._note_read(path)
            fetched = self._fetched.pop(path, None)
        # None: the caller lists anew (and reports what goes wrong then)
        return self._fresh(fetched)

    def peek(self, path: str) -> Listing | None:
        """The listing of `path` fetched ahead (waiting for it if in flight), if it is
        fresh; it still serves the readdir to come."""
        with self._lock:
            fetched = self._fetched.get(path)
        return self._fresh(fetched)

    def _fresh(self, fetched: Future[tuple[Listing | None, float]] | None) -> Listing | None:
        """The listing a fetch ahead brought, if it came within the ttl (waits for it)."""
        if fetched is None:
            return None
        listing, arrived = fetched.result()
        return listing if self._clock() - arrived <= self._ttl else None

    def _note_read(self, path: str) -> None:
        """Under self._lock: `path` is being read; from the second read among one
        directory's subdirectories on, the next ones are fetched (see the class)."""
        now = self._clock()
        old = [p for p, f in self._fetched.items() if f.done() and now - f.result()[1] > self._ttl]
        for p in old:
            del self._fetched[p]  # fetched for a traversal that went elsewhere
        parent = posixpath.dirname(path)
        walk = self._walks.get(parent)
        if walk is None:
            return
        if path in walk.subdirs:
            walk.subdirs.remove(path)
        elif path in walk.ahead:
            walk.ahead.discard(path)
        else:
            return  # read before: not a new step of a walk
        if walk.last_read is not None:
            step = now - walk.last_read
            walk.pace = step if walk.pace is None else 0.7 * walk.pace + 0.3 * step
        walk.last_read = now
        walk.reads += 1
        if walk.reads < 2:
            return
        lead = self._ahead
        if walk.pace:
            lead = min(lead, max(2, int(self._ttl / 2 / walk.pace)))
        in_flight = sum(1 for f in self._fetched.values() if not f.done())
        room = max(min(lead - len(walk.ahead), self._ahead - in_flight), 0)
        for sub in walk.subdirs[:room]:
            if sub not in self._fetched:
                self._fetched[sub] = self._start(sub)
                walk.ahead.add(sub)
        del walk.subdirs[:room]
        self._walks.put(parent, walk)  # a fresh lifetime: the walk goes on

    def _start(self, path: str) -> Future[tuple[Listing | None, float]]:
        out: Future[tuple[Listing | None, float]] = Future()

        def done(f: Future[Listing]) -> None:
            listing = None if f.exception() is not None else f.result()
            out.set_result((listing, self._clock()))

        try:
            self._list_dir(path).add_done_callback(done)
        except Exception:
            out.set_result((None, self._clock()))
        return out

    def forget(self, path: str) -> None:
        """Our own change inside directory `path`: its listing fetched ahead is stale."""
        with self._lock:
            self._fetched.pop(path, None)

    def forget_tree(self, path: str) -> None:
        with self._lock:
            for p in [p for p in self._fetched if in_tree(p, path)]:
                del self._fetched[p]
            self._walks.pop_tree(path)

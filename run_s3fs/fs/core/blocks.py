"""What readers hold: blocks of an object on their way from S3 or arrived, and the
budgets that bound them, for a mount's readers together."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from run_s3fs.fs.core.prefetch import Line, Pending
from run_s3fs.fs.engine import Body


class Budget:
    """Bytes held by all readers of one mount (read-ahead in memory, or regions on disk)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self, size: int, needed: bool, room: int | None = None) -> bool:
        """Reserve `size` bytes; a block the reader needs now is always granted, others
        only within the limit (and within `room` in all, where the caller has less)."""
        with self._lock:
            most = self.limit if room is None else min(self.limit, room)
            if not needed and self._used + size > most:
                return False
            self._used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._used -= size

    @property
    def used(self) -> int:
        with self._lock:
            return self._used


class Backlog:
    """GETs nobody waits for yet (the rest of a file, regions.py), at most `most` in
    flight for all readers together and the rest queued in order (prefetch.Line). A
    link's connections share its bandwidth (and, on a small host, the CPU) evenly: a
    read's GETs sent beside sixteen of a region's arrive when those do, several times
    later than alone. A queued GET a read comes to wait for is sent at once (`hurry`),
    or the read's own range cut out of it and sent (regions.py). Sixteen in flight: a
    read-ahead window's GETs on an S3-like link (measured there: with eight, the
    regions filled so much slower that reads waited longer in all, 19 ms each against
    17 for sixteen or no bound; with sixteen the slowest of 64 reads waited 90-140 ms,
    not 120-240)."""

    def __init__(self, most: int = 16) -> None:
        self._line = Line(most)
        self._pending: dict[Future[Body], Pending[Body]] = {}  # queued or in flight
        self._lock = threading.Lock()  # a leaf: nothing is sent or called under it

    def add(self, send: Callable[[], Future[Body]]) -> Future[Body]:
        """What `send()` will bring, sent once fewer than `most` are in flight."""
        pending: Pending[Body] = Pending(send)
        with self._lock:
            self._pending[pending.future] = pending
        pending.future.add_done_callback(self._done)
        self._line.add(pending)
        return pending.future

    def hurry(self, out: Future[Body]) -> None:
        """Send `out`'s GET now, if it is still queued (outside the `most` in flight)."""
        pending = self._of(out)
        if pending is not None:
            pending.run()

    def drop(self, out: Future[Body]) -> bool:
        """Never send `out`'s GET, if it is still queued (then True, and it is cancelled)."""
        pending = self._of(out)
        return pending is not None and pending.cancel()

    @property
    def limit(self) -> int:
        return self._line.limit

    @limit.setter
    def limit(self, most: int) -> None:
        self._line.limit = max(1, most)

    @property
    def pending(self) -> int:
        """GETs queued or in flight."""
        with self._lock:
            return len(self._pending)

    def _of(self, out: Future[Body]) -> Pending[Body] | None:
        with self._lock:
            return self._pending.get(out)

    def _done(self, out: Future[Body]) -> None:
        with self._lock:
            self._pending.pop(out, None)


# The spool's files share the directory's filesystem, and a write that finds it full
# fails: kept bytes are only a faster read, so unless told (ensure_diskfree) they leave
# at least this much free, or a tenth of the filesystem if that is more.
MIN_FREE = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Disk:
    """Where a mount's readers keep what they fetch to keep (regions.py): nameless files
    in `directory` (the spool's: private, local), `budget.limit` bytes at most, fetched
    through one `backlog`, and never so many that the filesystem has less than
    `min_free` bytes free for the spool (None: MIN_FREE, or a tenth of it if more)."""

    directory: str
    budget: Budget
    backlog: Backlog = field(default_factory=Backlog)
    min_free: int | None = None

    def take(self, size: int) -> bool:
        """Reserve `size` bytes to keep, if the budget and the filesystem have room: what
        is reserved and not yet written counts as used (conservative: some of it is)."""
        try:
            fs = os.statvfs(self.directory)
        except OSError:
            return False
        if fs.f_files and fs.f_favail < 1:
            return False
        floor = self.min_free
        if floor is None:
            floor = max(MIN_FREE, fs.f_blocks * fs.f_frsize // 10)
        # Checked under the budget's lock, with the reservation: two readers never both
        # take the last room.
        return self.budget.take(size, needed=False, room=fs.f_bavail * fs.f_frsize - floor)

    def give(self, size: int) -> None:
        self.budget.give(size)


@dataclass(eq=False)
class Block:
    """Bytes [start, end) of one object, as one ranged GET brings them."""

    start: int
    end: int
    data: Future[Body]
    used: bool = False  # a read asked for it
    kept: bool = False  # bound for disk (regions.py), not memory

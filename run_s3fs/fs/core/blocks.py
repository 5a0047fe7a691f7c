"""What readers hold: blocks of an object on their way from S3 or arrived, and the
budgets that bound them, for a mount's readers together."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

from run_s3fs.fs.engine import Body


class Budget:
    """Bytes held by all readers of one mount (read-ahead in memory, or regions on disk)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self, size: int, needed: bool) -> bool:
        """Reserve `size` bytes; a block the reader needs now is always granted."""
        with self._lock:
            if not needed and self._used + size > self.limit:
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


@dataclass(frozen=True)
class Disk:
    """Where a mount's readers keep what they fetch to keep (regions.py): nameless files
    in `directory` (the spool's: private, local), `budget.limit` bytes at most."""

    directory: str
    budget: Budget


@dataclass(eq=False)
class Block:
    """Bytes [start, end) of one object, as one ranged GET brings them."""

    start: int
    end: int
    data: Future[Body]
    used: bool = False  # a read asked for it

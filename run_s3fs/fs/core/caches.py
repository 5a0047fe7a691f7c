"""One bounded map with a time-to-live per entry: the stat cache, listings, the objects
whose attributes are known by ETag, the ETags the kernel has cached pages of, and the
prefetchers' bookkeeping are all this, with their own bounds and lifetimes."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def in_tree(path: str, root: str) -> bool:
    """True if FUSE path `path` is `root` or lies below it."""
    if root == "/":
        return True
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


class Bounded(Generic[K, V]):
    """key → value, at most `max_entries` (least recently stored or used go first),
    each entry for `ttl` seconds (None: until pushed out). Thread-safe.

    Expired entries also go as they reach the front, not only when asked for: keys that
    are never asked for again (deleted or renamed names) would otherwise stay until the
    bound pushes them out (the soak's memory grew ~37 MiB/h that way)."""

    def __init__(self, max_entries: int, ttl: float | None = None) -> None:
        self.max_entries = max(1, max_entries)
        self.ttl = ttl
        self._entries: OrderedDict[K, tuple[float, float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, max_age: float | None = None, touch: bool = False) -> V | None:
        """The value, or None if absent, expired, or (with `max_age`) older than that."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored, expires, value = entry
            now = time.monotonic()
            if now >= expires:
                del self._entries[key]
                return None
            if max_age is not None and now - stored > max_age:
                return None
            if touch:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else ttl
        if ttl is not None and ttl <= 0:
            return
        now = time.monotonic()
        expires = math.inf if ttl is None else now + ttl
        with self._lock:
            self._entries[key] = (now, expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            while self._entries:
                oldest = next(iter(self._entries.values()))
                if oldest[1] > now:
                    break
                self._entries.popitem(last=False)

    def update(self, key: K, change: Callable[[V], V]) -> None:
        """Replace a present value with `change(value)`, keeping its age and lifetime."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = (entry[0], entry[1], change(entry[2]))

    def pop(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.pop(key, None)
            return None if entry is None else entry[2]

    def pop_tree(self, root: str) -> list[V]:
        """Drop every entry whose key is the FUSE path `root` or below it."""
        with self._lock:
            keys = [k for k in self._entries if in_tree(str(k), root)]
            return [self._entries.pop(k)[2] for k in keys]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

"""Stat and directory-listing caches, both with a time-to-live.

The stat cache maps a path to its attributes or to "does not exist" (a negative entry,
kept for a shorter time so a file another mount creates shows up soon). The listing
cache maps a directory to its entries. Our own writes invalidate what they change,
including the parent's listing; other mounts' writes are seen when entries expire.
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from run_s3fs.fs.layout import Attr

MISSING = object()  # cached "no such path"


class StatCache:
    def __init__(self, ttl: float, negative_ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max(1, max_entries)
        self._entries: OrderedDict[str, tuple[float, float, Attr | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, max_age: float | None = None) -> Attr | object | None:
        """The cached Attr, MISSING for a cached absence, or None if nothing (fresh) is
        known; with `max_age`, only what was learnt at most that many seconds ago."""
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                return None
            stored, expires, attr = entry
            now = time.monotonic()
            if now >= expires:
                del self._entries[path]
                return None
            if max_age is not None and now - stored > max_age:
                return None
            return MISSING if attr is None else attr

    def put(self, path: str, attr: Attr | None) -> None:
        ttl = self.ttl if attr is not None else self.negative_ttl
        if ttl <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._entries[path] = (now, now + ttl, attr)
            self._entries.move_to_end(path)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            # Expired entries go as they reach the front (oldest first), not only when
            # asked for: names that are never asked for again (deleted, renamed away,
            # a workload making new names) would otherwise pile up to max_entries (the
            # soak run's memory grew ~37 MiB/h that way).
            while self._entries:
                oldest = next(iter(self._entries.values()))
                if oldest[1] > now:
                    break
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def invalidate(self, path: str) -> None:
        with self._lock:
            self._entries.pop(path, None)

    def invalidate_tree(self, path: str) -> None:
        """`path` and everything below it (directory renames and removals)."""
        below = path.rstrip("/") + "/"
        with self._lock:
            for p in [p for p in self._entries if p == path or p.startswith(below)]:
                del self._entries[p]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class DirEntry:
    name: str
    is_dir: bool
    empty: bool = False  # a zero-byte object: maybe an old-style directory object


class ListingCache:
    """Directory path → its entries (names and whether each is a directory)."""

    def __init__(self, ttl: float, max_dirs: int = 1000) -> None:
        self.ttl = ttl
        self.max_dirs = max_dirs
        self._entries: OrderedDict[str, tuple[float, dict[str, DirEntry]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> dict[str, DirEntry] | None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                return None
            if time.monotonic() >= entry[0]:
                del self._entries[path]
                return None
            return entry[1]

    def put(self, path: str, entries: dict[str, DirEntry]) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[path] = (time.monotonic() + self.ttl, entries)
            self._entries.move_to_end(path)
            while len(self._entries) > self.max_dirs:
                self._entries.popitem(last=False)

    def invalidate(self, path: str) -> None:
        with self._lock:
            self._entries.pop(path, None)

    def update(self, path: str, entry: DirEntry, exists: bool) -> None:
        """Our own create/remove of `path`: patch the parent's cached listing, if any."""
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        with self._lock:
            cached = self._entries.get(parent)
            if cached is None:
                return
            entries = dict(cached[1])
            if exists:
                entries[entry.name] = entry
            else:
                entries.pop(entry.name, None)
            self._entries[parent] = (cached[0], entries)

    def invalidate_parent(self, path: str) -> None:
        self.invalidate(posixpath.dirname(path.rstrip("/")) or "/")

    def invalidate_tree(self, path: str) -> None:
        below = path.rstrip("/") + "/"
        with self._lock:
            for p in [p for p in self._entries if p == path or p.startswith(below)]:
                del self._entries[p]


class ObjectAttrCache:
    """Key → (ETag, Last-Modified second, Attr), no expiry, LRU-bounded.

    An object's headers change only with its ETag (content) or its Last-Modified (a
    metadata-replacing copy bumps it), so a listing entry carrying the same pair proves
    the cached attributes still hold: a re-listed directory needs no HEAD per entry.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(1, max_entries)
        self._entries: OrderedDict[str, tuple[str, int, Attr]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, etag: str, modified: int) -> Attr | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != etag or entry[1] != modified or not etag:
                return None
            self._entries.move_to_end(key)
            return entry[2]

    def put(self, key: str, etag: str, modified: int, attr: Attr) -> None:
        if not etag:
            return
        with self._lock:
            self._entries[key] = (etag, modified, attr)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

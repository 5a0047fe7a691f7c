"""A sequential reader's data: one GET from an offset to the end of the object, read by a
thread into a bounded buffer just ahead of the reader.

One streaming GET beats a series of ranged GETs wherever a request has a fixed cost
(on moto a ranged GET of a big object costs ~150 ms of server time; a plain GET streams
at ~1 GB/s), and it leaves the pacing to TCP: what the reader has not asked for yet
stays in the socket. The buffer holds at most `window` bytes ahead of the reader (the
window grows with what the reader has consumed, so a file opened to read a few bytes
pulls little) and, behind it, what the kernel has not asked for yet: it sends a
stream's reads from several threads, out of order by up to its read-ahead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from typing import Any

log = logging.getLogger("run_s3fs.fs.files")

MIB = 1024 * 1024
CHUNK = 1 * MIB  # one read of the response body
MIN_WINDOW = 4 * MIB
MAX_WINDOW = 32 * MIB
KEEP_BEHIND = 1 * MIB  # kept behind the furthest read once everything before it was read
MAX_BEHIND = 16 * MIB  # kept behind the furthest read at most, whatever was skipped


class StreamFailed(Exception):
    """The stream cannot give these bytes (a network error, or data no longer kept)."""


class Stream:
    def __init__(self, body: Any, start: int, size: int, what: str) -> None:
        self._body = body  # a file-like response body, positioned at `start`
        self._what = what
        self.size = size  # the object's size: the stream ends there
        self._chunks: deque[tuple[int, bytes]] = deque()  # (offset, data), in order
        self._kept = start  # offset of the first byte still held
        self.fetched = start  # offset of the first byte not yet received
        self._served = start  # end of the furthest read served
        self._frontier = start  # every byte before it has been read
        self._islands: dict[int, int] = {}  # reads served past the frontier: start → end
        self._wanted = start  # a waiting reader needs bytes up to here
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- the reader's side ------------------------------------------------------------

    def covers(self, offset: int) -> bool:
        """True if a read at `offset` belongs to this stream (held, or coming soon)."""
        with self._cond:
            return self._kept <= offset <= self.fetched + self._window()

    def read(self, offset: int, end: int) -> bytes:
        """Bytes [offset, end); waits for the thread to bring them. Raises StreamFailed."""
        end = min(end, self.size)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="s3-stream", daemon=True)
                self._thread.start()
            self._wanted = max(self._wanted, end)
            self._cond.notify_all()
            while self.fetched < end and self._error is None and not self._closed:
                self._cond.wait()
            if offset < self._kept or self.fetched < end:
                raise StreamFailed(f"{self._what}: {self._error or 'bytes no longer held'}")
            data = self._slice(offset, end)
            self._served = max(self._served, end)
            self._advance(offset, end)
            self._trim()
            self._cond.notify_all()
            return data

    def _slice(self, offset: int, end: int) -> bytes:
        parts = []
        for start, chunk in self._chunks:
            stop = start + len(chunk)
            if stop <= offset:
                continue
            if start >= end:
                break
            if start >= offset and stop <= end:
                parts.append(chunk)  # whole: no copy
            else:
                parts.append(chunk[max(offset - start, 0) : min(end, stop) - start])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _advance(self, offset: int, end: int) -> None:
        if offset > self._frontier:
            self._islands[offset] = max(self._islands.get(offset, 0), end)
            return
        self._frontier = max(self._frontier, end)
        while self._frontier in self._islands:
            self._frontier = max(self._frontier, self._islands.pop(self._frontier))
        for start in [s for s in self._islands if s < self._frontier]:
            self._frontier = max(self._frontier, self._islands.pop(start))

    def _trim(self) -> None:
        floor = max(min(self._served, self._frontier) - KEEP_BEHIND, self._served - MAX_BEHIND)
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= floor:
            start, chunk = self._chunks.popleft()
            self._kept = start + len(chunk)

    def _window(self) -> int:
        return min(MAX_WINDOW, max(MIN_WINDOW, 2 * (self._served - self._kept)))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._chunks.clear()
            self._cond.notify_all()
            running = self._thread is not None
        if not running:  # else the thread closes the body on its way out
            self._close_body()

    # --- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while (
                        not self._closed
                        and self.fetched < self.size
                        and self.fetched >= max(self._served + self._window(), self._wanted)
                    ):
                        self._cond.wait()
                    if self._closed or self.fetched >= self.size:
                        return
                data = self._body.read(min(CHUNK, self.size - self.fetched))
                if not data:
                    raise StreamFailed(f"{self._what}: the response ended early")
                with self._cond:
                    if self._closed:
                        return
                    self._chunks.append((self.fetched, data))
                    self.fetched += len(data)
                    self._cond.notify_all()
        except BaseException as e:
            log.info("%s: stream stopped: %s: %s", self._what, type(e).__name__, e)
            with self._cond:
                self._error = e
                self._cond.notify_all()
        finally:
            self._close_body()

    def _close_body(self) -> None:
        with contextlib.suppress(Exception):  # a broken connection: nothing to save
            self._body.close()

"""Reading an object that is not held locally: ranged GETs, in parallel ahead of a
sequential reader, only what is asked for on random reads.

On S3 one connection carries 50-100 MB/s and each request waits tens of milliseconds
for its first byte, so throughput comes from several ranged GETs in flight at once.
A file read through from its start (cat, cp) gets the whole window, `max_window`, from
its second read: files are mostly read that way, and a window grown a read at a time
spends round trips in small GETs while the reader waits. The window's GETs go out in
order, as many at once as the link is worth (engine.window_gets). A run of reads
within a file gets a window that starts at 2 MiB and doubles with each read, so a
short run costs little. A read elsewhere drops the blocks and fetches just its own
range.

The block size follows the link (engine.suggested_part): big enough that a block's
first-byte wait is a small part of its transfer, so servers with a high cost per
request get few large GETs, and a network gets eight at once (one connection carries
only so much: the throughput is the bytes in flight).

Reads of one file do not wait for each other: the kernel sends its read-ahead of a
file as several requests at once, and a random reader's next read must not queue
behind the kernel's read-ahead of its previous one. The plan of what to fetch is made
under the reader's lock; the wait for the bytes happens outside it.

Every GET is pinned to the ETag the file was opened at (If-Match): a reader never sees
bytes of two versions; a replaced object fails the read with ESTALE instead.

Memory: all readers together hold at most `Budget.limit` bytes of blocks (ahead of
and just behind the readers); past it, a reader fetches only what it is asked for.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections import deque
from concurrent.futures import Future

from run_s3fs.fs.core.blocks import Backlog, Block, Budget, Disk
from run_s3fs.fs.core.regions import Regions
from run_s3fs.fs.engine import Body, Engine, Piece, joined

log = logging.getLogger("run_s3fs.fs.read")

MIB = 1024 * 1024
MIN_BLOCK = 256 * 1024  # the least fetched for a block ahead (a read's own is exact)
# The kernel sends one stream's reads from several threads, a little out of order: a
# read this far past the previous one's end still continues it, and blocks this far
# behind the furthest read are kept for the stragglers.
SEQUENTIAL_SLACK = 4 * MIB
KEEP_BEHIND = 4 * MIB
# Read-ahead starts once a reader has gone this far in sequence: a random read of one
# MiB arrives as several kernel requests in sequence, and must not fetch ahead.
STREAK = 4 * MIB
# The kernel reads ahead of a reader by itself (read_ahead_kb: 1 MiB, or two reads where
# reads are cut short, fusebuf.read_ahead): a random
# 1 MiB read reaches us as up to 3 MiB in sequence. STREAK is past that.
FIRST_WINDOW = 2 * MIB
# After a read that starts a run, the kernel reads this much past it by itself
# (read_ahead_kb 1 MiB: two more 1 MiB requests once the first is answered).
KERNEL_AHEAD = 1 * MIB
# Where pipes hold no more than 1 MiB, reads are at most 1 MiB less 4 pages
# (fusebuf.read_size): a 1 MiB read arrives as that and its last 16 KiB, a moment later.
# A read that starts a run fetches up to the next MiB boundary when it is this close,
# so that its tail is not left to wait for the larger block fetched after it.
TAIL = 64 * 1024


class Reader:
    """One open file's reads from S3. Thread-safe; concurrent reads overlap."""

    def __init__(
        self,
        engine: Engine,
        key: str,
        etag: str,
        size: int,
        budget: Budget,
        max_window: int = 64 * MIB,
        disk: Disk | None = None,
    ) -> None:
        self.engine = engine
        self.key = key
        self.etag = etag
        self.size = size
        self.budget = budget
        self.max_window = max(max_window, MIN_BLOCK)
        # A file read all over at random: whole regions kept on disk, once worth it.
        self._regions = (
            Regions(engine, key, etag, size, disk, self.max_window)
            if disk is not None and disk.budget.limit > 0
            else None
        )
        self._blocks: deque[Block] = deque()  # contiguous, in order
        self._window = 0  # bytes to have requested ahead of the reader
        self._last_end = -1  # where the previous read ended (-1: no read yet)
        self._streak = 0  # bytes read in sequence up to _last_end
        self._run_start = 0  # where that sequence began
        self._lock = threading.Lock()  # the blocks and the counters; never held waiting
        # Whether the kernel reads past this file's random reads (it does, unless the
        # reader said POSIX_FADV_RANDOM): until one such block goes unread.
        self._follow = True
        self._followed: Block | None = None
        # A window's blocks go out in order, a few at a time (engine.window_gets): on
        # loopback a whole window's GETs at once share the server's CPU, and the first
        # block, which the reader waits for, came only when all did.
        self._ahead = Backlog(engine.window_gets())

    # --- the reader's side ------------------------------------------------------------

    def seed(self, data: bytes) -> None:
        """The object's first bytes, fetched with its headers at open."""
        with self._lock:
            if data and not self._blocks:
                done: Future[Body] = Future()
                done.set_result(Body.of(data))
                self.budget.take(len(data), needed=True)
                self._blocks.append(Block(0, len(data), done))

    def read(self, offset: int, size: int) -> bytes | memoryview:
        """The bytes at [offset, offset+size): a view into a block where one holds them
        all (no copy), else joined."""
        return joined(self.pieces(offset, size))

    def pieces(self, offset: int, size: int) -> list[Piece]:
        """The bytes at [offset, offset+size), as pieces of the blocks that hold them."""
        end = min(offset + size, self.size)
        if offset >= end:
            return [Piece(Body.of(b""), 0, 0)]
        with self._lock:
            blocks = self._plan(offset, end)
        if blocks is not None:
            try:
                return self._gather(blocks, offset, end)
            except OSError as e:
                if not self._off_disk(blocks, e):
                    raise
        body = self._alone(offset, end)
        return [Piece(body, 0, len(body))]

    def close(self) -> None:
        with self._lock:
            self._drop()
            if self._regions is not None:
                self._regions.close()

    # --- blocks -----------------------------------------------------------------------

    def _plan(self, offset: int, end: int) -> list[Block] | None:
        """The blocks that hold [offset, end), requested now where missing, and the
        window ahead; None for a straggler to be fetched alone."""
        sequential = self._last_end <= offset <= self._last_end + SEQUENTIAL_SLACK or (
            self._last_end < 0 and offset == 0
        )
        run_start = self._blocks[0].start if self._blocks else 0
        run_end = self._blocks[-1].end if self._blocks else 0
        regions = self._regions
        held = None if regions is None else regions.holding(offset, end)
        if held is not None and not (self._blocks and run_start <= offset and end <= run_end):
            self._count(offset, end, sequential)
            return held
        if self._blocks and run_start <= offset and end <= run_end:
            pass  # held (or on its way)
        elif self._blocks and run_start <= offset <= run_end + SEQUENTIAL_SLACK and sequential:
            pass  # just past what is held: the run is extended below
        elif self._blocks and offset < run_start and end > run_start - KEEP_BEHIND:
            # A straggler from behind the run (dropped already): fetch it alone, and
            # leave the run to the reader it belongs to. One that ends where the run
            # began is its first read, come late (the kernel sends its first two reads
            # of a file together, and they may arrive in either order).
            if offset < self._run_start <= end:
                self._streak += self._run_start - offset
                self._run_start = offset
            return None
        else:
            if self._followed is not None and not self._followed.used:
                self._follow = False  # nobody read what the last random read followed
            self._drop()
            self._window = 0
            held = None if regions is None or sequential else regions.missed(offset, end)
            if held is not None:
                self._count(offset, end, sequential)
                return held
        self._count(offset, end, sequential)
        costly = self.engine.costly_requests()
        # A run from the start of the file that goes on past the kernel's own read-ahead
        # is a file being read through (cat, cp): no random 1 MiB read looks like that.
        through = self._run_start == 0 and self._streak > KERNEL_AHEAD
        if self._streak >= STREAK or through or (costly and offset == 0):
            # (A server that charges per request gets the whole window from the first
            # read at the start: small GETs cost it most.) A window doubled from 2 MiB
            # on each read of a 64 MiB file read through made 37 GETs, 26 of them of
            # 1-2 MiB sent while the reader waited: 204-260 MB/s on the S3-like link
            # against 251-305 with the whole window at once, 32 MB/s on moto against 60.
            first = self.max_window if costly or through else FIRST_WINDOW
            self._window = min(self.max_window, max(2 * self._window, first))
        elif sequential and self._run_start == 0:
            # The kernel reads ahead of a file read from its start in steps that double
            # from 16 KiB to its read_ahead_kb and then a read_ahead_kb at a time, one
            # round trip each if we wait to be asked: the first two MiB are requested
            # with the first read (a reader that stops after a few bytes costs two GETs
            # of a MiB more), the window proper once the run goes past them.
            self._window = max(2 * KERNEL_AHEAD - end, 0)
        self._extend(offset, end, split=not sequential)
        blocks = [b for b in self._blocks if b.end > offset and b.start < end]
        for b in blocks:
            b.used = True
        self._trim(offset)
        return blocks

    def _count(self, offset: int, end: int, sequential: bool) -> None:
        """Where this read leaves the run of reads in sequence."""
        if sequential and self._last_end >= 0:
            self._streak += max(end - max(self._last_end, offset), 0)
        else:
            self._streak, self._run_start = end - offset, offset
        self._last_end = max(self._last_end, end) if sequential else end

    def _gather(self, blocks: list[Block], offset: int, end: int) -> list[Piece]:
        parts = []
        for block in blocks:
            self._ahead.hurry(block.data)  # still queued: the reader waits for it now
            try:
                data = block.data.result()
            except BaseException:
                self._forget(block)  # a failed block is not kept: the next read asks anew
                raise
            if len(data) < block.end - block.start and block.start + len(data) < end:
                self._forget(block)  # the object ended early: it changed under us
                raise OSError(errno.ESTALE, "the object changed while being read")
            start = max(offset - block.start, 0)
            parts.append(Piece(data, start, max(min(end - block.start, len(data)), start)))
        return parts

    def _off_disk(self, blocks: list[Block], error: OSError) -> bool:
        """Whether kept blocks failed for want of the disk, not of S3 (no answer from
        it, nor a version changed): the file's regions are then turned off, and the
        read goes on without them."""
        local = not getattr(error, "status", 0) and error.errno != errno.ESTALE
        if not (local and any(b.kept for b in blocks)):
            return False
        with self._lock:
            regions, self._regions = self._regions, None
            if regions is not None:
                regions.close()
        if regions is not None:
            log.warning("%s: read without keeping it on disk from now on: %s", self.key, error)
        return True

    def _forget(self, block: Block) -> None:
        with self._lock:
            if block in self._blocks:
                self._drop()
            if self._regions is not None:
                self._regions.forget(block)

    def _extend(self, offset: int, end: int, split: bool) -> None:
        """Request blocks up to `end` (needed now) and then up to the window ahead."""
        if split:
            boundary = -(-end // MIB) * MIB
            if boundary - end <= TAIL:
                end = min(self.size, boundary)
        upto = end
        if split and self._follow and self.engine.costly_requests():
            # Where each request costs the server much, the kernel's read-ahead of a
            # random read (below) comes in the same GET as the read itself.
            upto = min(self.size, end + 2 * KERNEL_AHEAD)
        if not self._blocks:
            self._need(offset, upto, split)
        if self._blocks[-1].end < end:
            self._need(self._blocks[-1].end, upto, split)
        if split:
            # What the kernel's own read-ahead asks for next: fetched along with the read,
            # not one round trip after it (an unaligned read needs its first page too).
            target = min(self.size, end + KERNEL_AHEAD) if self._follow else end
            part = max(end - offset, MIN_BLOCK)
            self._followed = None
        else:
            target = min(self.size, end + self._window)
            part = self.engine.suggested_part(self._window)
        while self._blocks[-1].end < target:
            start = self._blocks[-1].end
            # Window blocks end on multiples of their size, wherever the first read ended:
            # the first read's 2 MiB end at 2 MiB, and no later block sits a few KiB off
            # the boundaries of the ones before it.
            aligned = -(-(start + MIN_BLOCK) // part) * part
            stop = min(self.size, start + max(part, MIN_BLOCK) if split else aligned)
            block = self._fetch(start, stop, needed=False)
            if block is None:
                break  # the mount's read-ahead memory is in use: only what is asked
            self._blocks.append(block)
            if split:
                self._followed = block

    def _need(self, start: int, end: int, split: bool) -> None:
        """Blocks for [start, end), which a reader waits for. A read that starts a run
        (a random one) comes in a few parallel GETs where the link carries a GET's bytes
        slower than it answers (S3); one in sequence is soon served by the window."""
        n = self.engine.suggested_pieces(end - start) if split else 1
        step = -(-(end - start) // n)
        for piece in range(start, end, step):
            block = self._fetch(piece, min(piece + step, end), needed=True)
            assert block is not None  # what a read needs is always granted
            self._blocks.append(block)

    def _fetch(self, start: int, end: int, needed: bool) -> Block | None:
        if not self.budget.take(end - start, needed):
            return None
        if needed:
            data = self.engine.get_range_async(self.key, start, end - start, self.etag)
        else:
            self._ahead.limit = self.engine.window_gets()
            data = self._ahead.add(
                lambda: self.engine.get_range_async(self.key, start, end - start, self.etag)
            )
        return Block(start, end, data)

    def _alone(self, offset: int, end: int) -> Body:
        self.budget.take(end - offset, needed=True)
        try:
            return self.engine.get_range_async(self.key, offset, end - offset, self.etag).result()
        finally:
            self.budget.give(end - offset)

    def _trim(self, offset: int) -> None:
        while self._blocks and self._blocks[0].end <= offset - KEEP_BEHIND:
            self._release(self._blocks.popleft())

    def _drop(self) -> None:
        while self._blocks:
            self._release(self._blocks.popleft())

    def _release(self, block: Block) -> None:
        # An unfinished GET is left to finish on its own (its bytes are dropped then);
        # one still queued that no read has planned on is never sent.
        if not block.used:
            self._ahead.drop(block.data)
        self.budget.give(block.end - block.start)

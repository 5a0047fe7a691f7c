"""The regions of a file read all over at random, fetched whole and kept on disk while
the file is open.

A random read costs a round trip (on S3 some 20 ms before its first byte) however
little it reads. A reader that goes on reading all over one file pays that again and
again, where fetching the whole file once, with a read-ahead window's GETs in flight,
would have cost a few round trips' worth. Neither we nor the reader know how many reads
will follow, so the rule is the ski-rental one: pay by the read until what the reads
took adds up to what fetching the whole file would take, both priced by the same model
of the link (a read: its wait and its transfer in parallel pieces, engine.read_seconds;
the whole file: a wait and the rounds of its windows, first_byte_wait, fetch_seconds),
then fetch the whole file: the region of the read that tipped it first (its own range
first of all), the others queued behind it. A reader that stops early has paid at most
twice what it had to; one that goes on reads from disk, as from s3fs's cache. On a
quick local server a read is a fraction of a millisecond's wait and a millisecond's
transfer against a whole file's transfer, and this comes about only after hundreds of
reads; on a server that charges much per request (moto) it does after four or five.
(Fetching only the regions reads came to, as they came, left each region's fetch to
begin when a read was already waiting for it: on the S3-like moto link 92 ms a read
against 64 for the whole file, the same on the others.)

A region is as large as a read-ahead window (`max_window`), and its GETs are the
window's blocks (engine.suggested_part), begun with the read's own range, in parallel
pieces where one connection carries a GET's bytes slower than the link answers (S3),
else in the block that holds it (a server that charges per request). The rest of the
region goes through the mount's backlog (`Disk.backlog`, blocks.py), a bounded number
in flight; a later read that comes to a block still queued there has its own range cut
out and sent at once, so it never waits behind the region's other GETs. The regions of
all open files together take at most `Disk.budget` bytes (`read_cache_mb`), and leave
the spool's filesystem room for writes (`Disk.take`): a file larger than that has the
regions that fit, and past them a read fetches what it needs, as before. They go when
their file is closed or changes version. Where the disk fails them all the same (it
filled up meanwhile), the reader turns them off and fetches what it reads (reader.py):
kept bytes make reads faster, never an error.

Not thread-safe: the reader calls it under its own lock, and never waits in it.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import Future

from run_s3fs.fs.core.blocks import Block, Disk
from run_s3fs.fs.engine import Body, Engine

log = logging.getLogger("run_s3fs.fs.read")


class Regions:
    def __init__(
        self, engine: Engine, key: str, etag: str, size: int, disk: Disk, region: int
    ) -> None:
        self.engine = engine
        self.key = key
        self.etag = etag
        self.size = size
        self.disk = disk
        self.region = max(region, 1)
        self._held: dict[int, list[Block]] = {}  # region number: its blocks, in order
        self._paid = 0.0  # seconds the random reads have taken (by the link's figures)
        self._worth = False  # they add up to the whole file's fetch: fetch regions
        self._bought = False  # the whole file's regions are held or on their way

    def holding(self, offset: int, end: int) -> list[Block] | None:
        """The blocks that hold [offset, end), if every region it spans is held. A read
        waits for them, so those still queued in the backlog go now: cut to the read's
        own range (sent, the rest queued again), or, where each request costs the
        server much, sent whole."""
        numbers = range(offset // self.region, (end - 1) // self.region + 1)
        if any(n not in self._held for n in numbers):
            return None
        backlog = self.disk.backlog
        costly = self.engine.costly_requests()
        blocks: list[Block] = []
        for n in numbers:
            held = self._held[n]
            for i in reversed(range(len(held))):
                b = held[i]
                if b.end <= offset or b.start >= end:
                    continue
                if costly:
                    backlog.hurry(b.data)
                elif backlog.drop(b.data):
                    held[i : i + 1] = self._blocks(b.start, b.end, offset, end, b.end - b.start)
            blocks += [b for b in held if b.end > offset and b.start < end]
        return blocks

    def missed(self, offset: int, end: int) -> list[Block] | None:
        """A random read of [offset, end) that nothing holds: one more read paid for.
        The blocks of its regions, fetched now, once that is worth it and the disk has
        room; else None (the reader fetches what is asked)."""
        if not self._worth:
            paid = self.engine.read_seconds(end - offset)
            self._paid += paid
            whole = self.engine.first_byte_wait() + self.engine.fetch_seconds(
                self.size, self.region
            )
            self._worth = self._paid >= whole
            if not self._worth:
                return None
            log.debug(
                "%s: read all over (%.0f ms paid by the read, %.1f ms each, the whole"
                " file %.0f ms): regions of %d KiB",
                self.key,
                self._paid * 1e3,
                paid * 1e3,
                whole * 1e3,
                self.region // 1024,
            )
        first, last = offset // self.region, (end - 1) // self.region
        count = -(-self.size // self.region)
        # What was bought is the whole file: once, the rest of it queues behind the
        # read's regions, in order from there, as far as the disk allows.
        order = range(first, last + 1) if self._bought else range(first, first + count)
        for n in (n % count for n in order):
            start, stop = n * self.region, min(self.size, (n + 1) * self.region)
            if n in self._held:
                continue
            if not self.disk.take(stop - start):
                if first <= n <= last:
                    return None  # no room for the read's own: it fetches what it asks
                break
            self._held[n] = self._fetch(start, stop, offset, end)
        self._bought = True
        return self.holding(offset, end)

    def forget(self, block: Block) -> None:
        """Drop the region of a block that failed (the next read asks anew)."""
        for n, held in list(self._held.items()):
            if block in held:
                del self._held[n]
                self._drop(held)

    def close(self) -> None:
        for held in self._held.values():
            self._drop(held)
        self._held.clear()

    def _drop(self, held: list[Block]) -> None:
        # GETs still queued are not sent; those in flight finish on their own, and their
        # files go with them.
        for b in held:
            self.disk.backlog.drop(b.data)
        self.disk.give(held[-1].end - held[0].start)

    def _fetch(self, start: int, stop: int, offset: int, end: int) -> list[Block]:
        """The blocks of region [start, stop), those holding [offset, end) sent now."""
        return self._blocks(start, stop, offset, end, self.engine.suggested_part(self.region))

    def _blocks(self, start: int, stop: int, offset: int, end: int, part: int) -> list[Block]:
        """Blocks of `part` bytes for [start, stop); those holding [offset, end) sent now
        (in parallel pieces, as a random read's, where the link allows), the rest queued
        in the backlog."""
        cuts = set(range(start, stop, part)) | {stop}
        lo, hi = max(offset, start), min(end, stop)
        if hi > lo and not self.engine.costly_requests():
            n = self.engine.suggested_pieces(hi - lo)
            step = -(-(hi - lo) // n)
            cuts |= set(range(lo, hi, step)) | {hi}
        spans = list(itertools.pairwise(sorted(cuts)))
        data = {(s, e): self._get(s, e) for s, e in spans if e > offset and s < end}
        for s, e in spans:
            if (s, e) not in data:
                data[s, e] = self.disk.backlog.add(lambda s=s, e=e: self._get(s, e))
        return [Block(s, e, data[s, e], kept=True) for s, e in spans]

    def _get(self, start: int, stop: int) -> Future[Body]:
        return self.engine.get_range_async(
            self.key, start, stop - start, self.etag, spill=self.disk.directory
        )

"""The rule for a file read all over (run_s3fs.fs.core.regions): random reads pay a
round trip each until those add up to what the whole file's fetch would take; then a
miss fetches its whole region, the read's own range first. The link's figures come from
a stand-in here (the real engine's are tested in tests/integration/test_reader.py)."""

from __future__ import annotations

import itertools
import tempfile
from concurrent.futures import Future

from run_s3fs.fs.core.blocks import Backlog, Budget, Disk
from run_s3fs.fs.core.regions import Regions
from run_s3fs.fs.engine import Body

MIB = 1024 * 1024
# A real directory: whether the disk has room is asked of its filesystem (statvfs);
# nothing is written there (the fake link keeps the bytes).
SPILL = tempfile.gettempdir()


class Link:
    """What Regions asks of the engine, with the link's figures set by the test."""

    def __init__(self, wait: float, whole: float, costly: bool = False) -> None:
        self.wait, self.whole, self.costly = wait, whole, costly
        self.gets: list[tuple[int, int]] = []

    def first_byte_wait(self) -> float:
        return self.wait

    def read_seconds(self, size: int) -> float:
        return self.wait  # the stand-in's reads are all wait

    def fetch_seconds(self, size: int, window: int) -> float:
        return self.whole

    def costly_requests(self) -> bool:
        return self.costly

    def suggested_part(self, window: int) -> int:
        return 2 * MIB

    def suggested_pieces(self, size: int) -> int:
        return 4

    def get_range_async(
        self, key: str, start: int, length: int, etag: str = "", spill: str | None = None
    ) -> Future[Body]:
        assert spill == SPILL and etag == "E"
        self.gets.append((start, start + length))
        done: Future[Body] = Future()
        done.set_result(Body.of(b"\0" * length))
        return done


def regions(link: Link, disk: int = 64 * MIB, size: int = 32 * MIB) -> Regions:
    return Regions(link, "k", "E", size, Disk(SPILL, Budget(disk), min_free=0), 8 * MIB)  # type: ignore[arg-type]


def test_misses_pay_until_their_cost_adds_up_to_the_whole_fetch_then_the_file_comes():
    link = Link(wait=0.02, whole=0.1)  # the whole file: five round trips' worth
    r = regions(link)
    results = [r.missed(n * 3 * MIB, n * 3 * MIB + MIB) for n in range(6)]
    # Waits paid: 20, 40, ... ms against 20 + 100: the sixth miss is the first worth it.
    assert results[:5] == [None] * 5
    assert results[5] is not None
    assert link.gets[0] == (15 * MIB, 15 * MIB + MIB // 4)  # the read's own range first
    # then the rest of its region, then the rest of the file, from there on
    assert [s for s, _ in link.gets[4:7]] == [8 * MIB, 10 * MIB, 12 * MIB]
    assert link.gets[-1][0] < 8 * MIB
    spans = sorted(link.gets)
    assert spans[0][0] == 0 and spans[-1][1] == 32 * MIB
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # each byte once
    assert r.holding(0, 32 * MIB) is not None


def test_a_quick_link_never_comes_to_regions():
    link = Link(wait=0.0005, whole=0.2)  # a local server: the transfer is the cost
    r = regions(link)
    assert all(r.missed(n * MIB, n * MIB + MIB) is None for n in range(32))
    assert link.gets == []


def test_the_region_of_a_costly_server_comes_in_its_blocks_alone():
    # Where each GET costs the server much, the read waits for the block that holds it
    # rather than for extra GETs of its own.
    link = Link(wait=0.3, whole=0.3, costly=True)
    r = regions(link)
    assert r.missed(MIB, 2 * MIB) is None
    blocks = r.missed(9 * MIB + 5, 10 * MIB)
    assert blocks is not None and [(b.start, b.end) for b in blocks] == [(8 * MIB, 10 * MIB)]
    assert link.gets[0] == (8 * MIB, 10 * MIB)  # the read's block first, then the file's
    assert sorted(link.gets) == [(s * MIB, (s + 2) * MIB) for s in range(0, 32, 2)]


def test_regions_take_the_disk_budget_and_give_it_back():
    link = Link(wait=1.0, whole=0.0)  # worth it at once
    disk = Budget(16 * MIB)
    r = Regions(link, "k", "E", 32 * MIB, Disk(SPILL, disk, min_free=0), 8 * MIB)  # type: ignore[arg-type]
    assert r.missed(0, MIB) is not None
    assert r.missed(8 * MIB, 9 * MIB) is not None
    assert r.missed(16 * MIB, 17 * MIB) is None  # no room: the reader fetches its own
    assert disk.used == 16 * MIB
    held = r.holding(0, MIB)
    assert held is not None
    r.forget(held[0])  # a failed block: its region goes, and the next read asks anew
    assert disk.used == 8 * MIB and r.holding(0, MIB) is None
    r.close()
    assert disk.used == 0


def test_a_read_across_two_regions_gets_both():
    link = Link(wait=1.0, whole=0.0)
    r = regions(link)
    blocks = r.missed(8 * MIB - 100, 8 * MIB + 100)
    assert blocks is not None
    assert blocks[0].start < 8 * MIB <= blocks[-1].start
    assert r.holding(0, 16 * MIB) is not None


class Pending(Link):
    """A stand-in whose GETs stay in flight until the test lands them."""

    def __init__(self) -> None:
        super().__init__(wait=1.0, whole=0.0)  # worth it at once
        self.flight: dict[tuple[int, int], Future[Body]] = {}

    def get_range_async(
        self, key: str, start: int, length: int, etag: str = "", spill: str | None = None
    ) -> Future[Body]:
        self.gets.append((start, start + length))
        self.flight[start, start + length] = f = Future()
        return f

    def land(self, span: tuple[int, int]) -> None:
        self.flight.pop(span).set_result(Body.of(b"\0" * (span[1] - span[0])))


def test_the_backlog_keeps_at_most_its_bound_in_flight_and_sends_the_next_as_one_lands():
    link = Pending()
    backlog = Backlog(most=2)
    outs = [backlog.add(lambda n=n: link.get_range_async("k", n, 1)) for n in range(4)]
    assert link.gets == [(0, 1), (1, 2)] and backlog.pending == 4
    link.land((0, 1))
    assert link.gets[-1] == (2, 3) and outs[0].result().size == 1
    backlog.hurry(outs[3])  # a read waits for it: sent now, past the bound
    assert link.gets[-1] == (3, 4)
    assert backlog.drop(outs[2]) is False  # in flight already: it lands as it will
    link.land((1, 2))
    link.land((2, 3))
    link.land((3, 4))
    assert [o.result().size for o in outs] == [1, 1, 1, 1] and backlog.pending == 0


def test_a_dropped_get_is_never_sent():
    link = Pending()
    backlog = Backlog(most=1)
    backlog.add(lambda: link.get_range_async("k", 0, 1))
    queued = backlog.add(lambda: link.get_range_async("k", 1, 1))
    assert backlog.drop(queued) and queued.cancelled()
    link.land((0, 1))
    assert link.gets == [(0, 1)] and backlog.pending == 0


def test_a_read_that_comes_to_a_queued_block_has_its_own_range_cut_out_and_sent():
    link = Pending()
    disk = Disk(SPILL, Budget(64 * MIB), Backlog(most=1), min_free=0)
    r = Regions(link, "k", "E", 32 * MIB, disk, 8 * MIB)  # type: ignore[arg-type]
    assert r.missed(0, MIB) is not None  # sent: its own pieces, then one of the rest
    quarters = [(i * MIB // 4, (i + 1) * MIB // 4) for i in range(4)]
    assert link.gets == [*quarters, (MIB, 2 * MIB)]
    blocks = r.holding(5 * MIB, 6 * MIB)  # in the queued block [4, 6) MiB
    assert blocks is not None
    assert [(b.start, b.end) for b in blocks] == [
        (5 * MIB + i * MIB // 4, 5 * MIB + (i + 1) * MIB // 4) for i in range(4)
    ]
    assert link.gets[5:] == [(b.start, b.end) for b in blocks]  # sent now, past the bound
    # The rest of the cut block waits in the backlog with the others, and the region
    # still covers its 8 MiB once, block after block.
    held = r.holding(0, 8 * MIB)
    assert held is not None
    assert [(a.end, b.start) for a, b in itertools.pairwise(held) if a.end != b.start] == []
    assert (held[0].start, held[-1].end) == (0, 8 * MIB)
    r.close()  # what is still queued is never sent
    sent = len(link.gets)
    for span in list(link.flight):
        link.land(span)
    assert len(link.gets) == sent and disk.backlog.pending == 0

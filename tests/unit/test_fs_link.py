"""Block sizes for read-ahead (run_s3fs.fs.engine.crt.Link): big enough to hide each
GET's wait, small enough that the window keeps enough GETs in flight."""

from __future__ import annotations

from run_s3fs.fs.engine.crt import Link

MIB = 1024 * 1024


def link(ttfb: float, rate: float) -> Link:
    line = Link()
    line.ttfb, line.rate = ttfb, rate
    return line


def test_an_s3_like_link_gets_eight_gets_in_flight():
    s3 = link(0.02, 80e6)  # 4 x BDP = 6.4 MB: 8 MiB wanted
    assert s3.part(64 * MIB) == 8 * MIB
    assert s3.part(16 * MIB) == 2 * MIB  # an eighth of a smaller window
    assert s3.part(2 * MIB) == MIB  # never below 1 MiB


def test_a_fast_local_server_gets_few_large_gets():
    local = link(0.15, 2e9)  # a server that builds every answer slowly, then streams
    assert local.part(64 * MIB) == 32 * MIB  # two in flight are enough


def test_a_quick_server_is_not_asked_for_huge_blocks():
    quick = link(0.0005, 1e9)  # 4 x BDP = 2 MB
    assert quick.part(64 * MIB) == 2 * MIB


def test_observations_move_the_estimate():
    line = Link()
    for _ in range(30):
        line.observe(ttfb=0.001, transfer=0.001, size=MIB)
    assert line.ttfb < 0.002 and line.rate > 0.9e9
    line.observe(ttfb=5.0, transfer=1.0, size=1000)  # too small to tell: ignored
    assert line.ttfb < 0.002

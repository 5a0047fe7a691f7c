"""Block sizes for read-ahead (run_s3fs.fs.engine.crt.Link): big enough to hide each
GET's wait, small enough that the window keeps enough GETs in flight."""

from __future__ import annotations

from run_s3fs.fs.engine.crt import Link

MIB = 1024 * 1024


def link(ttfb: float, rate: float) -> Link:
    line = Link()
    line.ttfb, line.rate = ttfb, rate
    return line


def test_an_s3_like_link_gets_a_window_in_eight_blocks():
    # Sixteen GETs of 4 MiB fetched a 64 MiB window no sooner than eight of 8 MiB where
    # each connection carries 80 MB/s, and cost twice the requests.
    s3 = link(0.02, 80e6)
    assert s3.part(64 * MIB) == 8 * MIB
    assert s3.part(32 * MIB) == 4 * MIB  # an eighth of a smaller window
    assert s3.part(2 * MIB) == MIB  # never below 1 MiB


def test_a_local_server_gets_at_most_eight_in_flight_whatever_its_rate():
    # On loopback one connection's rate is the CPU's (16 MB/s measured while the client
    # and server share two cores): more GETs would only add to the work.
    assert link(0.0002, 16e6).part(64 * MIB) == 8 * MIB


def test_a_server_that_builds_each_answer_slowly_gets_few_large_gets():
    assert link(0.15, 2e9).part(64 * MIB) == 32 * MIB  # two in flight are enough
    assert link(0.32, 130e6).part(64 * MIB) == 32 * MIB  # moto, a 128 MiB object


def test_a_quick_server_gets_8_mib_blocks_all_the_same():
    quick = link(0.0005, 1e9)  # 4 x BDP = 2 MB, but GETs cost CPU at both ends
    assert quick.part(64 * MIB) == 8 * MIB
    assert quick.part(4 * MIB) == 2 * MIB  # a window still growing: half of it


def test_the_wait_and_the_rate_come_from_gets_of_several_sizes():
    line = Link()
    for size in (MIB, 4 * MIB, 256 * 1024, 8 * MIB, 2 * MIB):  # 5 ms + size at 500 MB/s
        line.observe(0.005 + size / 500e6, size)
    assert abs(line.ttfb - 0.005) < 0.0005
    assert abs(line.rate - 500e6) < 10e6
    line.observe(5.0, 1000)  # too small to tell: ignored
    assert abs(line.ttfb - 0.005) < 0.0005


def test_gets_of_one_size_credit_the_time_past_the_wait_to_the_transfer():
    line = Link()  # S3's 20 ms until measured otherwise
    for _ in range(6):
        line.observe(0.02 + MIB / 80e6, MIB)
    assert abs(line.ttfb - 0.02) < 1e-6
    assert abs(line.rate - 80e6) < 1e6


def test_a_read_waited_for_is_split_where_transfer_dominates():
    assert link(0.02, 80e6).pieces(1 * MIB) == 3  # S3: 20 ms wait, 13 ms transfer
    assert link(0.15, 1e9).pieces(1 * MIB) == 1  # the wait dominates: one GET
    assert link(0.002, 150e6).pieces(1 * MIB) == 4  # a quick server, a slow connection
    assert link(0.002, 150e6).pieces(300 * 1024) == 1  # never below 256 KiB a piece


def test_a_server_whose_heads_come_back_at_once_is_local_and_reads_are_not_split():
    # GETs side by side on loopback made rclone serve s3 look 2-8 ms away with 100 MB/s
    # connections; its HEADs took 0.6 ms. Four pieces a read took half as long again.
    local = link(0.004, 100e6)
    local.round_trip = lambda: 0.0006
    assert local.pieces(MIB) == 1
    assert Link(lambda: 0.0006).pieces(MIB) == 1  # before any GET, too
    far = link(0.004, 100e6)
    far.round_trip = lambda: 0.021  # an S3-like link: the GETs' figures decide
    assert far.pieces(MIB) == 4
    assert link(0.02, 80e6).pieces(MIB) == 3  # no HEAD timed (SSE-C): likewise


def test_one_slow_get_marks_a_server_that_builds_each_answer_slowly():
    line = Link()
    assert not line.busy
    line.observe(0.3, MIB)  # moto: a 1 MiB GET of a 256 MiB object takes 0.3 s
    assert line.busy and line.pieces(MIB) == 1
    quick = Link()
    quick.observe(0.035, MIB)  # S3-like: 20 ms, then 13 ms of transfer
    assert not quick.busy


def test_one_quick_get_of_another_size_does_not_make_every_connection_look_fast():
    # A random reader's 256 KiB pieces on an S3-like link, and one 1 MiB GET that came
    # in 29 ms: a line through them would say 234 MB/s a connection and stop splitting
    # reads (measured: the next reads waited behind 8 MiB blocks).
    line = Link()
    for i in range(31):
        line.observe(0.0205 + 256 * 1024 / 50e6 + (i % 3) * 0.001, 256 * 1024)
    line.observe(0.0294, 1032192)
    assert line.rate < 120e6  # one size cannot tell wait from transfer: about the prior
    assert line.pieces(MIB) >= 3
    assert line.part(128 * MIB) == 8 * MIB  # 16 MiB at 234 MB/s


def test_a_busy_server_gets_the_largest_blocks_whatever_its_rate_looks_like():
    # moto: the time past a GET's wait is its own work, so the "rate" is noise.
    assert link(0.3, 5e6).part(64 * MIB) == 32 * MIB
    assert link(0.3, 5e6).fetch_seconds(256 * MIB, 64 * MIB) < 4 * 0.3 + 0.01


def test_a_random_read_is_priced_as_its_wait_and_its_transfer_in_pieces():
    # What a random read costs, set against a whole file's fetch (regions.py).
    s3 = link(0.02, 80e6)
    assert abs(s3.transfer_seconds(MIB) - MIB / (80e6 * 3)) < 1e-6  # three pieces
    assert link(0.3, 5e6).transfer_seconds(MIB) == 0.0  # busy: the wait is all of it


def test_on_loopback_a_whole_file_comes_at_one_connections_rate():
    # The connections share the client's and the server's CPU: a random reader of a
    # local server must not take fetching the whole file for cheap (regions.py).
    assert abs(link(0.0005, 400e6).fetch_seconds(256 * MIB, 64 * MIB) - 256 * MIB / 400e6) < 1e-3
    s3 = link(0.02, 80e6).fetch_seconds(256 * MIB, 64 * MIB)  # 2 rounds of 16 x 8 MiB
    assert abs(s3 - 2 * (0.02 + 8 * MIB / 80e6)) < 1e-3

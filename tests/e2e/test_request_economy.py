"""Request economy of the bundled backend, mounted for real: a sequential read is a few
ranged GETs in flight together, `find` makes no HEAD per file, `ls -l` one HEAD per
entry and no more; reads that jump around stay correct."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, fuse_usable, start_mount
from engine_support import DIR_META, put_marker
from faultproxy import FaultProxy, FaultRates

from run_s3fs.fs.fusebuf import read_ahead, read_size

MIB = 1024 * 1024
BIG = os.urandom(40 * MIB + 4321)
FILE_META = {"mode": "33188", "uid": "0", "gid": "0", "mtime": "1700000000"}


@pytest.fixture(scope="module")
def env(s3_server, tmp_path_factory):
    reason = fuse_usable()
    if reason:
        pytest.skip(reason)
    pw = tmp_path_factory.mktemp("pw") / "passwd"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{ACCESS_KEY}:{SECRET_KEY}\n")
    client = s3_server.client(ACCESS_KEY, SECRET_KEY)
    bucket = f"perf-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="big.bin", Body=BIG, Metadata=FILE_META)
    for d in range(3):
        put_marker(client, bucket, f"tree/d{d}/")
        for i in range(15):
            client.put_object(
                Bucket=bucket, Key=f"tree/d{d}/f{i:02d}", Body=b"x" * i, Metadata=FILE_META
            )
    # A directory in the root, there before the mount (test_the_roots_directories_...).
    put_marker(client, bucket, "early/")
    client.put_object(Bucket=bucket, Key="early/f", Body=b"x", Metadata=FILE_META)
    proxy = FaultProxy(s3_server.url).start()
    mount = start_mount(
        "python",
        s3_server,
        bucket,
        tmp_path_factory.mktemp("m") / "mnt",
        pw,
        # These tests count the GETs of random reads paid for one by one; a reader that
        # goes on long enough buys the whole file instead (regions.py), which is how
        # many reads on this server the link's figures decide (its own tests are in
        # tests/integration/test_reader.py).
        [f"url={proxy.url}", "read_cache_mb=0"],
    )
    yield mount.path, proxy
    mount.stop()
    proxy.stop()


def requests_for(proxy: FaultProxy, action) -> tuple[int, object]:
    before = proxy.stats.requests
    proxy.seen.clear()
    result = action()
    return proxy.stats.requests - before, result


def test_a_sequential_read_is_a_few_ranged_gets_in_parallel(env):
    mnt, proxy = env
    os.stat(mnt / "big.bin")  # the lookup's HEAD, not counted below

    def read_all() -> bytes:
        with open(mnt / "big.bin", "rb", buffering=0) as f:
            return b"".join(iter(lambda: f.read(MIB), b""))

    proxy.stats.peak_in_flight = 0
    proxy.spans.clear()
    count, data = requests_for(proxy, read_all)
    assert data == BIG
    gets = [r for r in proxy.seen if r.startswith("GET ")]
    # The first 2 MiB with the first read (in up to four pieces where the link looks
    # slow), then from the second read the whole window (here the rest of the file) in
    # blocks of up to an eighth of it: 8-9 GETs seen, at most 16. A window doubled from
    # 2 MiB a read at a time made 31; a GET per kernel read would be 42.
    spans = " ".join(f"{a / MIB:.2f}-{(b + 1) / MIB:.2f}" for a, b in proxy.spans)
    assert 2 <= len(gets) <= 16 and count <= len(gets) + 1, f"{len(gets)} GETs (MiB): {spans}"
    assert proxy.stats.peak_in_flight >= 2


def test_random_reads_fetch_what_they_ask_for(env):
    mnt, proxy = env
    os.stat(mnt / "big.bin")
    fd = os.open(mnt / "big.bin", os.O_RDONLY)
    try:
        offsets = [31 * MIB + 17, 3 * MIB + 5, 17 * MIB, 9 * MIB + 1234, 25 * MIB]

        def reads() -> list[bytes]:
            return [os.pread(fd, MIB, off) for off in offsets]

        count, got = requests_for(proxy, reads)
    finally:
        os.close(fd)
    assert got == [BIG[off : off + MIB] for off in offsets]
    # A few GETs per read (in parallel where the link is slow per connection, one more
    # where the kernel splits one at a page boundary); nothing fetched ahead of a
    # reader that jumps around (the next test counts the bytes).
    assert count <= 5 * len(offsets) + 1, "\n".join(proxy.seen)


def test_random_reads_fetch_little_more_than_they_read(env):
    mnt, proxy = env
    os.stat(mnt / "big.bin")
    offsets = [29 * MIB + 11, 2 * MIB + 7, 15 * MIB, 36 * MIB + 999, 8 * MIB + 4096, 22 * MIB]
    fd = os.open(mnt / "big.bin", os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # earlier tests' pages: not cached
    try:
        proxy.ranges.clear()
        got = [os.pread(fd, MIB, off) for off in offsets]
    finally:
        os.close(fd)
    assert got == [BIG[off : off + MIB] for off in offsets]
    # The kernel reads up to 2 MiB past each read by itself (read_ahead_kb); nothing
    # more may be fetched ahead of a reader that jumps around.
    assert len(proxy.ranges) >= len(offsets)
    assert sum(proxy.ranges) <= 3 * MIB * len(offsets) + MIB, list(proxy.ranges)


def test_a_random_1_mib_read_is_fetched_once(env):
    """Where reads are cut at 1 MiB less 4 pages, a 1 MiB read is two kernel requests;
    they go out together (fusebuf.read_ahead), so the reader sees one read, not a read
    and a sequel to fetch ahead of."""
    mnt, proxy = env
    os.stat(mnt / "big.bin")
    offsets = [b * MIB for b in (33, 4, 19, 11, 27, 1, 38, 14)]
    fd = os.open(mnt / "big.bin", os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        proxy.ranges.clear()
        got = [os.pread(fd, MIB, off) for off in offsets]
    finally:
        os.close(fd)
    assert got == [BIG[off : off + MIB] for off in offsets]
    assert sum(proxy.ranges) <= 1.5 * MIB * len(offsets), list(proxy.ranges)


def test_reads_of_one_file_overlap(env):
    mnt, proxy = env
    os.stat(mnt / "big.bin")
    offsets = [3 * MIB, 13 * MIB + 5, 23 * MIB, 33 * MIB + 77]
    fd = os.open(mnt / "big.bin", os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    delay = 0.5
    proxy.set_rates(FaultRates(delay=1.0, delay_seconds=delay))  # every GET waits
    try:
        with ThreadPoolExecutor(len(offsets)) as pool:
            started = time.monotonic()
            got = list(pool.map(lambda off: os.pread(fd, MIB, off), offsets))
            took = time.monotonic() - started
    finally:
        proxy.set_rates(FaultRates())
        os.close(fd)
    assert got == [BIG[off : off + MIB] for off in offsets]
    # Each read needs a GET of its own; one after another they would take 4 delays.
    assert took < (len(offsets) - 0.5) * delay, took


def test_reads_that_jump_around_are_correct(env):
    mnt, _proxy = env
    fd = os.open(mnt / "big.bin", os.O_RDONLY)
    try:
        offsets = [5 * MIB + 3, 100, 20 * MIB, 20 * MIB + 4096, 3 * MIB, len(BIG) - 10, 0]
        for off in offsets:
            assert os.pread(fd, 70_000, off) == BIG[off : off + 70_000], off
        # then sequentially from the middle to the end
        pos, parts = 7 * MIB + 5, []
        while chunk := os.pread(fd, MIB, pos):
            parts.append(chunk)
            pos += len(chunk)
        assert b"".join(parts) == BIG[7 * MIB + 5 :]
    finally:
        os.close(fd)


def test_find_makes_no_head_per_file(env):
    mnt, proxy = env

    def find() -> list[str]:
        out = subprocess.run(["find", str(mnt / "tree")], capture_output=True, check=True)
        return out.stdout.decode().splitlines()

    count, lines = requests_for(proxy, find)
    assert len(lines) == 1 + 3 + 45
    # tree (an implicit directory, no `tree/` marker, that the root's listing showed):
    # HEAD tree, HEAD tree/ and a LIST of tree/ at once; then its LIST; per directory:
    # its marker's HEAD + LIST; and a HEAD of each directory's empty f00 (a zero-byte
    # object may be an old-style directory object). A HEAD per file would be 45 more.
    assert count <= 3 + 1 + 3 * 2 + 3, "\n".join(proxy.seen)


def test_ls_l_heads_each_entry_once(env):
    mnt, proxy = env
    d = mnt / "tree" / "d1"

    def ls() -> list[str]:
        out = subprocess.run(["ls", "-l", str(d)], capture_output=True, check=True)
        return out.stdout.decode().splitlines()

    count, lines = requests_for(proxy, ls)
    assert len(lines) == 16 and all(line.startswith("-rw-r--r--") for line in lines[1:])
    assert count <= 1 + 15 + 2, count  # LIST + a HEAD per entry (+ slack for a lookup)
    count, _ = requests_for(proxy, ls)
    assert count <= 2, count  # a fresh LIST; attributes of unchanged entries are kept


def test_readdir_types_come_from_the_listing(env):
    mnt, _proxy = env
    kinds = {e.name: e.is_dir(follow_symlinks=False) for e in os.scandir(mnt / "tree")}
    assert kinds == {"d0": True, "d1": True, "d2": True}
    (mnt / "tree" / "d0" / "link").symlink_to("f01")
    try:
        # exact once the entry's attributes are known (here: our own symlink)
        entry = next(e for e in os.scandir(mnt / "tree" / "d0") if e.name == "link")
        assert entry.is_symlink()
        assert Path(mnt / "tree" / "d0" / "link").read_bytes() == b"x"
    finally:
        (mnt / "tree" / "d0" / "link").unlink()


def test_kernel_read_ahead_is_raised_to_the_read_size(env):
    mnt, _proxy = env
    dev = os.stat(mnt).st_dev
    knob = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    if os.geteuid() != 0 or not os.access(knob, os.W_OK):
        pytest.skip("needs root and a writable /sys")
    # 1 MiB read requests (or 4 pages less, where a pipe holds no more), not 128 KiB.
    assert int(knob.read_text()) >= read_ahead(read_size()) // 1024 >= 1008
    # Where a 1 MiB read is cut in two, both of its requests fit one read-ahead.
    assert int(knob.read_text()) >= 1024 or int(knob.read_text()) >= 2 * read_size() // 1024


def test_a_listing_fetched_ahead_shows_our_own_later_changes(env):
    mnt, proxy = env
    tree = mnt / "tree"

    def names(d: str) -> list[str]:
        return sorted(e.name for e in os.scandir(tree / d))

    names("")  # the walk starts: tree is read, then its subdirectories
    names("d0")
    before = proxy.stats.requests
    names("d1")  # the second subdirectory read: d2's listing is fetched ahead
    assert proxy.stats.requests - before >= 1
    (tree / "d2" / "new").write_bytes(b"made after d2 was listed ahead")
    (tree / "d2" / "f03").unlink()
    try:
        listed = names("d2")
        assert "new" in listed and "f03" not in listed
        assert len(listed) == 15
    finally:
        (tree / "d2" / "new").unlink()
        (tree / "d2" / "f03").write_bytes(b"x" * 3)


def perf_bucket(s3_server) -> tuple[object, str]:
    client = s3_server.client(ACCESS_KEY, SECRET_KEY)
    names = [b["Name"] for b in client.list_buckets()["Buckets"]]
    return client, next(n for n in names if n.startswith("perf-"))


def test_a_new_name_in_a_small_directory_is_looked_up_in_one_round_trip(env, s3_server):
    mnt, proxy = env
    client, bucket = perf_bucket(s3_server)
    for key in ("small/old", "small/sub/f"):  # an implicit directory no one looked at yet
        client.put_object(Bucket=bucket, Key=key, Body=b"x", Metadata=FILE_META)
    os.stat(mnt / "small")  # its lookup lists it: 2 names
    proxy.set_rates(FaultRates(delay=1.0, delay_seconds=0.2))  # every request takes a while
    proxy.stats.peak_in_flight = 0
    try:
        _count, _ = requests_for(proxy, lambda: (mnt / "small" / "new").write_bytes(b"y"))
    finally:
        proxy.set_rates(FaultRates())
    asked = sorted(r.split(" ")[0] for r in proxy.seen if "new" in r)
    assert asked == ["GET", "HEAD", "PUT"], list(proxy.seen)  # no more requests than before
    assert proxy.stats.peak_in_flight >= 2  # the HEAD and the listing went together
    assert sorted(os.listdir(mnt / "small")) == ["new", "old", "sub"]


def test_a_subdirectory_its_parent_listed_is_looked_up_in_one_round_trip(env, s3_server):
    mnt, proxy = env
    client, bucket = perf_bucket(s3_server)
    for key in ("deep/", "deep/a/"):
        put_marker(client, bucket, key)
    client.put_object(Bucket=bucket, Key="deep/a/f", Body=b"x", Metadata=FILE_META)
    os.stat(mnt / "deep")  # its lookup lists it: `a` is a directory there
    proxy.set_rates(FaultRates(delay=1.0, delay_seconds=0.2))  # every request takes a while
    proxy.stats.peak_in_flight = 0
    try:
        _count, st = requests_for(proxy, lambda: os.stat(mnt / "deep" / "a"))
        peak = proxy.stats.peak_in_flight
        asked_a = sorted(r.split(" ")[0] for r in proxy.seen)
        _count, _ = requests_for(proxy, lambda: os.stat(mnt / "deep" / "a" / "f"))
        asked_f = [r.split(" ")[0] for r in proxy.seen]
    finally:
        proxy.set_rates(FaultRates())
    assert st.st_mode == int(DIR_META["mode"])  # the marker's attributes
    # Is it an object? its marker? keys below it? The same three questions as one after
    # the other, asked together.
    assert asked_a == ["GET", "HEAD", "HEAD"], asked_a
    assert peak >= 3
    assert asked_f == ["HEAD"]  # the file its listing showed: one HEAD, no listing


def test_the_roots_directories_are_looked_up_in_one_round_trip_from_the_start(env):
    """Nothing has listed the root when a mount begins, but the bucket check before it
    did: that listing says `early` is a directory, so its first lookup asks all three
    questions at once, not a HEAD of `early` first and the rest once it is answered."""
    mnt, proxy = env
    proxy.set_rates(FaultRates(delay=1.0, delay_seconds=0.2))
    proxy.stats.peak_in_flight = 0
    try:
        _count, st = requests_for(proxy, lambda: os.stat(mnt / "early"))
        peak = proxy.stats.peak_in_flight
    finally:
        proxy.set_rates(FaultRates())
    assert st.st_mode == int(DIR_META["mode"])
    assert sorted(r.split(" ")[0] for r in proxy.seen) == ["GET", "HEAD", "HEAD"]
    assert peak >= 3, list(proxy.seen)


def fill_large_dir(client, bucket: str, directory: str) -> None:
    """201 empty files: more than a lookup's one page of 200 keys, so no hint."""
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: client.put_object(Bucket=bucket, Key=f"{directory}/f{i:03d}", Body=b""),
                range(201),
            )
        )


def test_a_large_directory_is_not_listed_whole_by_a_lookup(env, s3_server):
    mnt, proxy = env
    client, bucket = perf_bucket(s3_server)
    fill_large_dir(client, bucket, "large")
    requests_for(proxy, lambda: (mnt / "large" / "new").write_bytes(b"z"))
    # One page of 200 keys looked the directory up: it could not hold all of it.
    assert any("prefix=large%2F" in r and "max-keys=200" in r for r in proxy.seen)
    asked = sorted(r.split(" ")[0] for r in proxy.seen if "new" in r)
    assert asked == ["GET", "HEAD", "PUT"], list(proxy.seen)


def test_new_names_one_after_the_other_in_a_large_directory_take_one_round_trip(env, s3_server):
    mnt, proxy = env
    client, bucket = perf_bucket(s3_server)
    fill_large_dir(client, bucket, "uploads")
    for name in ("n1", "n2"):  # too large for a hint: these two are asked one after the other
        (mnt / "uploads" / name).write_bytes(b"1")
    proxy.set_rates(FaultRates(delay=1.0, delay_seconds=0.2))
    proxy.stats.peak_in_flight = 0
    try:
        requests_for(proxy, lambda: (mnt / "uploads" / "n3").write_bytes(b"3"))
    finally:
        proxy.set_rates(FaultRates())
    asked = sorted(r.split(" ")[0] for r in proxy.seen if "n3" in r)
    assert asked == ["GET", "HEAD", "PUT"], list(proxy.seen)  # no more requests than before
    assert proxy.stats.peak_in_flight >= 2  # the HEAD and the listing went together
    assert (mnt / "uploads" / "f007").stat().st_size == 0  # files there are found as before
    assert (mnt / "uploads" / "n3").read_bytes() == b"3"

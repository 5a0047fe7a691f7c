"""The disk a file read all over is kept on (core/regions.py, in the spool's tmpdir):
kept bytes make reads faster and are never an error, nor take the room the spool's
writers need. Real tmpfs mounts as that disk; the moto server behind a proxy that makes
each answer wait, as a network does (so a few random reads are worth the whole file)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, start_mount
from faultproxy import FaultProxy, FaultRates

from run_s3fs.fs.core.blocks import Budget, Disk
from run_s3fs.fs.core.reader import Reader
from run_s3fs.fs.credentials import Credentials
from run_s3fs.fs.engine import EngineSettings, open_engine

MIB = 1024 * 1024
DATA = os.urandom(24 * MIB + 777)


@pytest.fixture
def slow_link(s3_server):
    proxy = FaultProxy(s3_server.url).start()
    proxy.set_rates(FaultRates(delay=1.0, delay_seconds=0.05))
    yield proxy
    proxy.stop()


def used(path: Path) -> int:
    fs = os.statvfs(path)
    return (fs.f_blocks - fs.f_bfree) * fs.f_frsize


def test_kept_bytes_leave_the_spool_room(tmpfs):
    where = tmpfs("keep", "size=64m")
    disk = Disk(str(where), Budget(1 << 40), min_free=4 * MIB)  # ensure_diskfree=4
    assert disk.take(8 * MIB)
    assert not disk.take(54 * MIB)  # 64 - 8 taken - 54 leaves 2 MiB, under 4
    disk.give(8 * MIB)
    assert disk.take(54 * MIB)  # 10 MiB left
    disk.give(54 * MIB)
    (where / "spooled").write_bytes(b"\0" * (40 * MIB))  # a writer's spool file
    assert not disk.take(21 * MIB)
    assert disk.take(16 * MIB)
    disk.give(16 * MIB)
    assert not Disk(str(where), Budget(8 * MIB), min_free=0).take(9 * MIB)  # read_cache_mb
    assert not Disk(str(where / "gone"), Budget(1 << 40), min_free=0).take(MIB)
    # Untold, they leave 1 GiB free, or a tenth of the filesystem where that is more.
    assert not Disk(str(where), Budget(1 << 40)).take(MIB)
    large = tmpfs("large", "size=20g")  # a limit: tmpfs takes memory only as it fills
    disk = Disk(str(large), Budget(1 << 40))
    assert disk.take(17 * 1024 * MIB)
    assert not disk.take(1536 * MIB)  # 1.5 GiB left: under 2 (a tenth)
    assert disk.take(512 * MIB)


def test_kept_blocks_the_disk_cannot_hold_are_read_without_it(
    s3_server, s3, bucket, slow_link, tmpfs
):
    """A disk that passed the check and then fails the region's files (here: out of
    inodes after the first) turns the file's regions off; its reads go on, all correct."""
    etag = s3.put_object(Bucket=bucket, Key="obj", Body=DATA)["ETag"]
    where = tmpfs("keep", "size=64m,nr_inodes=3")
    settings = EngineSettings(bucket=bucket, url=slow_link.url, region="us-east-1", path_style=True)
    engine = open_engine(settings, Credentials(ACCESS_KEY, SECRET_KEY))
    disk = Disk(str(where), Budget(64 * MIB), min_free=0)
    reader = Reader(engine, "obj", etag, len(DATA), Budget(64 * MIB), 8 * MIB, disk)
    try:
        engine.head("obj")  # the link's round trip, as a lookup would show it
        offsets = [b * MIB for b in (20, 2, 11, 5, 17, 8, 23, 14, 1, 19, 6, 12, 3, 21, 9)]
        for off in offsets:
            assert reader.read(off, MIB) == DATA[off : off + MIB], off
        assert reader._regions is None  # they were bought, failed, and are off
    finally:
        reader.close()
        engine.close()
    assert disk.budget.used == 0


@pytest.fixture
def read_all_over(s3_server, s3, bucket, slow_link, session_passwd, tmp_path, fuse_ok):
    """Mounts with a spool directory and options, and reads a 40 MiB file at 40 random
    offsets (all checked); then `during()` runs with the file still open."""
    big = os.urandom(40 * MIB)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=big)

    def run(spool: Path, options: list[str], during) -> None:
        mount = start_mount(
            "python",
            s3_server,
            bucket,
            tmp_path / "mnt",
            session_passwd,
            [f"url={slow_link.url}", f"tmpdir={spool}", *options],
        )
        try:
            rng = random.Random(8)
            fd = os.open(mount.path / "big.bin", os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                for _ in range(40):
                    off = rng.randrange(0, len(big) - MIB)
                    assert os.pread(fd, MIB, off) == big[off : off + MIB], off
                during(mount.path)
            finally:
                os.close(fd)
        finally:
            assert mount.stop() == 0
        assert "Traceback" not in mount.log.read_text()

    return run


def test_a_file_read_all_over_leaves_a_small_spool_to_its_writers(read_all_over, s3, bucket, tmpfs):
    """A tmpdir smaller than the file: the random reader's reads are all correct and
    take none of it, and a writer beside it spools and uploads its file."""
    spool = tmpfs("spool", "size=32m")
    payload = os.urandom(24 * MIB)

    def write_beside(mnt: Path) -> None:
        assert used(spool) < MIB
        (mnt / "written.bin").write_bytes(payload)

    read_all_over(spool, [], write_beside)
    assert s3.get_object(Bucket=bucket, Key="written.bin")["Body"].read() == payload


def test_random_reads_with_room_keep_the_file_on_disk(read_all_over, tmpfs):
    """The same reader where the file fits (ensure_diskfree=0): it is kept on the
    spool's disk while open, and gone when it closes."""
    spool = tmpfs("spool", "size=256m")
    seen: list[int] = []
    read_all_over(
        spool, ["read_cache_mb=64", "ensure_diskfree=0"], lambda _mnt: seen.append(used(spool))
    )
    assert seen[0] >= 8 * MIB
    assert used(spool) < MIB

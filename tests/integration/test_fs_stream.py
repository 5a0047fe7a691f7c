"""Streamed uploads (core/stream.py) through the core, against the moto server: a large
new file goes up in parts while it is written, and whatever the stream cannot carry
falls back to the whole file at close, with the same content, metadata and errors."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time

import pytest
from engine_support import make_core
from faultproxy import FaultRates

from run_s3fs.fs.core.filesystem import Filesystem
from run_s3fs.fs.options import Options

MIB = 1024 * 1024
PART = 5 * MIB  # make_engine's parts; streaming starts at its 8 MiB threshold


@pytest.fixture
def core(s3_server, bucket, tmp_path):
    fs = make_core(s3_server.url, bucket, str(tmp_path))
    yield fs
    fs.engine.close()


def uploads(s3, bucket: str) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def parts_sent(s3, bucket: str, key: str, expect: int) -> int:
    """How many parts of `key`'s upload are in S3, once `expect` are (parts go up in the
    background), or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        found = [u for u in uploads(s3, bucket) if u["Key"] == key]
        listed = (
            s3.list_parts(Bucket=bucket, Key=key, UploadId=found[0]["UploadId"]).get("Parts", [])
            if found
            else []
        )
        if len(listed) >= expect or time.monotonic() > deadline:
            return len(listed)
        time.sleep(0.05)


def write_in_mib(core: Filesystem, fh: int, data: bytes, start: int = 0) -> None:
    for off in range(start, len(data), MIB):
        core.write(fh, data[off : off + MIB], off)


def body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_a_large_new_file_is_in_parts_in_s3_before_close(core, s3, bucket):
    data = os.urandom(22 * MIB + 123)
    fh = core.create("/big", 0o640, os.O_WRONLY, 7, 8)
    write_in_mib(core, fh, data)
    # Four whole parts were written: they are up already; nothing is visible yet.
    assert parts_sent(s3, bucket, "big", 4) == 4
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    during = core.getattr("/big", fh)
    core.flush(fh)
    core.release(fh)
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ETag"].strip('"').endswith("-5")  # 4 parts streamed + the tail
    assert body(s3, bucket, "big") == data
    assert uploads(s3, bucket) == []
    meta = head["Metadata"]
    assert (meta["mode"], meta["uid"], meta["gid"]) == (str(stat.S_IFREG | 0o640), "7", "8")
    # The times shown while writing are the ones S3 keeps (fixed when the stream began).
    after = core.getattr("/big")
    assert after.mtime_ns == during.mtime_ns
    assert meta["mtime"] == f"{during.mtime_ns // 10**9}.{during.mtime_ns % 10**9:09d}"


def test_an_empty_file_opened_for_writing_streams_too(core, s3, bucket):
    core.release(core.create("/empty", 0o644, os.O_WRONLY, 0, 0))  # `touch`
    fh = core.open("/empty", os.O_WRONLY).fh
    data = os.urandom(11 * MIB)
    write_in_mib(core, fh, data)
    assert parts_sent(s3, bucket, "empty", 2) == 2
    core.release(fh)
    assert body(s3, bucket, "empty") == data


def test_a_file_of_16_mib_goes_up_in_parts_with_the_default_options(
    s3_server, s3, bucket, tmp_path
):
    # One connection carries only so much (S3: 50-100 MB/s): from 10 MiB, a file's parts
    # go up together (s3fs's default threshold, 25 MiB, sent this one as one PUT).
    defaults = Options(bucket=bucket, prefix="", mountpoint="/unused")
    fs = make_core(
        s3_server.url,
        bucket,
        str(tmp_path),
        multipart_threshold=defaults.multipart_threshold,
        part_size=defaults.multipart_size,
        parallel_count=defaults.parallel_count,
    )
    try:
        data = os.urandom(16 * MIB)
        fh = fs.create("/mid", 0o644, os.O_WRONLY, 0, 0)
        write_in_mib(fs, fh, data)
        assert parts_sent(s3, bucket, "mid", 1) >= 1  # before close
        fs.release(fh)
        assert s3.head_object(Bucket=bucket, Key="mid")["ETag"].strip('"').endswith("-3")
        assert body(s3, bucket, "mid") == data
    finally:
        fs.engine.close()


def test_a_file_below_the_threshold_is_one_put_at_close(core, s3, bucket):
    data = os.urandom(7 * MIB)
    fh = core.create("/small", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(core, fh, data)
    assert uploads(s3, bucket) == []
    core.release(fh)
    assert "-" not in s3.head_object(Bucket=bucket, Key="small")["ETag"]
    assert body(s3, bucket, "small") == data


def test_a_write_into_a_part_already_sent_falls_back_to_the_whole_file(core, s3, bucket):
    data = bytearray(os.urandom(18 * MIB))
    fh = core.create("/f", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(core, fh, bytes(data))
    assert parts_sent(s3, bucket, "f", 3) == 3
    data[100:104] = b"HEAD"
    core.write(fh, b"HEAD", 100)  # a header written last, as some formats do
    assert uploads(s3, bucket) == []  # the stream was aborted at once
    core.release(fh)
    assert body(s3, bucket, "f") == bytes(data)
    assert uploads(s3, bucket) == []


def test_a_truncate_below_what_was_sent_falls_back(core, s3, bucket):
    data = os.urandom(18 * MIB)
    fh = core.create("/t", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(core, fh, data)
    assert parts_sent(s3, bucket, "t", 3) == 3
    core.truncate("/t", 3 * MIB)
    core.write(fh, b"end", 3 * MIB)
    core.release(fh)
    assert body(s3, bucket, "t") == data[: 3 * MIB] + b"end"
    assert uploads(s3, bucket) == []


def test_a_chmod_while_streaming_is_kept(core, s3, bucket):
    data = os.urandom(12 * MIB)
    fh = core.create("/m", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(core, fh, data)
    assert parts_sent(s3, bucket, "m", 2) == 2
    core.chmod("/m", 0o600)
    core.release(fh)
    head = s3.head_object(Bucket=bucket, Key="m")
    assert head["Metadata"]["mode"] == str(stat.S_IFREG | 0o600)
    assert body(s3, bucket, "m") == data
    assert uploads(s3, bucket) == []


def test_an_unlink_while_streaming_leaves_nothing(core, s3, bucket):
    fh = core.create("/gone", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(core, fh, os.urandom(12 * MIB))
    assert parts_sent(s3, bucket, "gone", 2) == 2
    core.unlink("/gone")
    write_in_mib(core, fh, os.urandom(12 * MIB), start=12 * MIB)  # still writable (POSIX)
    core.release(fh)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert uploads(s3, bucket) == []


def test_an_fsync_makes_the_object_and_later_writes_go_at_close(core, s3, bucket):
    data = os.urandom(16 * MIB)
    fh = core.create("/s", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(core, fh, data[: 10 * MIB])
    core.fsync(fh)
    assert body(s3, bucket, "s") == data[: 10 * MIB]
    write_in_mib(core, fh, data, start=10 * MIB)
    core.release(fh)
    assert body(s3, bucket, "s") == data
    assert uploads(s3, bucket) == []


def test_a_shell_redirect_flushed_empty_first_still_streams(core, s3, bucket):
    fh = core.create("/r", 0o644, os.O_WRONLY, 0, 0)
    dup = core.open("/r", os.O_WRONLY).fh
    core.flush(fh)  # `cmd > file`: the shell closes its own descriptor first
    core.release(fh)
    data = os.urandom(11 * MIB)
    write_in_mib(core, dup, data)
    assert parts_sent(s3, bucket, "r", 2) == 2
    core.release(dup)
    assert body(s3, bucket, "r") == data


def test_a_failed_part_falls_back_to_the_whole_file_at_close(proxied, s3, bucket):
    proxy, fs = proxied
    data = os.urandom(20 * MIB)
    fh = fs.create("/p", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(fs, fh, data[: 10 * MIB])
    assert parts_sent(s3, bucket, "p", 2) == 2
    proxy.set_rates(FaultRates(error500=1.0))
    write_in_mib(fs, fh, data[: 16 * MIB], start=10 * MIB)  # a part fails: no error
    proxy.set_rates(FaultRates())
    write_in_mib(fs, fh, data, start=16 * MIB)
    fs.flush(fh)
    fs.release(fh)
    assert body(s3, bucket, "p") == data
    assert uploads(s3, bucket) == []


def test_a_stream_and_its_fallback_failing_is_eio_and_the_data_stays(proxied, s3, bucket, tmp_path):
    proxy, fs = proxied
    data = os.urandom(12 * MIB)
    fh = fs.create("/e", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(fs, fh, data)
    assert parts_sent(s3, bucket, "e", 2) == 2
    proxy.set_rates(FaultRates(error500=1.0))
    with pytest.raises(OSError) as info:
        fs.flush(fh)
    assert info.value.errno == errno.EIO
    assert [p.stat().st_size for p in (tmp_path / "unsaved").iterdir()] == [len(data)]
    proxy.set_rates(FaultRates())
    fs.flush(fh)  # the retry uploads the whole file
    fs.release(fh)
    assert body(s3, bucket, "e") == data
    assert list((tmp_path / "unsaved").iterdir()) == []


def test_the_writer_goes_on_while_the_upload_is_created(proxied, s3, bucket):
    # The create is a round trip: the write that begins the stream must not wait for it
    # (on an S3-like link that was 20-30 ms of every large write's time, under the lock).
    proxy, fs = proxied
    held = proxy.hold(lambda command, path, _headers: command == "POST" and "?uploads" in path)
    try:
        data = os.urandom(14 * MIB)  # two parts, and less than the third: none waits
        fh = fs.create("/c", 0o644, os.O_WRONLY, 0, 0)
        writing = threading.Thread(target=write_in_mib, args=(fs, fh, data))
        writing.start()
        assert held.reached.wait(30), "the stream never began"
        writing.join(10)
        assert not writing.is_alive(), "a write waited for the upload to be created"
        assert not [r for r in proxy.seen if r.startswith("PUT ")]  # none before its id
        held.release()
        fs.flush(fh)
        fs.release(fh)
        assert body(s3, bucket, "c") == data
        assert s3.head_object(Bucket=bucket, Key="c")["ETag"].strip('"').endswith("-3")
        assert uploads(s3, bucket) == []
    finally:
        held.release()


def test_a_failed_create_falls_back_to_the_whole_file(proxied, s3, bucket):
    proxy, fs = proxied
    data = os.urandom(12 * MIB)
    fh = fs.create("/x", 0o644, os.O_WRONLY, 0, 0)
    write_in_mib(fs, fh, data[: 7 * MIB])
    proxy.set_rates(FaultRates(error500=1.0))
    write_in_mib(fs, fh, data[: 8 * MIB], start=7 * MIB)  # the stream begins: no error
    deadline = time.monotonic() + 10
    while proxy.stats.error500 < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.set_rates(FaultRates())
    assert proxy.stats.error500 == 1  # the create, and nothing after it
    write_in_mib(fs, fh, data, start=8 * MIB)  # parts of an upload that never was
    fs.flush(fh)
    fs.release(fh)
    assert body(s3, bucket, "x") == data
    assert uploads(s3, bucket) == []

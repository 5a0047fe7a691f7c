"""Reads of an open file while its lock is held over S3 work (an upload at close, the
download a first write of an existing file makes): they go on from what is already
here (the spool, the blocks fetched) instead of waiting for that work to end."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

MIB = 1024 * 1024


def within(seconds: float, call: Callable[..., object], *args: object) -> object:
    """call(*args) in another thread; fails the test if it takes longer than `seconds`
    (the held request is released by the test's cleanup, which ends the call)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(call, *args).result(timeout=seconds)
    except FutureTimeout:
        pytest.fail(f"{getattr(call, '__name__', call)} waited for the held request")
    finally:
        pool.shutdown(wait=False)


def test_a_read_of_a_written_file_does_not_wait_for_its_upload(proxied, s3, bucket):
    proxy, fs = proxied
    data = os.urandom(2 * MIB)  # below the streaming threshold: one PUT at close
    fh = fs.create("/u", 0o644, os.O_RDWR, 0, 0)
    fs.write(fh, data, 0)
    held = proxy.hold(lambda command, _path, _headers: command == "PUT")
    flushing = threading.Thread(target=fs.flush, args=(fh,))
    try:
        flushing.start()
        assert held.reached.wait(30), "the upload never began"
        other = within(5, fs.open, "/u", os.O_RDONLY).fh  # nor does an open
        assert within(5, fs.read, other, MIB, MIB) == data[MIB:]
        assert within(5, fs.read, fh, 0, 4096) == data[:4096]
        fs.release(other)
    finally:
        held.release()
        flushing.join(30)
    fs.release(fh)
    assert s3.get_object(Bucket=bucket, Key="u")["Body"].read() == data


def test_a_read_of_fetched_bytes_does_not_wait_for_a_first_writes_download(proxied, s3, bucket):
    proxy, fs = proxied
    data = os.urandom(4 * MIB)
    s3.put_object(Bucket=bucket, Key="d", Body=data)
    reading = fs.open("/d", os.O_RDONLY).fh
    assert fs.read(reading, 0, 4096) == data[:4096]  # now in the reader's blocks
    writing = fs.open("/d", os.O_WRONLY).fh
    held = proxy.hold(lambda command, _path, _headers: command == "GET")
    # The first write fetches the whole object into the spool, under the file's lock.
    write = threading.Thread(target=fs.write, args=(writing, b"new", 3 * MIB))
    try:
        write.start()
        assert held.reached.wait(30), "the write fetched nothing"
        assert within(5, fs.read, reading, 0, 4096) == data[:4096]
    finally:
        held.release()
        write.join(30)
    # Once written, every handle reads the spool: the new bytes, the old around them.
    assert (
        fs.read(reading, 3 * MIB - 2, 7)
        == data[3 * MIB - 2 : 3 * MIB] + b"new" + data[3 * MIB + 3 : 3 * MIB + 5]
    )
    fs.release(writing)
    fs.release(reading)
    expected = data[: 3 * MIB] + b"new" + data[3 * MIB + 3 :]
    assert s3.get_object(Bucket=bucket, Key="d")["Body"].read() == expected


def test_a_read_does_not_wait_for_a_writer_waiting_for_room_among_its_parts(proxied, s3, bucket):
    proxy, fs = proxied  # two parts in flight at most (make_core)
    data = os.urandom(30 * MIB)
    fh = fs.create("/s", 0o644, os.O_RDWR, 0, 0)
    fs.write(fh, data[:MIB], 0)
    reading = fs.open("/s", os.O_RDONLY).fh
    held = proxy.hold(lambda command, path, _headers: command == "PUT" and "partNumber" in path)
    writes = [(data[off : off + MIB], off) for off in range(MIB, len(data), MIB)]
    writer = threading.Thread(target=lambda: [fs.write(fh, *w) for w in writes])
    try:
        writer.start()
        assert held.reached.wait(30), "no part was sent"
        writer.join(1)
        assert writer.is_alive(), "the writer did not wait for room"  # a third part waits
        assert within(5, fs.read, reading, 0, 4096) == data[:4096]
    finally:
        held.release()
        writer.join(30)
    fs.release(reading)
    fs.release(fh)
    assert s3.get_object(Bucket=bucket, Key="s")["Body"].read() == data

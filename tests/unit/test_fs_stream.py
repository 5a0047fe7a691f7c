"""The sequential-read stream: bounded buffering of one response body, out-of-order reads,
failures reported as StreamFailed."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from run_s3fs.fs import stream as stream_mod
from run_s3fs.fs.stream import MAX_BEHIND, MAX_WINDOW, MIB, Stream, StreamFailed

DATA = os.urandom(48 * MIB + 12345)


class Body(io.BytesIO):
    """A response body: counts what was read from it, can fail after some bytes."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        super().__init__(data)
        self.fail_after = fail_after
        self.closed_by_stream = False

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("reset by peer")
        return super().read(n)

    def close(self) -> None:
        self.closed_by_stream = True


def wait_until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_sequential_reads_from_an_offset():
    start = 3 * MIB + 7
    body = Body(DATA[start:])
    s = Stream(body, start, len(DATA), "GET k")
    pos = start
    while pos < len(DATA):
        end = min(pos + MIB, len(DATA))
        asked = end + 100 if end == len(DATA) else end  # clipped at the end of the object
        assert s.read(pos, asked) == DATA[pos:end]
        pos = end
    assert wait_until(lambda: body.closed_by_stream)  # done: the body is closed


def test_reads_out_of_order_within_the_kernels_read_ahead():
    s = Stream(Body(DATA), 0, len(DATA), "GET k")
    order = [0, 1, 2, 6, 3, 4, 5, 7, 10, 8, 9, 11]  # in MiB, as the kernel's threads deliver
    for n in order:
        assert s.read(n * MIB, (n + 1) * MIB) == DATA[n * MIB : (n + 1) * MIB]
    s.close()


def test_skipped_bytes_are_kept_a_while_then_dropped():
    s = Stream(Body(DATA), 0, len(DATA), "GET k")
    assert s.read(0, MIB) == DATA[:MIB]
    last = MAX_BEHIND // MIB  # MiB 1 is never asked for: kept for a late read, a while
    for n in range(2, last + 1):
        assert s.read(n * MIB, (n + 1) * MIB) == DATA[n * MIB : (n + 1) * MIB]
    assert s.covers(MIB)
    s.read((last + 1) * MIB, (last + 2) * MIB)  # now more than MAX_BEHIND past it
    assert not s.covers(MIB)
    with pytest.raises(StreamFailed):
        s.read(MIB, 2 * MIB)
    s.close()


def test_memory_is_bounded_by_the_window():
    body = Body(DATA)
    s = Stream(body, 0, len(DATA), "GET k")
    s.read(0, MIB)
    time.sleep(0.3)  # the thread reads ahead, then stops
    assert body.tell() <= stream_mod.MIN_WINDOW + 2 * MIB
    for n in range(1, 20):
        s.read(n * MIB, (n + 1) * MIB)
    time.sleep(0.3)
    held = sum(len(c) for _, c in s._chunks)
    assert held <= MAX_WINDOW + MAX_BEHIND
    assert body.tell() <= 20 * MIB + MAX_WINDOW + MIB
    s.close()
    assert wait_until(lambda: body.closed_by_stream)


def test_a_failing_body_is_stream_failed():
    s = Stream(Body(DATA, fail_after=5 * MIB), 0, len(DATA), "GET k")
    assert s.read(0, MIB) == DATA[:MIB]
    with pytest.raises(StreamFailed):
        for n in range(1, 10):
            s.read(n * MIB, (n + 1) * MIB)
    short = Stream(Body(DATA[: 2 * MIB]), 0, len(DATA), "GET k")  # the response ends early
    with pytest.raises(StreamFailed):
        short.read(0, 4 * MIB)


def test_close_wakes_a_waiting_reader():
    gate = threading.Event()

    class Slow(Body):
        def read(self, n: int = -1) -> bytes:
            gate.wait(5)
            return super().read(n)

    s = Stream(Slow(DATA), 0, len(DATA), "GET k")
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            s.read(0, MIB)
        except StreamFailed as e:
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)
    s.close()
    t.join(5)
    gate.set()
    assert not t.is_alive() and errors


def test_a_stream_never_read_is_closed_without_a_thread():
    body = Body(DATA)
    s = Stream(body, 0, len(DATA), "GET k")
    s.close()
    assert body.closed_by_stream and body.tell() == 0

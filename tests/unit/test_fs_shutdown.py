"""GracefulStop's rule: the session is ended through libfuse only while libfuse has not
begun to free it. An unmount can end the session while a signal is being handled; the
stop then must not touch it (fuse_exit on freed memory corrupted the heap)."""

from __future__ import annotations

import threading
import time

from run_s3fs.fs.shutdown import GracefulStop


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[int, float]] = []

    def __call__(self, session: int) -> None:
        time.sleep(self.delay)
        self.calls.append((session, time.monotonic()))


def test_a_stop_ends_the_live_session() -> None:
    end = Recorder()
    stop = GracefulStop(busy=lambda: False, grace=5, end_session=end)
    stop.session_started(0x1234)
    stop._stop()
    assert [s for s, _ in end.calls] == [0x1234]


def test_a_stop_after_the_session_ended_leaves_it_alone() -> None:
    end = Recorder()
    stop = GracefulStop(busy=lambda: False, grace=5, end_session=end)
    stop.session_started(0x1234)
    stop.session_ended()  # destroy ran: libfuse frees the session next
    stop._stop()
    assert end.calls == []


def test_a_stop_waiting_for_writers_sees_the_session_end_meanwhile() -> None:
    end = Recorder()
    writing = threading.Event()
    writing.set()
    stop = GracefulStop(busy=writing.is_set, grace=5, end_session=end)
    stop.session_started(0x1234)
    t = threading.Thread(target=stop._stop)
    t.start()
    time.sleep(0.2)
    stop.session_ended()  # the unmount ended it while the stop waited
    writing.clear()
    t.join(5)
    assert end.calls == []


def test_destroy_waits_for_an_end_already_in_progress() -> None:
    """libfuse frees the session right after destroy returns: destroy must not return
    while fuse_exit is still running on it."""
    end = Recorder(delay=0.3)
    stop = GracefulStop(busy=lambda: False, grace=5, end_session=end)
    stop.session_started(0x1234)
    t = threading.Thread(target=stop._stop)
    t.start()
    time.sleep(0.1)  # the end is under way
    stop.session_ended()
    ended_at = time.monotonic()
    t.join(5)
    assert len(end.calls) == 1
    assert end.calls[0][1] <= ended_at


def test_a_stop_before_init_waits_for_the_session() -> None:
    end = Recorder()
    stop = GracefulStop(busy=lambda: False, grace=5, end_session=end)
    t = threading.Thread(target=stop._stop)
    t.start()
    time.sleep(0.1)
    assert end.calls == []
    stop.session_started(0x99)
    t.join(5)
    assert [s for s, _ in end.calls] == [0x99]

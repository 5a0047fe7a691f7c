"""Crash recovery and stopping without loss, under a real supervisord with the shipped file.

1. SIGKILL the backend again and again (both backends): supervisord restarts run-s3fs,
   which clears the dead mount and mounts again. Each time the mount must be healthy
   again within RECOVERY_LIMIT seconds, and every file closed before the crash must be
   intact, read back through the mount and through the S3 API. The recovery times are
   printed (run with -s to see them) and kept in the test's user properties.
2. `supervisorctl stop s3fs` (SIGTERM) while writer threads are busy: every file whose
   close() returned is in S3 with the right bytes, and no multipart upload is left open.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from supervisor_support import (
    Supervisor,
    launch_variables,
    needs_supervisord,
    supervise_fixture,  # noqa: F401 - the `supervise` fixture
    wait_for,
)

from run_s3fs.devserver import S3Server

pytestmark = [pytest.mark.e2e, needs_supervisord]

KILLS = 5
RECOVERY_LIMIT = 5.0  # seconds from SIGKILL to a healthy mount served by a new daemon
STARTSECS = 5  # the shipped file's startsecs: a process killed sooner counts as a failed start


def backend_param(name: str) -> Any:
    marks = []
    if name == "s3fs":
        marks.append(pytest.mark.skipif(shutil.which("s3fs") is None, reason="no s3fs"))
    return pytest.param(name, marks=marks, id=name)


BACKENDS = [backend_param("s3fs"), backend_param("python")]


def payload(n: int, size: int) -> bytes:
    """Distinct, incompressible-looking bytes for file number n."""
    seed = hashlib.sha256(f"file-{n}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def wait_running(sup: Supervisor, timeout: float = 30) -> int:
    assert wait_for(lambda: sup.state() == "RUNNING", timeout, 0.2), sup.program_log()
    return sup.pid()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_again_and_again(
    supervise, s3_server: S3Server, s3, bucket: str, tmp_path: Path, backend: str, record_property
) -> None:
    sup = supervise(launch_variables(s3_server, bucket, tmp_path, backend))
    mnt = sup.mountpoint
    pid = wait_running(sup)
    written: dict[str, bytes] = {}
    times: list[float] = []
    for kill in range(KILLS):
        # Files closed before the crash: one small, one of a few MB.
        for size in (1000 + kill, 3 * 1024 * 1024 + kill):
            name = f"before-kill-{kill}-{size}.bin"
            data = payload(len(written), size)
            with open(mnt / name, "wb") as f:
                f.write(data)
            written[name] = data
        # Running for startsecs, or the kill would count as a failed start (-> FATAL).
        pid = wait_running(sup)
        start = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda p=pid: sup.served_by_new_pid(p), 30), sup.program_log()[-3000:]
        assert (mnt / name).stat().st_size == len(data)  # the mount answers for real
        times.append(time.monotonic() - start)
    record_property("recovery_seconds", [round(t, 2) for t in times])
    print(f"\n{backend}: recovery after SIGKILL (s): {', '.join(f'{t:.2f}' for t in times)}")
    assert max(times) < RECOVERY_LIMIT, times

    for name, data in written.items():
        assert (mnt / name).read_bytes() == data, name
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data, name
    log = sup.program_log()
    assert log.count("dead mount") >= KILLS, log[-3000:]
    assert "Traceback" not in log
    assert SECRET_KEY not in sup.logs() and ACCESS_KEY not in sup.logs()


# --- stop while writing ------------------------------------------------------------------------


class Writer(threading.Thread):
    """Writes files of `size` bytes in chunks, one after another, until told to stop or
    until a write fails; records which files it closed successfully."""

    def __init__(self, mnt: Path, number: int, size: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.mnt, self.number, self.size, self.stop_requested = mnt, number, size, stop
        self.closed: dict[str, str] = {}  # name -> sha256 of what was written
        self.closed_at: list[float] = []  # time.monotonic() of each successful close
        self.failed: list[str] = []  # names whose write or close failed
        self.errors: list[str] = []

    def run(self) -> None:
        chunk = 256 * 1024
        i = 0
        while not self.stop_requested.is_set():
            name = f"w{self.number}-{i}-{uuid.uuid4().hex[:6]}.bin"
            data = payload(self.number * 1000 + i, self.size)
            try:
                f = open(self.mnt / name, "wb")  # noqa: SIM115 - close() is what we test
            except OSError as exc:
                self.errors.append(f"open {name}: {exc}")
                return
            try:
                for offset in range(0, len(data), chunk):
                    f.write(data[offset : offset + chunk])
                    time.sleep(0.002)
            except OSError as exc:
                self.failed.append(name)
                self.errors.append(f"write {name}: {exc}")
                with contextlib.suppress(OSError):
                    f.close()
                return
            try:
                f.close()
            except OSError as exc:
                self.failed.append(name)
                self.errors.append(f"close {name}: {exc}")
                return
            self.closed[name] = hashlib.sha256(data).hexdigest()
            self.closed_at.append(time.monotonic())
            i += 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_while_writing_loses_nothing(
    supervise, s3_server: S3Server, s3, bucket: str, tmp_path: Path, backend: str, record_property
) -> None:
    env = launch_variables(s3_server, bucket, tmp_path, backend)
    env["S3FS_OPTIONS"] = "multipart_size=5"  # 6 MB files go up in parts
    sup = supervise(env)
    wait_running(sup)
    if backend == "s3fs":
        time.sleep(1)  # s3fs 1.90 may abort on a SIGTERM right after start-up I/O
    stop = threading.Event()
    writers = [Writer(sup.mountpoint, n, 6 * 1024 * 1024, stop) for n in range(3)]
    for w in writers:
        w.start()
    assert wait_for(lambda: sum(len(w.closed) for w in writers) >= 2, 60)
    # SIGTERM lands while every writer is in the middle of a file.
    stopping = threading.Thread(target=lambda: sup.ctl("stop", "s3fs"), daemon=True)
    sigterm_at = time.monotonic()
    stopping.start()
    time.sleep(0.5)
    stop.set()  # the application winds down too (as it would on a deploy)
    for w in writers:
        w.join(90)
    stopping.join(90)
    assert sup.state() == "STOPPED", sup.program_log()[-3000:]
    assert not sup.served_by_new_pid(0)

    closed = {name: sha for w in writers for name, sha in w.closed.items()}
    failed = [name for w in writers for name in w.failed]
    after = sum(t > sigterm_at for w in writers for t in w.closed_at)
    record_property("closed_ok", len(closed))
    record_property("closed_after_sigterm", after)
    record_property("close_failed", len(failed))
    print(
        f"\n{backend}: {len(closed)} files closed OK ({after} of them after the SIGTERM), "
        f"{len(failed)} failed: {failed}"
    )
    assert closed
    if backend == "python":
        # The graceful stop lets files being written finish (shutdown.py).
        assert after >= 1
    for name, sha in closed.items():
        body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        assert len(body) == 6 * 1024 * 1024, name  # not truncated
        assert hashlib.sha256(body).hexdigest() == sha, name
    main_log = sup.main_log()
    aborted = "stopped: s3fs (terminated by SIGABRT)" in main_log
    if backend == "s3fs" and aborted:
        # s3fs 1.90 sometimes aborts when SIGTERM meets its worker threads mid-I/O (its
        # bug; supervisord restarts it on the next start). Every closed file is checked
        # above; an upload it had open when it aborted is its own leftover to see.
        return
    assert "stopped: s3fs (exit status 0)" in main_log, main_log[-2000:]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

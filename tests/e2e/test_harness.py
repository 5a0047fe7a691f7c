"""The test harness's own escape hatch: a wedged FUSE daemon must not hang the suite.

CI twice sat out pytest's 300 s limit on one s3fs case: a process blocked in a FUSE
request the daemon has taken cannot be killed until the daemon answers, so neither a
subprocess timeout nor SIGKILL of the caller frees it. `abort_fuse` does (fusectl).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import abort_fuse, fuse_connection

pytestmark = pytest.mark.e2e


def test_abort_frees_a_caller_blocked_on_a_wedged_daemon(mounter, bucket: str) -> None:
    m = mounter("python", bucket)
    assert fuse_connection(m.path) is not None
    assert fuse_connection(m.path.parent) is None
    os.kill(m.process.pid, signal.SIGSTOP)  # the daemon stops answering
    try:
        caller = subprocess.Popen(
            [sys.executable, "-c", f"import os; os.listdir({str(m.path / 'x')!r})"],
            stderr=subprocess.PIPE,
            text=True,
        )
        with pytest.raises(subprocess.TimeoutExpired):
            caller.wait(timeout=3)  # blocked: the mount does not answer

        started = time.monotonic()
        assert abort_fuse(m.path)
        _, err = caller.communicate(timeout=10)
        assert time.monotonic() - started < 10
        assert caller.returncode != 0
        # ECONNABORTED for a request in flight (kernels since 4.20), ENOTCONN after it
        assert "connection abort" in err or "not connected" in err, err
    finally:
        os.kill(m.process.pid, signal.SIGCONT)


def test_stop_reaps_a_daemon_that_ignores_sigterm(mounter, bucket: str) -> None:
    m = mounter("python", bucket)
    os.kill(m.process.pid, signal.SIGSTOP)  # SIGTERM stays pending; SIGKILL still works
    started = time.monotonic()
    m.stop(timeout=2)
    assert time.monotonic() - started < 15
    assert m.process.returncode == -signal.SIGKILL
    assert not Path("/proc", str(m.process.pid)).exists()

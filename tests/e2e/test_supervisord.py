"""The shipped supervisord.conf, driven by a real supervisord, with real s3fs mounts.

The file is copied unchanged into a temporary directory: every path in it is relative to
the file (%(here)s), so supervisord's log, pid file and socket, and the program's log,
all land there. The S3FS_* variables come from supervisord's environment, which the
program inherits (one of the documented ways to configure it). So the settings under
test (startsecs, startretries, autorestart, stopsignal, ...) are exactly the shipped ones.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, is_mounted, wait_for
from supervisor_support import (
    launch_variables,
    needs_supervisord,
    supervise_fixture,  # noqa: F401 - the `supervise` fixture
)

from run_s3fs.devserver import S3Server

pytestmark = [
    pytest.mark.e2e,
    needs_supervisord,
    pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs not installed"),
]


def test_running_restarted_after_a_crash_and_stopped_cleanly(
    supervise, s3_server: S3Server, s3, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="reports/2024/q1.csv", Body=b"a,b\n")
    variables = launch_variables(s3_server, bucket, tmp_path, "s3fs")
    mountpoint = Path(variables["S3FS_MOUNTPOINT"])
    sup = supervise(variables)

    # RUNNING only after startsecs (5 s) of staying up; by then the mount is live.
    assert wait_for(lambda: sup.state() == "RUNNING", 20, interval=0.5), sup.program_log()
    assert is_mounted(mountpoint)
    assert (mountpoint / "reports/2024/q1.csv").read_bytes() == b"a,b\n"
    # The process supervisord watches is the FUSE daemon itself (run-s3fs exec'd it).
    first = sup.pid()
    with open(f"/proc/{first}/comm") as f:
        assert f.read().strip() == "s3fs"
    # The keys are in no command line.
    with open(f"/proc/{first}/cmdline", "rb") as f:
        cmdline = f.read()
    assert SECRET_KEY.encode() not in cmdline and ACCESS_KEY.encode() not in cmdline

    # A crash (SIGKILL leaves a dead, "Transport endpoint is not connected" mount):
    # autorestart brings it back, and the launcher clears the stale mount first.
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: sup.state() == "RUNNING" and sup.pid() != first, 30, interval=0.5), (
        sup.program_log()
    )
    assert wait_for(lambda: (mountpoint / "reports").is_dir(), 10)

    # `supervisorctl stop` sends SIGTERM: the daemon unmounts and exits 0.
    out = sup.ctl("stop", "s3fs")
    assert "stopped" in out, out
    assert sup.state() == "STOPPED"
    assert not is_mounted(mountpoint)
    assert "stopped: s3fs (exit status 0)" in sup.main_log()
    log = sup.program_log()
    assert SECRET_KEY not in log and ACCESS_KEY not in log


def test_configuration_error_ends_fatal_and_names_the_variable(
    supervise, s3_server: S3Server, tmp_path: Path
) -> None:
    variables = launch_variables(s3_server, "unused", tmp_path, "s3fs")
    del variables["S3FS_BUCKET"]
    sup = supervise(variables)

    # Exit 78 at once, every try: FATAL after startretries (3) with back-off 1+2+3 s,
    # instead of restarting forever.
    assert wait_for(lambda: sup.state() == "FATAL", 30, interval=0.5), sup.main_log()
    main_log = sup.main_log()
    assert "exit status 78" in main_log
    assert main_log.count("spawned: 's3fs'") == 4  # the first start + 3 retries
    assert "S3FS_BUCKET" in sup.program_log()
    assert "Traceback" not in sup.program_log()
    assert not is_mounted(Path(variables["S3FS_MOUNTPOINT"]))

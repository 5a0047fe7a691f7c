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
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, is_mounted, wait_for

from run_s3fs.devserver import S3Server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("supervisord") is None, reason="supervisord not installed"),
    pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs not installed"),
]

SHIPPED = Path(__file__).resolve().parents[2] / "supervisord.conf"


def remove_guard(mountpoint: Path) -> None:
    """Take away the guard the launcher leaves on an unmounted mount point, if any."""
    try:
        from run_s3fs import guard
    except ImportError:
        return
    if mountpoint.is_dir():
        guard.remove(mountpoint)


@dataclass
class Supervisor:
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def conf(self) -> Path:
        return self.directory / "supervisord.conf"

    def ctl(self, *args: str) -> str:
        proc = subprocess.run(
            ["supervisorctl", "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=90,  # `stop` may legitimately wait up to stopwaitsecs (60 s)
        )
        return proc.stdout + proc.stderr

    def state(self) -> str:
        """RUNNING, STARTING, BACKOFF, FATAL, STOPPED, ... (supervisorctl's second column)."""
        fields = self.ctl("status", "s3fs").split()
        return fields[1] if len(fields) > 1 else "?"

    def pid(self) -> int:
        return int(self.ctl("pid", "s3fs").strip())

    def program_log(self) -> str:
        path = self.directory / "s3fs.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def main_log(self) -> str:
        path = self.directory / "supervisord.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def supervise(tmp_path: Path, require_fuse: None) -> Iterator:
    """supervise(variables) -> Supervisor running the shipped file; always shut down."""
    started: list[tuple[Supervisor, Path | None]] = []

    def start(variables: dict[str, str]) -> Supervisor:
        directory = tmp_path / "supervisor"
        directory.mkdir()
        shutil.copy(SHIPPED, directory / "supervisord.conf")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("S3FS_", "AWS_"))}
        # The run-s3fs under test is the one installed next to this interpreter.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(variables)
        proc = subprocess.Popen(
            ["supervisord", "-c", str(directory / "supervisord.conf")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sup = Supervisor(directory, proc)
        mountpoint = variables.get("S3FS_MOUNTPOINT")
        started.append((sup, Path(mountpoint) if mountpoint else None))
        assert wait_for(lambda: (directory / "supervisor.sock").exists(), 15), sup.main_log()
        return sup

    yield start

    for sup, mountpoint in started:
        if sup.process.poll() is None:
            sup.process.send_signal(signal.SIGTERM)  # stops the program (unmounts), then exits
            try:
                sup.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                sup.process.kill()
                sup.process.wait()
        if mountpoint is not None and is_mounted(mountpoint):
            subprocess.run(["fusermount", "-uz", str(mountpoint)], capture_output=True)
        if mountpoint is not None:
            remove_guard(mountpoint)  # else pytest cannot delete its temporary directory


def s3fs_variables(server: S3Server, bucket: str, tmp_path: Path) -> dict[str, str]:
    return {
        "S3FS_BUCKET": bucket,
        "S3FS_MOUNTPOINT": str(tmp_path / "store"),
        "S3FS_ACCESSKEY": ACCESS_KEY,
        "S3FS_SECRETKEY": SECRET_KEY,
        "S3FS_URL": server.url,
        "S3FS_PASSWD_FILE": str(tmp_path / "passwd-s3fs"),
        "S3FS_BACKEND": "s3fs",
    }


def test_running_restarted_after_a_crash_and_stopped_cleanly(
    supervise, s3_server: S3Server, s3, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="reports/2024/q1.csv", Body=b"a,b\n")
    variables = s3fs_variables(s3_server, bucket, tmp_path)
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
    variables = s3fs_variables(s3_server, "unused", tmp_path)
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

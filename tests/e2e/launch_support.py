"""`python -m run_s3fs` launched as supervisord launches it: a child process whose output
goes to a log file of its own, one file per launch; for the suites that drive the launcher
without supervisord (test_mounts, test_guard).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import wait_for

from run_s3fs import mounts


class ChildLaunches:
    """Launches of run-s3fs mounting at `mountpoint` with `env`, run in `tmp` (so no stray
    .env file is read); `close()` ends every launch still running."""

    def __init__(self, tmp: Path, mountpoint: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.mountpoint = mountpoint
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, prefix: tuple[str, ...] = (), **extra: str) -> subprocess.Popen[bytes]:
        """Start a launch (`prefix` goes before the interpreter, `extra` into its
        environment) and return at once."""
        log = self.tmp / f"launch-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "run_s3fs"],
                env={**self.env, **extra},
                cwd=self.tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def served_by(self, pid: int) -> bool:
        """The mount point is live and served by `pid` (a dead mount left by an earlier
        launch is in the mount table too until the new launch has cleared it)."""
        try:
            return mounts.inspect(self.mountpoint).server_pid == pid
        except Exception:
            return False

    def wait_live(
        self, proc: subprocess.Popen[bytes], timeout: float = 20, interval: float = 0.2
    ) -> None:
        """Wait until `proc` serves the mount point; fail with its log if it exits first."""
        ok = wait_for(
            lambda: self.served_by(proc.pid) or proc.poll() is not None, timeout, interval
        )
        assert ok and proc.poll() is None, self.log(proc)

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[self.procs.index(proc)].read_text(errors="replace")

    def log_text(self) -> str:
        """Everything every launch wrote."""
        return "".join(p.read_text(errors="replace") for p in self.logs)

    def close(self, timeout: float = 20) -> None:
        """SIGTERM every launch still running (SIGKILL after `timeout` seconds)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

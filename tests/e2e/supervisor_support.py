"""A real supervisord running the SHIPPED supervisord.conf, for the reliability suites.

Same approach as test_supervisord.py: the file is copied unchanged into a temporary
directory (every path in it is %(here)s-relative), the S3FS_* variables come from
supervisord's environment, and the run-s3fs under test is the one next to this
interpreter. Teardown stops supervisord (which stops the program), clears any mount left
behind and takes away the launcher's mount point guard, so pytest can delete the tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, wait_for

from run_s3fs import guard, mounts
from run_s3fs.devserver import S3Server

SHIPPED = Path(__file__).resolve().parents[2] / "supervisord.conf"

needs_supervisord = pytest.mark.skipif(
    shutil.which("supervisord") is None, reason="supervisord not installed"
)


def mounted_at(path: Path) -> bool:
    """A FUSE (or any non-guard) mount is on `path`."""
    return mounts.find_mount(path) is not None


def launch_variables(server: S3Server, bucket: str, tmp: Path, backend: str) -> dict[str, str]:
    """The S3FS_* variables of a launch mounting `bucket` at tmp/store with the test keys;
    the launcher writes the passwd file into tmp/private."""
    return {
        "S3FS_BUCKET": bucket,
        "S3FS_MOUNTPOINT": str(tmp / "store"),
        "S3FS_ACCESSKEY": ACCESS_KEY,
        "S3FS_SECRETKEY": SECRET_KEY,
        "S3FS_URL": server.url,
        "S3FS_PASSWD_FILE": str(tmp / "private" / "passwd"),
        "S3FS_BACKEND": backend,
    }


@dataclass
class Supervisor:
    directory: Path
    process: subprocess.Popen[bytes]
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.directory / "supervisord.conf"

    @property
    def mountpoint(self) -> Path:
        return Path(self.variables["S3FS_MOUNTPOINT"])

    def ctl(self, *args: str, timeout: float = 90) -> str:
        proc = subprocess.run(
            ["supervisorctl", "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=timeout,  # `stop` may legitimately wait up to stopwaitsecs (60 s)
        )
        return proc.stdout + proc.stderr

    def state(self) -> str:
        """RUNNING, STARTING, BACKOFF, FATAL, STOPPED, ... (supervisorctl's second column)."""
        fields = self.ctl("status", "s3fs").split()
        return fields[1] if len(fields) > 1 else "?"

    def pid(self) -> int:
        text = self.ctl("pid", "s3fs").strip()
        return int(text) if text.isdigit() else 0

    def program_log(self) -> str:
        path = self.directory / "s3fs.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def main_log(self) -> str:
        path = self.directory / "supervisord.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """Everything supervisord and the program wrote, including rotated files."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.directory.glob("*.log*")))

    def served_by_new_pid(self, old: int) -> bool:
        """The mount is up, healthy (statfs answers) and served by a pid other than `old`."""
        try:
            state = mounts.inspect(self.mountpoint)
        except Exception:
            return False
        return state.kind == "live" and state.server_pid not in (None, old)


def start_supervisor(directory: Path, variables: dict[str, str]) -> Supervisor:
    directory.mkdir(parents=True)
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
    sup = Supervisor(directory, proc, dict(variables))
    assert wait_for(lambda: (directory / "supervisor.sock").exists(), 15), sup.main_log()
    return sup


def shut_down(sup: Supervisor) -> None:
    if sup.process.poll() is None:
        sup.process.send_signal(signal.SIGTERM)  # stops the program (unmounts), then exits
        try:
            sup.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            sup.process.kill()
            sup.process.wait()
    mountpoint = sup.variables.get("S3FS_MOUNTPOINT")
    if mountpoint:
        release(Path(mountpoint))


def release(mountpoint: Path) -> None:
    """Unmount whatever is left on `mountpoint` and remove the launcher's guard."""
    for _ in range(3):
        if not mounted_at(mountpoint):
            break
        for tool in (["fusermount3", "-uz"], ["fusermount", "-uz"], ["umount", "-l"]):
            if subprocess.run([*tool, str(mountpoint)], capture_output=True).returncode == 0:
                break
    if mountpoint.is_dir():
        guard.remove(mountpoint)


@pytest.fixture(name="supervise")
def supervise_fixture(tmp_path: Path, require_fuse: None) -> Iterator[Callable[..., Supervisor]]:
    """supervise(variables, name="supervisor") -> Supervisor; always shut down."""
    started: list[Supervisor] = []

    def start(variables: dict[str, str], name: str = "supervisor") -> Supervisor:
        sup = start_supervisor(tmp_path / name, variables)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        shut_down(sup)

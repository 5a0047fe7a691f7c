"""The guarded mount point (S3FS_GUARD, default on) with real launches and real mounts.

While nothing is mounted, writing into the mount point must fail instead of landing on
the local disk: before the first mount, after a clean stop, after a crash (SIGKILL) once
the dead mount is gone. Both backends must mount on top of a guarded directory, and the
launcher's stale-mount cleanup must still work. Each guard kind is driven for real:
immutable (root's default), a read-only tmpfs (root without CAP_LINUX_IMMUTABLE, made
with setpriv), and mode 0555 (S3FS_GUARD=mode; a non-root user is refused).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from launch_support import ChildLaunches
from supervisor_support import release, wait_for

from run_s3fs import guard, mounts
from run_s3fs.devserver import S3Server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the guards under test need root"),
]

needs_s3fs = pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs is not installed")
BACKENDS = [pytest.param("s3fs", marks=needs_s3fs), "python"]


class Launches(ChildLaunches):
    """`python -m run_s3fs` as supervisord runs it, one log file per launch."""

    def __init__(self, server: S3Server, bucket: str, tmp: Path, backend: str) -> None:
        mountpoint = tmp / "srv" / "app" / "store"  # parents missing at first
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp),
            "S3FS_BUCKET": bucket,
            "S3FS_MOUNTPOINT": str(mountpoint),
            "S3FS_ACCESSKEY": ACCESS_KEY,
            "S3FS_SECRETKEY": SECRET_KEY,
            "S3FS_URL": server.url,
            "S3FS_PASSWD_FILE": str(tmp / "private" / "passwd"),
            "S3FS_BACKEND": backend,
        }
        super().__init__(tmp, mountpoint, env)

    def run(self, *args: str, prefix: tuple[str, ...] = (), **extra: str) -> str:
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "run_s3fs", *args],
            env={**self.env, **extra},
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout + done.stderr

    def start(self, prefix: tuple[str, ...] = (), **extra: str) -> subprocess.Popen[bytes]:
        """Start a launch and wait until it serves the mount point."""
        proc = super().start(prefix, **extra)
        self.wait_live(proc, timeout=30, interval=0.1)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], backend: str) -> None:
        if backend == "s3fs":
            time.sleep(2)  # s3fs 1.90 may abort on a SIGTERM right after I/O (its bug)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, self.log(proc)
        assert wait_for(lambda: mounts.find_mount(self.mountpoint) is None, 10)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait(timeout=10)
        assert mounts.inspect(self.mountpoint).kind == "stale"

    def close(self) -> None:
        super().close(timeout=30)
        release(self.mountpoint)
        for _ in range(3):  # a tmpfs guard may sit under a stale mount
            if guard.has_guard_mount(self.mountpoint):
                subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)


@pytest.fixture
def launches(
    request: pytest.FixtureRequest,
    s3_server: S3Server,
    bucket: str,
    tmp_path: Path,
    require_fuse: None,
) -> Iterator[Launches]:
    callspec = getattr(request.node, "callspec", None)
    backend = callspec.params.get("backend", "python") if callspec else "python"
    result = Launches(s3_server, bucket, tmp_path, backend)
    yield result
    result.close()


def refused(path: Path) -> int:
    """The errno a write into `path` gets (0 if it succeeds: the guard failed)."""
    try:
        with open(path / "written-while-unmounted.txt", "w") as f:
            f.write("lost data")
    except OSError as exc:
        return exc.errno or -1
    return 0


# --- immutable: root's default ------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_immutable_guard_across_mount_stop_and_crash(
    launches: Launches, backend: str, s3, bucket: str
) -> None:
    mnt = launches.mountpoint
    first = launches.start()
    # The parents were created 0755 and are not guarded; the mount point is.
    for parent in (mnt.parent, mnt.parent.parent):
        assert os.stat(parent).st_mode & 0o777 == 0o755
        assert not guard.is_immutable(parent)
    assert "guarded the mount point" in launches.log(first)
    (mnt / "through.txt").write_text("through the mount")
    assert wait_for(lambda: (mnt / "through.txt").exists(), 5)

    # A clean stop: the flag is there, writes and mkdir fail, the parent stays writable.
    launches.stop(first, backend)
    assert guard.current(mnt) == "immutable"
    assert refused(mnt) == errno.EPERM
    with pytest.raises(PermissionError):
        (mnt / "sub").mkdir()
    (mnt.parent / "sibling").mkdir()  # the guard is on the mount point only
    assert os.listdir(mnt) == []

    # Mount onto the guarded directory, crash, and the dead mount cleared by hand.
    second = launches.start()
    assert "stays guarded" in launches.log(second)
    launches.kill(second)
    assert refused(mnt) == errno.ENOTCONN  # the dead mount itself
    release_only_mount(mnt)
    assert refused(mnt) == errno.EPERM

    # Crash again; the next launch clears the dead mount and mounts onto the guard.
    third = launches.start()
    launches.kill(third)
    fourth = launches.start()
    assert "dead mount" in launches.log(fourth)
    assert (mnt / "through.txt").read_text() == "through the mount"
    assert s3.get_object(Bucket=bucket, Key="through.txt")["Body"].read() == b"through the mount"
    launches.stop(fourth, backend)
    assert refused(mnt) == errno.EPERM

    # S3FS_GUARD=off takes the guard away again.
    dry = launches.run("--dry-run", S3FS_GUARD="off")
    assert "S3FS_GUARD=off: remove a guard" in dry and "guard now: immutable" in dry
    fifth = launches.start(S3FS_GUARD="off")
    assert "removed the immutable guard" in launches.log(fifth)
    launches.stop(fifth, backend)
    assert guard.current(mnt) is None
    assert refused(mnt) == 0
    os.unlink(mnt / "written-while-unmounted.txt")


def release_only_mount(mnt: Path) -> None:
    subprocess.run(["fusermount", "-uz", str(mnt)], capture_output=True, check=True)
    assert mounts.find_mount(mnt) is None


# --- tmpfs: root without CAP_LINUX_IMMUTABLE (a container's default) ----------------------------

NO_IMMUTABLE = ("setpriv", "--bounding-set=-linux_immutable")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_tmpfs_guard_when_the_flag_is_not_allowed(launches: Launches) -> None:
    mnt = launches.mountpoint
    check = json.loads(launches.run("--check", "--json", prefix=NO_IMMUTABLE))
    item = next(i for i in check["items"] if i["name"] == "guard")
    assert item["status"] == "ok" and "tmpfs" in item["value"], item

    first = launches.start(prefix=NO_IMMUTABLE)
    assert "read-only empty tmpfs" in launches.log(first)
    assert guard.has_guard_mount(mnt) and not guard.is_immutable(mnt)
    (mnt / "x.txt").write_text("ok")
    launches.stop(first, "python")
    assert guard.current(mnt) == "tmpfs"
    assert refused(mnt) == errno.EROFS

    second = launches.start(prefix=NO_IMMUTABLE)
    launches.kill(second)
    third = launches.start(prefix=NO_IMMUTABLE)  # clears the dead mount, keeps the guard
    assert "dead mount" in launches.log(third)
    assert (mnt / "x.txt").read_text() == "ok"
    launches.stop(third, "python")
    assert refused(mnt) == errno.EROFS

    fourth = launches.start(prefix=NO_IMMUTABLE, S3FS_GUARD="off")
    launches.stop(fourth, "python")
    assert not guard.has_guard_mount(mnt)
    assert refused(mnt) == 0


# --- mode 0555: what a non-root launch can do ------------------------------------------------


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_mode_guard_is_put_back_under_the_mount(launches: Launches) -> None:
    mnt = launches.mountpoint
    first = launches.start(S3FS_GUARD="mode")
    # The helper puts 0555 back on the directory underneath once the mount is up.
    assert wait_for(lambda: "guarded underneath the mount" in launches.log(first), 10)
    (mnt / "y.txt").write_text("ok")
    launches.kill(first)
    release_only_mount(mnt)
    assert os.stat(mnt).st_mode & 0o777 == 0o555
    assert guard.current(mnt) == "mode"
    nobody = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "touch", f"{mnt}/z"],
        capture_output=True,
        text=True,
    )
    assert nobody.returncode != 0 and "Permission denied" in nobody.stderr

    second = launches.start(S3FS_GUARD="off")
    launches.stop(second, "python")
    assert os.stat(mnt).st_mode & 0o777 == 0o755 and guard.current(mnt) is None


# --- reporting ------------------------------------------------------------------------------


def test_check_and_dry_run_say_which_guard(launches: Launches) -> None:
    mnt = launches.mountpoint
    dry = launches.run("--dry-run")
    assert f"guard {mnt} while unmounted: immutable, else tmpfs, else mode" in dry
    check = json.loads(launches.run("--check", "--json"))
    item = next(i for i in check["items"] if i["name"] == "guard")
    assert item["status"] == "ok" and "immutable" in item["value"]
    off = json.loads(launches.run("--check", "--json", S3FS_GUARD="off"))
    item = next(i for i in off["items"] if i["name"] == "guard")
    assert item["status"] == "warn" and "local disk" in item["advice"]
    bad = launches.run("--check", S3FS_GUARD="maybe")
    assert "S3FS_GUARD" in bad and "on, off, immutable, tmpfs, mode" in bad


def test_nonempty_mount_point_is_guarded_too(launches: Launches) -> None:
    mnt = launches.mountpoint
    mnt.mkdir(parents=True)
    (mnt / "local.txt").write_text("kept")
    first = launches.start(S3FS_OPTIONS="nonempty")
    launches.stop(first, "python")
    assert guard.current(mnt) == "immutable"
    assert (mnt / "local.txt").read_text() == "kept"
    assert refused(mnt) == errno.EPERM

"""The keys appear nowhere: a scan of everything a user, a log collector or another local
process could see, at S3FS_LOGLEVEL=debug, for both backends.

Covered: /proc/PID/cmdline of supervisord and of every process under it (run-s3fs, the
backend it became, any child), before and after a crash; /proc/PID/environ of the backend
and its children; everything supervisord and the program logged (debug level, a mount
with I/O, a SIGKILL and restart, a stop); the output of --check, --check --json and
--dry-run; a launch with a rejected key; the messages for malformed keys and for a key
pasted into S3FS_OPTIONS. Also: a passwd file that is a symlink or readable by others is
refused (launcher and backend), and what the launcher creates is private whatever the
umask.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import ACCESS_KEY, SECRET_KEY, AuthMoto, auth_moto
from supervisor_support import (
    launch_variables,
    needs_supervisord,
    release,
    supervise_fixture,  # noqa: F401 - the `supervise` fixture
    wait_for,
)

from run_s3fs import mounts
from run_s3fs.devserver import S3Server

pytestmark = pytest.mark.e2e

needs_s3fs = pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs is not installed")
BACKENDS = [pytest.param("s3fs", marks=needs_s3fs), "python"]
# A wrong secret for the rejected launch: it must not be echoed either.
BAD_SECRET = "bAdSeCrEt/9876543210zyxwvutsrqponmlkjihg"
NEEDLES = (ACCESS_KEY, SECRET_KEY, BAD_SECRET)


def leaks(text: str | bytes, extra: tuple[str, ...] = ()) -> list[str]:
    """Which of the keys (or their URL-encoded forms) occur in `text`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    found = []
    for needle in (*NEEDLES, *extra):
        forms = {needle, needle.replace("/", "%2F"), needle.replace("/", "%2f")}
        if any(form in text for form in forms):
            found.append(needle[:4] + "…")
    return found


def variables(server: S3Server, bucket: str, tmp: Path, backend: str) -> dict[str, str]:
    return {**launch_variables(server, bucket, tmp, backend), "S3FS_LOGLEVEL": "debug"}


def scan_processes(root_pid: int, backend_pid: int) -> int:
    """Assert no key in the cmdline of `root_pid` and its descendants, nor in the environ
    of the backend and its descendants; return how many processes were scanned."""
    root = psutil.Process(root_pid)
    tree = [root, *root.children(recursive=True)]
    backend = psutil.Process(backend_pid)
    for proc in tree:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert not leaks(cmdline), (proc.pid, proc.name(), leaks(cmdline))
    for proc in [backend, *backend.children(recursive=True)]:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert not leaks(environ), (proc.pid, proc.name(), leaks(environ))
    assert backend in tree
    return len(tree)


@needs_supervisord
@pytest.mark.parametrize("backend", BACKENDS)
def test_supervised_mount_leaks_no_key(
    supervise, s3_server: S3Server, s3, bucket: str, tmp_path: Path, backend: str, record_property
) -> None:
    env = variables(s3_server, bucket, tmp_path, backend)
    # A passwd file left readable by others (and holding stale keys) is replaced by a 0600 one.
    (tmp_path / "private").mkdir(mode=0o700)
    Path(env["S3FS_PASSWD_FILE"]).write_text("OLDKEY:OLDSECRET\n")
    os.chmod(env["S3FS_PASSWD_FILE"], 0o644)
    sup = supervise(env)
    assert wait_for(lambda: sup.state() == "RUNNING", 30, 0.2), sup.program_log()
    assert os.stat(env["S3FS_PASSWD_FILE"]).st_mode & 0o777 == 0o600
    scanned = scan_processes(sup.process.pid, sup.pid())

    mnt = sup.mountpoint
    (mnt / "io.txt").write_bytes(b"x" * 100_000)
    assert (mnt / "io.txt").read_bytes() == b"x" * 100_000
    os.listdir(mnt)
    s3.put_object(Bucket=bucket, Key="api.txt", Body=b"from the API")
    assert wait_for(lambda: (mnt / "api.txt").exists(), 10)

    old = sup.pid()
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: sup.served_by_new_pid(old), 30), sup.program_log()[-2000:]
    scanned += scan_processes(sup.process.pid, sup.pid())
    if backend == "s3fs":
        time.sleep(2)  # s3fs 1.90 may abort on SIGTERM right after I/O (its bug)
    sup.ctl("stop", "s3fs")

    logs = sup.logs()
    assert "DEBUG" in logs or "[INF]" in logs  # debug output really was on
    assert not leaks(logs), leaks(logs)
    record_property("processes_scanned", scanned)
    record_property("log_bytes_scanned", len(logs))


AUTH_BUCKET = "secrets-auth-bucket"


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    """A moto server that checks signatures; its user (no policy) has a key whose secret
    the tests get wrong on purpose."""
    with auth_moto(tmp_path_factory.mktemp("moto-auth"), {AUTH_BUCKET: {}}) as server:
        yield server


def run_launcher(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "run_s3fs", *args],
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_dry_run_and_rejected_key_leak_nothing(
    s3_server: S3Server,
    auth: AuthMoto,
    bucket: str,
    tmp_path: Path,
    backend: str,
    require_fuse: None,
) -> None:
    auth_server, auth_key = auth.server, auth.access_key
    env = variables(s3_server, bucket, tmp_path, backend)
    outputs = []
    for args in (("--check",), ("--check", "--json"), ("--dry-run",)):
        done = run_launcher(env, *args, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)

    # A launch whose secret S3 rejects: --check says so; the backend refuses to mount.
    bad = {
        **env,
        "S3FS_URL": auth_server.url,
        "S3FS_BUCKET": AUTH_BUCKET,
        "S3FS_ACCESSKEY": auth_key,
        "S3FS_SECRETKEY": BAD_SECRET,
        "S3FS_MOUNTPOINT": str(tmp_path / "bad"),
        # s3fs would retry with signature v2, which moto answers with 500s, for 85 s
        **({"S3FS_OPTIONS": "sigv4"} if backend == "s3fs" else {}),
    }
    check = run_launcher(bad, "--check", cwd=tmp_path)
    assert check.returncode == 77 and "SignatureDoesNotMatch" in check.stdout, check.stdout
    outputs.append(check.stdout + check.stderr)
    try:
        launch = run_launcher(bad, cwd=tmp_path)
        if backend == "python":  # s3fs 1.90 exits 0 even when it could not mount
            assert launch.returncode != 0, launch.stdout + launch.stderr
        said = launch.stdout + launch.stderr
        assert "403" in said or "SignatureDoesNotMatch" in said, said  # the rejection is shown
        assert not mounts.find_mount(tmp_path / "bad")
        outputs.append(launch.stdout + launch.stderr)
    finally:
        release(tmp_path / "bad")
    for text in outputs:
        assert not leaks(text, (auth_key,)), (leaks(text, (auth_key,)), text[-2000:])


def test_malformed_keys_are_never_echoed(tmp_path: Path) -> None:
    base = {
        "S3FS_BUCKET": "some-bucket",
        "S3FS_MOUNTPOINT": str(tmp_path / "mnt"),
        "S3FS_PASSWD_FILE": str(tmp_path / "private" / "passwd"),
        "S3FS_LOGLEVEL": "debug",
    }
    cases = [
        {"S3FS_ACCESSKEY": ACCESS_KEY + " x", "S3FS_SECRETKEY": SECRET_KEY},
        {"S3FS_ACCESSKEY": ACCESS_KEY, "S3FS_SECRETKEY": SECRET_KEY + ":x"},
        {"S3FS_ACCESSKEY": ACCESS_KEY, "S3FS_SECRETKEY": SECRET_KEY, "S3FS_OPTIONS": SECRET_KEY},
        {"S3FS_ACCESSKEY": ACCESS_KEY, "S3FS_SECRETKEY": SECRET_KEY, "S3FS_URL": "ftp://x"},
    ]
    for case in cases:
        for args in ((), ("--check",), ("--check", "--json"), ("--dry-run",)):
            done = run_launcher({**base, **case}, *args, cwd=tmp_path)
            assert done.returncode == 78, (case.keys(), args, done.stderr)
            text = done.stdout + done.stderr
            assert not leaks(text), (args, text)
            assert "Traceback" not in text


# --- the passwd file ------------------------------------------------------------------------


def test_launcher_refuses_a_symlinked_passwd_file(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("")
    (private / "passwd").symlink_to(target)
    env = {
        "S3FS_BUCKET": "some-bucket",
        "S3FS_MOUNTPOINT": str(tmp_path / "mnt"),
        "S3FS_ACCESSKEY": ACCESS_KEY,
        "S3FS_SECRETKEY": SECRET_KEY,
        "S3FS_PASSWD_FILE": str(private / "passwd"),
        "S3FS_BACKEND": "python",
        "S3FS_GUARD": "off",
    }
    done = run_launcher(env, cwd=tmp_path)
    assert done.returncode == 73, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("run-s3fs: error: cannot write the passwd file") and "symbolic link" in last
    )
    assert target.read_text() == ""  # nothing written through the link


def backend_with_passwd(passwd: Path, server: S3Server, bucket: str, mnt: Path) -> str:
    mnt.mkdir(exist_ok=True)
    opts = f"passwd_file={passwd},url={server.url},use_path_request_style"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "run_s3fs.fs", bucket, str(mnt), "-f", "-o", opts],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return "MOUNTED"  # it accepted the file and served the mount until the timeout
    finally:
        release(mnt)
    assert done.returncode != 0
    return done.stdout + done.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_backend_refuses_a_passwd_file_others_can_read(
    mode: int, s3_server: S3Server, bucket: str, tmp_path: Path, require_fuse: None
) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
    os.chmod(passwd, mode)
    out = backend_with_passwd(passwd, s3_server, bucket, tmp_path / "mnt")
    assert "should not have" in out and str(passwd) in out, out
    assert not leaks(out)


def test_backend_refuses_a_symlinked_passwd_file(
    s3_server: S3Server, bucket: str, tmp_path: Path, require_fuse: None
) -> None:
    real = tmp_path / "real"
    real.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
    os.chmod(real, 0o600)
    link = tmp_path / "passwd"
    link.symlink_to(real)
    out = backend_with_passwd(link, s3_server, bucket, tmp_path / "mnt")
    assert out != "MOUNTED" and "symbolic link" in out


# --- what the launcher creates, whatever the umask --------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_created_paths_are_private_whatever_the_umask(
    umask: int, s3_server: S3Server, bucket: str, tmp_path: Path, require_fuse: None
) -> None:
    env = variables(s3_server, bucket, tmp_path, "python")
    env["S3FS_PASSWD_FILE"] = str(tmp_path / "secrets" / "deeper" / "passwd")
    env["S3FS_MOUNTPOINT"] = str(tmp_path / "srv" / "app" / "store")
    mnt = Path(env["S3FS_MOUNTPOINT"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "run_s3fs"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.umask(umask),
    )
    try:
        assert wait_for(lambda: mounts.find_mount(mnt) is not None or proc.poll() is not None, 30)
        assert proc.poll() is None
        modes = {
            p: os.stat(p).st_mode & 0o777
            for p in (
                tmp_path / "secrets",
                tmp_path / "secrets" / "deeper",
                tmp_path / "secrets" / "deeper" / "passwd",
                tmp_path / "srv",
                tmp_path / "srv" / "app",
            )
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        release(mnt)
    assert modes == {
        tmp_path / "secrets": 0o700,
        tmp_path / "secrets" / "deeper": 0o700,
        tmp_path / "secrets" / "deeper" / "passwd": 0o600,
        tmp_path / "srv": 0o755,  # the mount point's parents: traversable, writable by no one
        tmp_path / "srv" / "app": 0o755,
    }
    assert os.stat(mnt).st_mode & 0o777 == 0o755  # under its guard (immutable for root)

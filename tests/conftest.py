"""Shared fixtures: a real S3 server (moto in server mode) on loopback, clients, buckets.

Tiers (directories): unit/ needs nothing; integration/ needs the S3 server; e2e/ mounts
real FUSE filesystems and skips, with the reason, where /dev/fuse is unusable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from run_s3fs.devserver import S3Server, start_moto, stop_moto
from run_s3fs.mounts import mount_table, unescape

# A hung test's timeout must fail that test, not crash pytest's report (tests/lineless.py).
pytest_plugins = ["lineless"]

# Test credentials: shaped like AWS's (20/40 characters) so no length warning fires.
ACCESS_KEY = "AKIATESTTESTTEST1234"
SECRET_KEY = "tEsTsEcReT/0123456789abcdefghijklmnopqrs"
assert len(ACCESS_KEY) == 20 and len(SECRET_KEY) == 40


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server for the whole session; tests isolate themselves by bucket."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    stop_moto(server)


@pytest.fixture
def s3(s3_server: S3Server):
    """A boto3 S3 client bound to the session's server."""
    return s3_server.client(ACCESS_KEY, SECRET_KEY)


@pytest.fixture
def bucket(s3) -> str:
    """A fresh, empty bucket per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxied(s3_server: S3Server, bucket: str, tmp_path: Path):
    """(a FaultProxy in front of the server, the core (no mount) behind it, no retries).
    The core's spool is tmp_path/"spool", so what it saves goes to tmp_path/"unsaved"."""
    # Imported here: engine_support imports this module's credentials.
    from engine_support import make_core
    from faultproxy import FaultProxy

    spool = tmp_path / "spool"
    spool.mkdir()
    proxy = FaultProxy(s3_server.url).start()
    fs = make_core(proxy.url, bucket, str(spool), retries=0)
    yield proxy, fs
    fs.engine.close()
    proxy.stop()


def write_passwd(path: Path, access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Path:
    """A new s3fs passwd file `ACCESS:SECRET` at `path`, private (0600) from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{access}:{secret}\n")
    return path


# --- a server that checks credentials ---------------------------------------------------


@dataclass
class AuthMoto:
    """A moto server checking every signature against its IAM users, and the access key
    of its one user, `mounter`."""

    server: S3Server
    access_key: str
    secret_key: str

    def allow_unauthenticated(self, actions: int) -> None:
        """Let the next `actions` requests through unchecked (0: check every one).

        moto's /moto-api/reset-auth sets INITIAL_NO_AUTH_ACTION_COUNT and zeroes the
        counter, so the count is exact rather than worked out by hand.
        """
        # text/plain, so the server hands the body over as-is (not as a parsed form)
        req = urllib.request.Request(
            f"{self.server.url}/moto-api/reset-auth", data=str(actions).encode(), method="POST"
        )
        req.add_header("Content-Type", "text/plain")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def admin_client(self, service: str) -> Any:
        """A client with the set-up keys, which moto knows no user for: its requests pass
        only while `allow_unauthenticated` lets them."""
        return _admin_client(self.server, service)


def _admin_client(server: S3Server, service: str) -> Any:
    if service == "s3":
        return server.client(ACCESS_KEY, SECRET_KEY)
    import boto3

    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@contextmanager
def auth_moto(
    log_dir: Path,
    buckets: Mapping[str, Mapping[str, bytes]],
    allowed_bucket: str | None = None,
) -> Iterator[AuthMoto]:
    """A moto server of its own that authenticates: user `mounter` with an access key
    (allowed s3:* on `allowed_bucket` only, if given; no policy otherwise), `buckets`
    created with their objects ({bucket: {key: body}}), then authentication switched on.

    moto authenticates once INITIAL_NO_AUTH_ACTION_COUNT unauthenticated actions have
    been served: the server starts with a generous count for the set-up, then it is set
    to 0.
    """
    server = start_moto(log_dir, env_extra={"INITIAL_NO_AUTH_ACTION_COUNT": "1000"})
    try:
        iam = _admin_client(server, "iam")
        iam.create_user(UserName="mounter")
        if allowed_bucket is not None:
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:*",
                        "Resource": [
                            f"arn:aws:s3:::{allowed_bucket}",
                            f"arn:aws:s3:::{allowed_bucket}/*",
                        ],
                    }
                ],
            }
            iam.put_user_policy(
                UserName="mounter", PolicyName="one-bucket", PolicyDocument=json.dumps(policy)
            )
        key = iam.create_access_key(UserName="mounter")["AccessKey"]
        s3 = _admin_client(server, "s3")
        for bucket, objects in buckets.items():
            s3.create_bucket(Bucket=bucket)
            for name, body in objects.items():
                s3.put_object(Bucket=bucket, Key=name, Body=body)
        auth = AuthMoto(server, key["AccessKeyId"], key["SecretAccessKey"])
        auth.allow_unauthenticated(0)
        yield auth
    finally:
        stop_moto(server)


def fuse_usable() -> str | None:
    """None if FUSE mounts can work here, else the reason they cannot."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible to this user"
    return None


# --- mounting ---------------------------------------------------------------------------


def is_mounted(mountpoint: Path) -> bool:
    """Exact match against the kernel's mount table (octal escapes decoded)."""
    return any(entry.target == str(mountpoint) for entry in mount_table())


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def fuse_connection(mountpoint: Path) -> int | None:
    """The kernel's FUSE connection number behind `mountpoint` (its device number, as
    /sys/fs/fuse/connections names it), read from the mount table so that nothing has to
    stat a mount that may be wedged; None if nothing FUSE is mounted there."""
    target = str(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if unescape(fields[4]) == target and fstype.startswith("fuse"):
                major, minor = (int(n) for n in fields[2].split(":"))
                return os.makedev(major, minor)
    return None


def abort_fuse(mountpoint: Path) -> bool:
    """Abort the FUSE connection behind `mountpoint`: every request fails at once
    (ECONNABORTED, then ENOTCONN). A process blocked on a request the daemon has already
    taken cannot be killed (not even by SIGKILL) until the daemon answers, so a wedged
    daemon would hold its callers, the test and pytest itself for ever; this frees them."""
    conn = fuse_connection(mountpoint)
    if conn is None:
        return False
    control = Path("/sys/fs/fuse/connections")
    if not (control / str(conn)).exists():
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(control)], capture_output=True)
    try:
        (control / str(conn) / "abort").write_text("1")
    except OSError:
        return False
    return True


def unmount(mountpoint: Path) -> None:
    """Unmount (lazily, so a busy or dead mount goes too); ignore "not mounted"."""
    for tool in ("fusermount3", "fusermount"):
        if subprocess.run([tool, "-uz", str(mountpoint)], capture_output=True).returncode == 0:
            return
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@dataclass
class Mount:
    """A backend process serving `path` in the foreground."""

    path: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the daemon (as supervisord would), wait for it, return its exit status.

        A daemon that does not exit in time is killed; one that cannot die (a thread of it
        blocked on its own mount) is freed by aborting its FUSE connection. Never hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if is_mounted(self.path):
            unmount(self.path)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the daemon and reap it within seconds, whatever state it is in."""
        self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            abort_fuse(self.path)
            self.process.wait(timeout=10)


def backend_argv(backend: str, bucket_spec: str, mountpoint: Path, options: list[str]) -> list[str]:
    """The foreground command line of `backend` ("s3fs" or "python"), s3fs syntax for both."""
    opts = ",".join(options)
    if backend == "s3fs":
        return ["s3fs", bucket_spec, str(mountpoint), "-f", "-o", opts]
    if backend == "python":
        return [sys.executable, "-m", "run_s3fs.fs", bucket_spec, str(mountpoint), "-f", "-o", opts]
    raise ValueError(backend)


def start_mount(
    backend: str,
    server: S3Server,
    bucket_spec: str,
    mountpoint: Path,
    passwd_file: Path,
    extra_options: list[str] | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 20,
) -> Mount:
    """Mount `bucket_spec` at `mountpoint` with `backend` against `server` and wait until live."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = [
        f"passwd_file={passwd_file}",
        f"url={server.url}",
        "use_path_request_style",
        *(extra_options or []),
    ]
    log = log or mountpoint.parent / f"{mountpoint.name}.{backend}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            backend_argv(backend, bucket_spec, mountpoint, options),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    mount = Mount(mountpoint, proc, log)
    if not wait_for(lambda: is_mounted(mountpoint) or proc.poll() is not None, timeout):
        mount.stop()
        raise RuntimeError(f"{backend} did not mount within {timeout}s: {log.read_text()[-3000:]}")
    if proc.poll() is not None:
        raise RuntimeError(f"{backend} exited with {proc.returncode}: {log.read_text()[-3000:]}")
    return mount


@pytest.fixture
def passwd_file(tmp_path: Path) -> Path:
    return write_passwd(tmp_path / "passwd-s3fs")


@pytest.fixture(scope="session")
def require_fuse() -> None:
    reason = fuse_usable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def mounter(s3_server: S3Server, passwd_file: Path, tmp_path: Path, require_fuse: None):
    """mounter(backend, bucket_spec, name="mnt", options=[...]) -> Mount; stopped at teardown."""
    mounts: list[Mount] = []

    def mount(
        backend: str,
        bucket_spec: str,
        name: str = "mnt",
        options: list[str] | None = None,
        **kwargs,
    ) -> Mount:
        m = start_mount(
            backend, s3_server, bucket_spec, tmp_path / name, passwd_file, options, **kwargs
        )
        mounts.append(m)
        return m

    yield mount
    for m in reversed(mounts):
        m.stop()


@pytest.fixture(scope="session", autouse=True)
def _remove_guards_left_in_temp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Launches guard their mount points (S3FS_GUARD defaults to on), and a guarded
    directory cannot be deleted: take every guard off at the end, so pytest can clean up."""
    yield
    from run_s3fs import guard

    for root, dirs, _files in os.walk(tmp_path_factory.getbasetemp()):
        for name in dirs:
            path = Path(root, name)
            try:
                if guard.current(path) is not None:
                    guard.remove(path)
            except OSError:
                continue  # a dead mount or a vanished directory: nothing to take off

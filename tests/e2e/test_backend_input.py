"""Bad input to the bundled backend (`python -m run_s3fs.fs`): it must never hang and never
show a traceback.

At start (before anything is mounted): malformed `-o` options, a missing bucket, rejected
credentials (a moto server with IAM authentication on), a passwd file that is a symlink, a
FIFO, a directory or binary, and an unusable spool directory (`tmpdir=` missing, a file,
on a read-only filesystem) each end the process with ONE line and a sysexits code.
Unknown option names are not errors (the interface: the backend says which it ignores).

At run time: a spool on a full disk (a 2 MiB tmpfs as `tmpdir=`) gives the writer ENOSPC
at write() or close(), the daemon stays up and a later small file works; credentials
revoked while mounted give the writer EIO at close(), the daemon stays up.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    AuthMoto,
    auth_moto,
    is_mounted,
    start_mount,
    unmount,
    write_passwd,
)

from run_s3fs.devserver import S3Server, free_port

pytestmark = pytest.mark.e2e

START_LIMIT = 20.0  # seconds: a start-up refusal must come well within this


@dataclass
class Run:
    code: int
    out: str  # stdout + stderr
    seconds: float


def run_backend(spec: str, mnt: Path, opts: str, *flags: str, timeout: float = 30) -> Run:
    """Run the backend in the foreground; it is expected to refuse and exit. If it mounts
    instead, it is unmounted and the test fails (not hangs)."""
    mnt.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "run_s3fs.fs", spec, str(mnt), "-f"]
    if opts:
        argv += ["-o", opts]
    argv += flags
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        unmount(mnt)
        pytest.fail(f"the backend did not exit within {timeout}s (mounted: {is_mounted(mnt)})")
    assert not is_mounted(mnt)
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)


def assert_one_line(r: Run, code: int, *needles: str) -> None:
    assert r.code == code, r.out
    assert "Traceback" not in r.out, r.out
    lines = r.out.strip().splitlines()
    assert len(lines) == 1, r.out
    for needle in needles:
        assert needle in lines[0], r.out
    assert ACCESS_KEY not in r.out and SECRET_KEY not in r.out
    assert r.seconds < START_LIMIT


@pytest.fixture(scope="module")
def pw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_passwd(tmp_path_factory.mktemp("pw") / "passwd")


def base_opts(server: S3Server, pw: Path) -> str:
    return f"passwd_file={pw},url={server.url},use_path_request_style"


# --- options ------------------------------------------------------------------------------------


MALFORMED = [
    ("umask=xyz", "must be an octal number"),
    ("umask=1777", "no larger than 0777"),
    ("uid=-1", "must be at least 0"),
    ("uid=99999999999", "must be at most"),
    ("retries=many", "must be an integer"),
    ("connect_timeout=nan", "finite number of seconds"),
    ("readwrite_timeout=inf", "finite number of seconds"),
    ("stat_cache_expire=-3", "must not be negative"),
    ("multipart_size=1", "must be at least 5"),
    ("multipart_size=999999", "must be at most 5120"),
    ("parallel_count=0", "must be at least 1"),
    ("dbglevel=loud", "dbglevel=loud"),
    ("url=s3.example.com", "url=s3.example.com"),
    ("url=ftp://host", "http://HOST"),
    ("url=http://", "http://HOST"),
    ("url=http://[::1", "not a valid URL"),
    ("url=http://host:99999", "not a valid URL"),
    ("tmpdir=", "tmpdir needs a value"),
    ("passwd_file", "passwd_file needs a value"),
    ("=value", "without a name"),
]


@pytest.mark.parametrize(("option", "needle"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_option_is_one_line_and_exit_64(s3_server, pw, bucket, tmp_path, option, needle):
    r = run_backend(bucket, tmp_path / "mnt", f"{base_opts(s3_server, pw)},{option}")
    assert_one_line(r, 64, needle)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-x"], "unknown flag -x"),
        (["-o"], "-o needs an argument"),
        (["extra-positional"], "usage:"),
    ],
)
def test_bad_command_line_is_one_line_and_exit_64(s3_server, pw, bucket, tmp_path, args, needle):
    r = run_backend(bucket, tmp_path / "mnt", base_opts(s3_server, pw), *args)
    assert_one_line(r, 64, needle)


def test_unknown_options_are_named_and_the_mount_works(
    s3_server, pw, s3, bucket, tmp_path, fuse_ok
):
    m = start_mount(
        "python", s3_server, bucket, tmp_path / "mnt", pw, ["frobnicate=3", "nosuchflag"]
    )
    try:
        (m.path / "f").write_bytes(b"ok")
        assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"ok"
    finally:
        assert m.stop() == 0
    log = m.log.read_text()
    assert (
        "ignoring options that do not apply here: frobnicate (unknown), nosuchflag (unknown)" in log
    )
    assert "Traceback" not in log


# --- bucket and credentials ---------------------------------------------------------------------


def test_missing_bucket(s3_server, pw, tmp_path):
    r = run_backend("no-such-bucket-h7", tmp_path / "mnt", base_opts(s3_server, pw))
    assert_one_line(r, 69, "bucket no-such-bucket-h7 does not exist")


def test_unreachable_server_within_the_probe_budget(pw, tmp_path):
    # Many retries and long timeouts asked for; the start-up probe bounds them anyway.
    url = f"http://127.0.0.1:{free_port()}"
    opts = f"passwd_file={pw},url={url},retries=50,connect_timeout=300"
    r = run_backend("b", tmp_path / "mnt", opts)
    assert_one_line(r, 69, "cannot reach")


ALLOWED_BUCKET = "input-allowed"
OTHER_BUCKET = "input-other"  # exists, but the IAM user's policy does not cover it


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    """A moto server checking signatures against its IAM users (as tests/integration/
    test_check.py builds it): one user allowed s3:* on one bucket, then auth switched on."""
    with auth_moto(
        tmp_path_factory.mktemp("moto-auth"),
        {ALLOWED_BUCKET: {}, OTHER_BUCKET: {}},
        allowed_bucket=ALLOWED_BUCKET,
    ) as auth:
        yield auth


def passwd_with(tmp_path: Path, access: str, secret: str) -> Path:
    return write_passwd(tmp_path / f"pw-{uuid.uuid4().hex[:6]}", access, secret)


@pytest.mark.parametrize("case", ["wrong-secret", "unknown-key", "bucket-not-allowed"])
def test_rejected_credentials_exit_77(auth_server, tmp_path, case):
    access, secret, bucket = auth_server.access_key, auth_server.secret_key, ALLOWED_BUCKET
    if case == "wrong-secret":
        secret = "x" * 40
    elif case == "unknown-key":
        access = "AKIAUNKNOWNUNKNOWN00"
    else:
        bucket = OTHER_BUCKET
    pw = passwd_with(tmp_path, access, secret)
    opts = f"passwd_file={pw},url={auth_server.server.url},use_path_request_style"
    r = run_backend(bucket, tmp_path / "mnt", opts)
    assert_one_line(r, 77, "denied", "check the access key")
    assert secret not in r.out


def test_credentials_revoked_while_mounted(auth_server, tmp_path, fuse_ok):
    """The key is deleted while the mount is up: the writer's close fails (EIO), the daemon
    stays up and keeps answering for what it knows.

    moto's signature check rejects (SignatureDoesNotMatch) listings whose prefix holds a
    `/`, which a lookup of a missing name makes; so the files are put first and the
    mount only opens existing ones (HEAD/GET/PUT), which moto verifies correctly.
    """
    iam = auth_server.admin_client("iam")
    auth_server.allow_unauthenticated(1)
    user_key = iam.create_access_key(UserName="mounter")["AccessKey"]
    access, secret = user_key["AccessKeyId"], user_key["SecretAccessKey"]
    user_s3 = auth_server.server.client(access, secret)
    for name in ("before.txt", "target.txt"):
        user_s3.put_object(Bucket=ALLOWED_BUCKET, Key=name, Body=b"before")
    pw = passwd_with(tmp_path, access, secret)
    m = start_mount(
        "python",
        auth_server.server,
        ALLOWED_BUCKET,
        tmp_path / "mnt",
        pw,
        # The unsaved copy made at unmount stays in the test's own directory.
        ["retries=1", "connect_timeout=2", "readwrite_timeout=5", f"tmpdir={tmp_path}"],
    )
    try:
        assert (m.path / "before.txt").read_bytes() == b"before"
        f = open(m.path / "target.txt", "wb")  # noqa: SIM115 - close() is what we test
        auth_server.allow_unauthenticated(1)
        iam.delete_access_key(UserName="mounter", AccessKeyId=access)
        f.write(b"AFTER!")
        with pytest.raises(OSError) as e:
            f.close()
        assert e.value.errno == errno.EIO
        with pytest.raises(PermissionError):  # a lookup S3 refuses: EACCES, at once
            os.stat(m.path / "never-seen.txt")
        assert m.process.poll() is None and is_mounted(m.path)
        assert (m.path / "before.txt").stat().st_size == 6  # cached: still answered
    finally:
        m.stop()
    log = m.log.read_text()
    assert "Traceback" not in log
    assert "InvalidAccessKeyId" in log or "SignatureDoesNotMatch" in log, log
    assert secret not in log
    assert "UNSAVED: /target.txt" in log and list(
        (tmp_path / f"run-s3fs-{os.geteuid()}" / "unsaved").iterdir()
    )


# --- the passwd file ----------------------------------------------------------------------------


def test_passwd_file_symlink_fifo_directory_binary(s3_server, bucket, tmp_path):
    real = passwd_with(tmp_path, ACCESS_KEY, SECRET_KEY)
    link = tmp_path / "link"
    link.symlink_to(real)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # opening it for reading would block without O_NONBLOCK
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    binary = tmp_path / "binary"
    fd = os.open(binary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"\xff\xfe\x00\x81AKIA:x\n")
    os.close(fd)
    for path, needle in [
        (link, "is a symbolic link"),
        (fifo, "is not a regular file"),
        (directory, "is not a regular file"),
        (binary, "is not text"),
    ]:
        opts = f"passwd_file={path},url={s3_server.url},use_path_request_style"
        r = run_backend(bucket, tmp_path / "mnt", opts, timeout=20)
        assert_one_line(r, 78, needle, str(path))


# --- the spool directory ------------------------------------------------------------------------


def test_unusable_spool_directory_exits_73(s3_server, pw, bucket, tmp_path, tmpfs):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    read_only = tmpfs("ro", "ro,size=1m")
    for where, needle in [
        (tmp_path / "missing" / "deeper", "No such file or directory"),
        (a_file, "Not a directory"),
        (read_only, "Read-only file system"),
    ]:
        r = run_backend(bucket, tmp_path / "mnt", f"{base_opts(s3_server, pw)},tmpdir={where}")
        assert_one_line(r, 73, "spool directory", f"tmpdir={where}", needle)


def test_full_spool_disk_is_enospc_and_the_daemon_stays_up(
    s3_server, pw, s3, bucket, tmp_path, tmpfs, fuse_ok
):
    spool = tmpfs("spool", "size=2m")
    m = start_mount("python", s3_server, bucket, tmp_path / "mnt", pw, [f"tmpdir={spool}"])
    try:
        chunk = os.urandom(256 * 1024)
        failed_at = None
        written = 0
        f = open(m.path / "too-big.bin", "wb")  # noqa: SIM115 - close() is part of the test
        try:
            for _ in range(24):  # 6 MiB into a 2 MiB spool
                f.write(chunk)
                f.flush()  # to the daemon now (the kernel would buffer a little)
                written += len(chunk)
        except OSError as e:
            failed_at = ("write", e.errno)
        try:
            f.close()
        except OSError as e:
            failed_at = failed_at or ("close", e.errno)
        assert failed_at is not None and failed_at[1] == errno.ENOSPC, (failed_at, written)
        assert m.process.poll() is None and is_mounted(m.path)
        # The space is given back once the failed file is closed: a small file works.
        (m.path / "small.txt").write_bytes(b"still working")
        assert s3.get_object(Bucket=bucket, Key="small.txt")["Body"].read() == b"still working"
        assert (m.path / "small.txt").read_bytes() == b"still working"
    finally:
        assert m.stop() == 0
    log = m.log.read_text()
    assert "Traceback" not in log
    assert "No space left on device" in log

"""Temporary credentials on real mounts, against a moto server that authenticates every
request: credentials from an IMDS and a container endpoint of our own that expire (are
deleted) within the test while the mount keeps reading and writing; session tokens from
moto's STS through the launcher to s3fs; secrets absent from every argv."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import is_mounted, unmount, wait_for
from credservers import MotoIssuer, iam_moto, start_container, start_imds
from launch_support import ChildLaunches

pytestmark = pytest.mark.e2e
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def authmoto(tmp_path_factory, require_fuse):
    with iam_moto(tmp_path_factory.mktemp("iam-moto")) as server:
        yield server


def cmdlines() -> str:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
            except OSError:
                continue
    return b"\n".join(found).decode(errors="replace")


def busy(mountpoint: Path, seconds: float, errors: list[str]) -> int:
    """Write, read back and list continuously for `seconds`: small files and multipart
    ones (5 MiB parts); every failure goes to `errors`. Returns the operations done."""
    done, n = 0, 0
    big = os.urandom(12 * MIB)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n += 1
        small = f"small {n}\n".encode() * 100
        try:
            (mountpoint / f"s{n % 5}.txt").write_bytes(small)
            if (mountpoint / f"s{n % 5}.txt").read_bytes() != small:
                errors.append(f"s{n % 5}.txt read back differently")
            if n % 4 == 0:
                path = mountpoint / f"big{n % 2}.bin"
                path.write_bytes(big)
                if path.read_bytes() != big:
                    errors.append(f"{path.name} read back differently")
            os.listdir(mountpoint)
            done += 1
        except OSError as e:
            errors.append(f"operation {n}: {e}")
        time.sleep(0.05)
    return done


def mount_backend(mountpoint: Path, authmoto, options: list[str], env: dict[str, str], log: Path):
    mountpoint.mkdir(exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "run_s3fs.fs",
        authmoto.bucket,
        str(mountpoint),
        "-f",
        "-o",
        ",".join(
            [
                f"url={authmoto.server.url}",
                "use_path_request_style",
                "multipart_size=5",
                "multipart_threshold=8",
                "stat_cache_expire=1",
                *options,
            ]
        ),
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT)
    ok = wait_for(lambda: is_mounted(mountpoint) or proc.poll() is not None, 20)
    assert ok and proc.poll() is None, log.read_text()
    return proc


def stop(proc: subprocess.Popen, mountpoint: Path) -> int:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    if is_mounted(mountpoint):
        unmount(mountpoint)
    return proc.returncode


@pytest.mark.timeout(180)
def test_imds_credentials_refresh_while_the_mount_is_busy(authmoto, tmp_path: Path) -> None:
    """20 s credentials, each deleted on the server when it expires: over 45 s of reading
    and writing the mount fetches new ones ahead of time, again and again, and not one
    operation fails."""
    issuer = MotoIssuer(authmoto.server, authmoto.client("iam"), lifetime=20)
    imds = start_imds(issuer)
    mountpoint = tmp_path / "mnt"
    log = tmp_path / "backend.log"
    proc = mount_backend(
        mountpoint,
        authmoto,
        ["iam_role"],
        {"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url},
        log,
    )
    try:
        errors: list[str] = []
        done = busy(mountpoint, 45, errors)
        assert errors == [], errors[:5]
        assert done > 50
        # fetched at start, then at half-life at least twice more; expired keys were
        # deleted (refused by moto from then on) while the mount went on
        assert imds.credential_fetches() >= 3, imds.requests
        assert len(issuer.revoked) >= 2
        text = log.read_text()
        assert "credentials: instance profile: IMDS" in text
        for issued in issuer.issued:
            assert issued.secret_key not in text
    finally:
        code = stop(proc, mountpoint)
        imds.close()
    assert code == 0, log.read_text()[-3000:]


@pytest.mark.timeout(180)
def test_container_credentials_revoked_early_are_replaced_mid_write(
    authmoto, tmp_path: Path
) -> None:
    """A container endpoint (EKS Pod Identity style: full URI, token file) whose keys are
    deleted after 6 s of a 60 s life, long before the refresh is due: S3 refuses them, the
    engine asks for new ones and retries, and the writer never sees an error."""
    issuer = MotoIssuer(authmoto.server, authmoto.client("iam"), lifetime=60, revoke_after=6)
    container = start_container(issuer, token="eks-pod-identity-token-0123456789")
    token_file = tmp_path / "token"
    token_file.write_text("eks-pod-identity-token-0123456789")
    mountpoint = tmp_path / "mnt"
    log = tmp_path / "backend.log"
    proc = mount_backend(
        mountpoint,
        authmoto,
        ["ecs"],
        {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": container.url + container.path,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
        },
        log,
    )
    try:
        assert "eks-pod-identity-token" not in cmdlines()
        errors: list[str] = []
        done = busy(mountpoint, 20, errors)
        assert errors == [], errors[:5]
        assert done > 20
        assert len(issuer.revoked) >= 2 and container.credential_fetches() >= 3
        assert "refused as expired; trying with fresh ones" in log.read_text()
    finally:
        code = stop(proc, mountpoint)
        container.close()
    assert code == 0, log.read_text()[-3000:]


def _sts_credentials(authmoto, role: str = "mounter") -> dict[str, str]:
    import json

    iam = authmoto.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=role,
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    arn = f"arn:aws:iam::123456789012:role/{role}"
    issued = authmoto.client("sts").assume_role(RoleArn=arn, RoleSessionName="e2e")
    return issued["Credentials"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["s3fs", "python"])
def test_launcher_hands_session_credentials_to_the_backend(
    authmoto, tmp_path: Path, backend: str
) -> None:
    """S3FS_CREDENTIALS=aws with AWS_* session credentials: moto checks the session token,
    so a mount that works proves the backend got it; no argv carries a secret."""
    import shutil

    if backend == "s3fs" and shutil.which("s3fs") is None:
        pytest.skip("s3fs is not installed")
    creds = _sts_credentials(authmoto, role=f"mounter-{backend}")
    mountpoint = tmp_path / "mnt"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "S3FS_BUCKET": authmoto.bucket,
        "S3FS_MOUNTPOINT": str(mountpoint),
        "S3FS_URL": authmoto.server.url,
        "S3FS_CREDENTIALS": "aws",
        "S3FS_BACKEND": backend,
        "S3FS_GUARD": "off",
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }
    launches = ChildLaunches(tmp_path, mountpoint, env)
    try:
        proc = launches.start()
        launches.wait_live(proc, timeout=30)
        (mountpoint / "hello.txt").write_text("hi")
        assert wait_for(lambda: (mountpoint / "hello.txt").read_text() == "hi", 5)
        argvs = cmdlines()
        for secret in (creds["SecretAccessKey"], creds["SessionToken"]):
            assert secret not in argvs and secret not in launches.log_text()
    finally:
        launches.close()
        if is_mounted(mountpoint):
            unmount(mountpoint)

    if backend == "s3fs":
        return  # moto answers s3fs's requests with a forged token by a 500, retried for ever
    # a forged token is refused for real: the backend gives up at its start
    forged = launches.start(AWS_SESSION_TOKEN="forged" + creds["SessionToken"][6:])
    try:
        assert forged.wait(60) == 77, launches.log(forged)
        assert "InvalidToken" in launches.log(forged)
        assert not is_mounted(mountpoint)
    finally:
        launches.close()
        if is_mounted(mountpoint):
            unmount(mountpoint)


def test_busy_helper_reports_errors(tmp_path: Path) -> None:
    """The busy loop above would see a failure: on a read-only directory it does."""
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o555)
    errors: list[str] = []
    if os.geteuid() == 0:
        target = tmp_path / "missing"  # root writes anywhere: a missing directory then
    busy(target, 0.2, errors)
    assert errors

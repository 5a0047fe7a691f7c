"""Shared fixtures: a real S3 server (moto in server mode) on loopback, clients, buckets.

Tiers (directories): unit/ needs nothing; integration/ needs the S3 server; e2e/ mounts
real FUSE filesystems and skips, with the reason, where /dev/fuse is unusable.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Test credentials: shaped like AWS's (20/40 characters) so no length warning fires.
ACCESS_KEY = "AKIATESTTESTTEST1234"
SECRET_KEY = "tEsTsEcReT/0123456789abcdefghijklmnopqrs"
assert len(ACCESS_KEY) == 20 and len(SECRET_KEY) == 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):  # noqa: ANN201
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def start_moto(tmp_dir: Path, env_extra: dict[str, str] | None = None) -> S3Server:
    """Start `python -m moto.server` on a free loopback port and wait until it answers."""
    port = free_port()
    log = tmp_dir / f"moto-{port}.log"
    env = {**os.environ, **(env_extra or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited early: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return S3Server(f"http://127.0.0.1:{port}", port, proc, log)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start within 30 s")


def stop_moto(server: S3Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server for the whole session; tests isolate themselves by bucket."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    stop_moto(server)


@pytest.fixture
def s3(s3_server: S3Server):  # noqa: ANN201
    """A boto3 S3 client bound to the session's server."""
    return s3_server.client()


@pytest.fixture
def bucket(s3) -> str:  # noqa: ANN001
    """A fresh, empty bucket per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def fuse_usable() -> str | None:
    """None if FUSE mounts can work here, else the reason they cannot."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible to this user"
    return None

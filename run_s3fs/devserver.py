"""A local S3 server for trying run-s3fs out, for the tests, the demo and the benchmark.

It runs moto in server mode (`pip install 'moto[server]'`, the `test` extra) on a free
loopback port, as a child process: nothing here imports moto, so the package does not
depend on it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    """A running local S3 server."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, access_key: str, secret_key: str) -> Any:
        """A path-style boto3 S3 client for this server."""
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


def start_moto(log_dir: Path, env_extra: dict[str, str] | None = None) -> S3Server:
    """Start `python -m moto.server` on a free loopback port and wait until it answers."""
    port = free_port()
    log = log_dir / f"moto-{port}.log"
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

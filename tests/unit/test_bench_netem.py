"""The benchmark's S3-like network (bench/netem.py) and peer plumbing (bench/bench_mount.py).

The proxy runs in a thread of this process between two loopback sockets of the test:
no S3 server, no mount.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_mount
import netem


def answering_server(response: bytes) -> tuple[socket.socket, threading.Thread]:
    """Accepts one connection; answers every received burst with `response` at once."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(65536):
                conn.sendall(response)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@pytest.fixture
def proxy_to() -> Iterator:
    started: list[netem.Proxy] = []

    def start(upstream: socket.socket, latency_ms: float, mbps: float) -> netem.Proxy:
        proxy = netem.Proxy(("127.0.0.1", 0), upstream.getsockname()[:2], latency_ms, mbps)
        threading.Thread(target=proxy.run, daemon=True).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.running = False


def first_byte_after(sock: socket.socket, request: bytes) -> float:
    t0 = time.monotonic()
    sock.sendall(request)
    assert sock.recv(1)
    return time.monotonic() - t0


def test_every_response_on_a_keepalive_connection_waits_the_latency(proxy_to) -> None:
    server, _ = answering_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    proxy = proxy_to(server, latency_ms=60, mbps=0)
    with socket.create_connection(proxy.address) as client:
        waits = []
        for _ in range(3):
            waits.append(first_byte_after(client, b"HEAD /b/k HTTP/1.1\r\nHost: x\r\n\r\n"))
            client.recv(65536)  # the rest of the response
    assert all(w >= 0.055 for w in waits), waits
    assert all(w < 0.5 for w in waits), waits
    assert proxy.requests == 3


def test_no_latency_means_no_wait(proxy_to) -> None:
    server, _ = answering_server(b"x")
    proxy = proxy_to(server, latency_ms=0, mbps=0)
    with socket.create_connection(proxy.address) as client:
        assert first_byte_after(client, b"GET / HTTP/1.1\r\n\r\n") < 0.05


def test_bandwidth_is_capped_per_connection(proxy_to) -> None:
    body = b"y" * 3_000_000
    server, _ = answering_server(body)
    proxy = proxy_to(server, latency_ms=0, mbps=10)  # 3 MB at 10 MB/s: ≥ ~0.3 s
    with socket.create_connection(proxy.address) as client:
        t0 = time.monotonic()
        client.sendall(b"GET /big HTTP/1.1\r\n\r\n")
        got = 0
        while got < len(body):
            got += len(client.recv(1 << 20))
        seconds = time.monotonic() - t0
    assert 0.25 <= seconds < 2.0, seconds


def test_rclone_keys_go_in_the_environment_not_the_command_line(tmp_path: Path) -> None:
    argv = bench_mount.backend_argv(
        "rclone", "bkt", tmp_path / "mnt", ["--vfs-cache-mode", "writes"]
    )
    env = bench_mount.rclone_env("http://127.0.0.1:1", "AKIDEXAMPLE", "s3cr3t/key", tmp_path / "c")
    assert "s3cr3t/key" not in " ".join(argv)
    assert argv[1:3] == ["mount", f"{bench_mount.RCLONE_REMOTE}:bkt"]
    assert env["RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY"] == "s3cr3t/key"
    assert env["RCLONE_CONFIG_BENCH_TYPE"] == "s3"
    assert "--vfs-cache-mode" in bench_mount.rclone_flags(tmp_path)


def test_mount_readiness_comes_from_mountinfo(tmp_path: Path) -> None:
    assert bench_mount.is_mounted(Path("/"))
    assert not bench_mount.is_mounted(tmp_path)


def test_request_log_has_one_line_per_request_in_the_servers_shape(proxy_to, tmp_path) -> None:
    import io

    from bench_mount import ServerLog

    server, _ = answering_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    proxy = proxy_to(server, latency_ms=0, mbps=0)
    proxy.request_log = io.StringIO()
    with socket.create_connection(proxy.address) as client:
        for request in (
            b"HEAD /bkt/a HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /bkt/big HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1048575\r\n\r\n",
        ):
            first_byte_after(client, request)
            client.recv(65536)
    lines = proxy.request_log.getvalue().splitlines()
    assert [line.rsplit(" at=", 1)[0] for line in lines] == [
        'netem "HEAD /bkt/a HTTP/1.1"',
        'netem "GET /bkt/big HTTP/1.1" range=0-1048575',
    ]
    assert all(abs(float(line.rsplit(" at=", 1)[1]) - time.time()) < 60 for line in lines)
    log = tmp_path / "requests.log"
    log.write_text("\n".join(lines) + "\n")
    assert ServerLog(log).count(0, "bkt") == {"HEAD": 1, "GET": 1}


def test_a_body_sent_after_100_continue_is_not_a_request(proxy_to) -> None:
    """libcurl (s3fs) sends a PUT's headers, waits for `100 Continue`, then the body: the
    body is not a second request in the log, though its answer waits the latency again."""
    import io

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)  # the headers
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            conn.recv(65536)  # the body
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    proxy = proxy_to(listener, latency_ms=40, mbps=0)
    proxy.request_log = io.StringIO()
    with socket.create_connection(proxy.address) as client:
        first_byte_after(
            client, b"PUT /bkt/k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n"
        )
        client.recv(65536)
        assert first_byte_after(client, b"123456789") >= 0.035  # the body's round trip
    assert proxy.requests == 1
    lines = proxy.request_log.getvalue().splitlines()
    assert [line.rsplit(" at=", 1)[0] for line in lines] == ['netem "PUT /bkt/k HTTP/1.1"']

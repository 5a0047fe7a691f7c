#!/usr/bin/env python3
"""An S3-like network on loopback: a TCP proxy that delays each response and caps each
connection's bandwidth.

    python3 bench/netem.py --upstream 127.0.0.1:9000 [--listen 127.0.0.1:0]
        [--latency-ms 20] [--conn-mbps 80] [--ready-file PATH] [--request-log PATH]

- **Latency**: the first byte of every response is held for --latency-ms (S3's time to
  first byte is 10-30 ms on a warm connection). Request boundaries are found without
  parsing HTTP: client→server bytes that arrive after the server has started answering
  (or the first ones on a connection) start a new request if they begin with a request
  line; the server's first bytes after that are the response's first byte. This holds
  for keep-alive connections and for servers that close after each response. A body
  sent after `100 Continue` is not counted as a request, but its answer waits the
  latency again: the round trip it is.
- **Bandwidth**: a token bucket per connection and direction, --conn-mbps × 10⁶ bytes/s
  (S3 serves one connection at 50-100 MB/s; parallelism comes from more connections).
  0 turns the cap off.

One thread, non-blocking sockets and `selectors` (epoll), 1 MiB reads: it shares the
machine with the server and the client under test, so its own CPU must stay small
(measured in bench/README.md: `--self-test`).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import os
import re
import selectors
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

CHUNK = 1 << 20  # bytes per recv: few system calls per megabyte
BURST_SECONDS = 0.005  # the bucket holds this much transfer time (min MIN_BURST bytes)
MIN_BURST = 64 * 1024
RANGE = re.compile(rb"\r\nrange: *bytes=([0-9-]+)", re.IGNORECASE)
REQUEST_LINE = re.compile(rb"(GET|HEAD|PUT|POST|DELETE|OPTIONS|PATCH) /")


class Pipe:
    """One direction of one connection: bytes from `src` to `dst`."""

    def __init__(self, proxy: Proxy, conn: Conn, src: socket.socket, dst: socket.socket, up: bool):
        self.proxy = proxy
        self.conn = conn
        self.src = src
        self.dst = dst
        self.up = up  # client → server
        self.pending = memoryview(b"")
        self.eof = False  # src said EOF; dst is shut for writing once pending is out
        self.closed = False
        self.hold_until = 0.0  # a response's first byte waits until then
        rate = proxy.rate
        self.burst = max(MIN_BURST, int(rate * BURST_SECONDS)) if rate else 0
        self.tokens = float(self.burst)
        self.refilled = time.monotonic()
        self.waiting = False  # a timer will resume this pipe

    def _refill(self, now: float) -> None:
        if self.proxy.rate:
            self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.proxy.rate)
            self.refilled = now

    def want_read(self, now: float) -> bool:
        """Read from src now? Not with bytes still to write, a hold, or an empty bucket."""
        if self.eof or self.closed or self.pending or self.waiting:
            return False
        if self.hold_until > now:
            self.proxy.wake(self.hold_until, self)
            return False
        if self.proxy.rate:
            self._refill(now)
            need = min(self.burst, MIN_BURST)
            if self.tokens < need:
                self.proxy.wake(now + (need - self.tokens) / self.proxy.rate, self)
                return False
        return True

    def read(self, now: float) -> None:
        size = CHUNK if not self.proxy.rate else max(1, min(CHUNK, int(self.tokens)))
        try:
            data = self.src.recv(size)
        except BlockingIOError:
            return
        except OSError:
            self.conn.close()
            return
        if not data:
            self.eof = True
            self._flush_eof()
            return
        if self.proxy.rate:
            self.tokens -= len(data)
        self.conn.saw(self, data, now)
        self.pending = memoryview(data)
        if self.hold_until <= now:
            self.write()

    def write(self) -> None:
        if not self.pending or self.closed:
            return
        try:
            sent = self.dst.send(self.pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.conn.close()
            return
        self.pending = self.pending[sent:]
        if not self.pending:
            self.pending = memoryview(b"")
            self._flush_eof()

    def _flush_eof(self) -> None:
        if self.eof and not self.pending and not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)
            self.conn.maybe_done()


class Conn:
    """A client connection and its upstream connection; finds request boundaries."""

    def __init__(self, proxy: Proxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.up = Pipe(proxy, self, client, server, True)
        self.down = Pipe(proxy, self, server, client, False)
        self.answering = True  # so that the first client bytes start a request
        self.requests = 0
        self.dead = False

    def saw(self, pipe: Pipe, data: bytes, now: float) -> None:
        if pipe.up:
            if self.answering:
                self.answering = False
                if REQUEST_LINE.match(data):
                    self.requests += 1
                    self.proxy.requests += 1
                    if self.proxy.request_log is not None:
                        self.proxy.log_request(data)
        elif not self.answering:
            self.answering = True
            if self.proxy.latency:
                pipe.hold_until = now + self.proxy.latency
                self.proxy.wake(pipe.hold_until, pipe)

    def maybe_done(self) -> None:
        if self.up.closed and self.down.closed:
            self.close()

    def close(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.up.closed = self.down.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(KeyError, ValueError):
                self.proxy.sel.unregister(sock)
            sock.close()
        self.proxy.conns.discard(self)


class Proxy:
    def __init__(
        self, listen: tuple[str, int], upstream: tuple[str, int], latency_ms: float, mbps: float
    ) -> None:
        self.upstream = upstream
        self.latency = latency_ms / 1000
        self.rate = mbps * 1e6
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server(listen, backlog=1024)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.conns: set[Conn] = set()
        self.timers: list[tuple[float, int, Pipe]] = []
        self._seq = itertools.count()
        self.requests = 0
        self.running = True
        self.request_log: TextIO | None = None
        # Connections whose sockets' interest may have changed: only these are looked at
        # after each round (a pipe that must wait has a timer, which marks it again).
        self.dirty: set[Conn] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    def log_request(self, data: bytes) -> None:
        """One line per request, moto's shape (`"GET /bkt/key HTTP/1.1"`), with the
        Range asked for and the wall-clock time it arrived: counts for servers that log
        none (rclone serve s3), and timelines for by-hand analysis."""
        line = data[: data.find(b"\r\n")] if b"\r\n" in data[:4096] else data[:200]
        wanted = RANGE.search(data, 0, 8192)
        extra = f" range={wanted[1].decode(errors='replace')}" if wanted else ""
        assert self.request_log is not None
        self.request_log.write(
            f'netem "{line.decode(errors="replace")}"{extra} at={time.time():.3f}\n'
        )

    def wake(self, when: float, pipe: Pipe) -> None:
        if not pipe.waiting:
            pipe.waiting = True
            heapq.heappush(self.timers, (when, next(self._seq), pipe))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except BlockingIOError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(self, client, server)
            self.conns.add(conn)
            self.dirty.add(conn)

    def _interest(self, now: float) -> None:
        """(Re)register the dirty connections' sockets for what their pipes want: read
        as src, write as dst."""
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            if conn.dead:
                continue
            for sock, reader, writer in (
                (conn.client, conn.up, conn.down),
                (conn.server, conn.down, conn.up),
            ):
                events = 0
                if reader.want_read(now):
                    events |= selectors.EVENT_READ
                if writer.pending and not writer.closed and writer.hold_until <= now:
                    events |= selectors.EVENT_WRITE
                key = self.sel.get_map().get(sock)
                if events == 0:
                    if key is not None:
                        self.sel.unregister(sock)
                elif key is None:
                    self.sel.register(sock, events, conn)
                elif key.events != events:
                    self.sel.modify(sock, events, conn)

    def run(self) -> None:
        while self.running:
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, pipe = heapq.heappop(self.timers)
                pipe.waiting = False
                self.dirty.add(pipe.conn)
                if pipe.hold_until <= now:
                    pipe.write()
                elif pipe.pending:
                    self.wake(pipe.hold_until, pipe)
            self._interest(now)
            timeout = max(0.0, self.timers[0][0] - now) if self.timers else 1.0
            for key, events in self.sel.select(timeout):
                now = time.monotonic()
                if key.data is None:
                    self._accept()
                    continue
                conn: Conn = key.data
                sock = key.fileobj
                if conn.dead:
                    continue
                self.dirty.add(conn)
                reader = conn.up if sock is conn.client else conn.down
                writer = conn.down if sock is conn.client else conn.up
                if events & selectors.EVENT_WRITE:
                    writer.write()
                if events & selectors.EVENT_READ and not conn.dead:
                    reader.read(now)

    def close(self) -> None:
        for conn in list(self.conns):
            conn.close()
        self.listener.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def self_test(seconds: float = 3.0) -> dict[str, float]:
    """The proxy's ceiling (no latency, no cap): MB/s through it and its CPU per GB,
    against a sink that reads as fast as it can, all in this process's threads."""
    import threading

    sink = socket.create_server(("127.0.0.1", 0))
    got = [0]

    def drain() -> None:
        conn, _ = sink.accept()
        buf = bytearray(CHUNK)
        while n := conn.recv_into(buf):
            got[0] += n
        conn.close()

    threading.Thread(target=drain, daemon=True).start()
    proxy = Proxy(("127.0.0.1", 0), sink.getsockname()[:2], 0, 0)
    runner = threading.Thread(target=proxy.run, daemon=True)
    runner.start()
    src = socket.create_connection(proxy.address)
    block = os.urandom(CHUNK)
    cpu0 = time.thread_time()  # the sender's own CPU, to subtract
    proc0 = time.process_time()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        src.sendall(block)
    src.close()
    while got[0] < 1 and time.monotonic() - t0 < seconds + 5:
        time.sleep(0.01)
    time.sleep(0.2)
    wall = time.monotonic() - t0
    cpu = time.process_time() - proc0 - (time.thread_time() - cpu0)
    proxy.running = False
    runner.join(timeout=5)
    proxy.close()
    return {
        "mbps": got[0] / wall / 1e6,
        "cpu_s_per_gb_proxy_and_sink": cpu / (got[0] / 1e9) if got[0] else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--upstream", help="HOST:PORT of the S3 server")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default a free port)")
    p.add_argument(
        "--latency-ms", type=float, default=20.0, help="before each response's first byte"
    )
    p.add_argument(
        "--conn-mbps",
        type=float,
        default=80.0,
        help="per connection and direction, 10⁶ B/s; 0: no cap",
    )
    p.add_argument("--ready-file", type=Path, help="write the listening port here once ready")
    p.add_argument("--request-log", type=Path, help="append one line per request here")
    p.add_argument("--self-test", action="store_true", help="measure the proxy's own ceiling")
    args = p.parse_args(argv)
    if args.self_test:
        for key, value in self_test().items():
            print(f"{key}: {value:.2f}")
        return 0
    if not args.upstream:
        p.error("--upstream is required")
    if args.latency_ms < 0 or args.conn_mbps < 0:
        p.error("--latency-ms and --conn-mbps must be ≥ 0")
    try:
        proxy = Proxy(
            _address(args.listen), _address(args.upstream), args.latency_ms, args.conn_mbps
        )
    except (OSError, ValueError) as exc:
        print(f"netem: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 2

    def stop(_sig: int, _frame: object) -> None:
        proxy.running = False

    if args.request_log:
        proxy.request_log = open(args.request_log, "a", buffering=1)  # noqa: SIM115 (lines)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(str(proxy.address[1]))
        tmp.rename(args.ready_file)
    try:
        proxy.run()
    finally:
        print(f"netem: {proxy.requests} requests", file=sys.stderr)
        proxy.close()
        if proxy.request_log is not None:
            proxy.request_log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

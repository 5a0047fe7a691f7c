"""A fault-injecting HTTP proxy for S3 traffic, on loopback, for the reliability tests.

It sits between a client (a backend under test) and the S3 server and, per request,
at configured rates: answers 500 InternalError or 503 SlowDown without forwarding,
resets the connection (before forwarding, so the server never saw the request),
or delays the response. `down()` makes it refuse all traffic, as if the server were
gone; `up()` brings it back.

Faults are injected only *before* a request reaches the server, the way real S3's
front end fails: a request that got an error had no effect, so any retry is safe.

With `region=`, it also plays a bucket that lives in that region: a request signed for
another one is answered as S3 answers it (a 301 PermanentRedirect, or a 400
AuthorizationHeaderMalformed naming the region), with x-amz-bucket-region.

With `sse_c=SseCRules()` (ssec_rules.py) it enforces S3's SSE-C rules, which moto lacks.
`requests` keeps the latest requests with their headers (names lowercased).

`hold(match)` keeps the answers to the requests it matches from the client (the server
has answered them) until the hold is released: a GET of one version still in flight
while the object is replaced, in the order a test chooses.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ssec_rules import SseCRules

_ERROR_BODIES = {
    500: (
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    503: ("SlowDown", "Please reduce your request rate."),
}

# Hop-by-hop headers are the proxy's own business, not the server's.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class _Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 would hold back clients that open many connections at
    # once (SYNs beyond it wait a second to be retried).
    request_queue_size = 256


@dataclass
class FaultRates:
    """Probabilities per request (0.0 to 1.0), drawn independently in this order."""

    error500: float = 0.0
    slowdown503: float = 0.0
    reset: float = 0.0
    delay: float = 0.0
    delay_seconds: float = 0.5


@dataclass
class FaultStats:
    requests: int = 0
    forwarded: int = 0
    error500: int = 0
    slowdown503: int = 0
    reset: int = 0
    delayed: int = 0
    refused: int = 0
    wrong_region: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


@dataclass
class Hold:
    """Answers held back by the proxy: `reached` is set once one is waiting (its server
    answer in hand), and none goes on until `release()`."""

    match: Callable[[str, str, dict[str, str]], bool]
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


class FaultProxy:
    """`FaultProxy(upstream_url).start()`; point clients at `.url`; `.stop()` at the end."""

    def __init__(
        self,
        upstream_url: str,
        rates: FaultRates | None = None,
        seed: int = 0,
        region: str | None = None,
        region_answer: str = "redirect",
        sse_c: SseCRules | None = None,
    ):
        parts = urlsplit(upstream_url)
        self.region = region
        self.region_answer = region_answer  # "redirect" (301) or "wrong-region" (400)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rates = rates or FaultRates()
        self.stats = FaultStats()
        # The latest requests ("HEAD /bucket/key"), for tests that count requests to say
        # which ones they saw.
        self.seen: deque[str] = deque(maxlen=1000)
        # The bytes each ranged GET asked for, in the same order (for read-ahead tests).
        self.ranges: deque[int] = deque(maxlen=1000)
        self.spans: deque[tuple[int, int]] = deque(maxlen=1000)  # (first byte, last byte)
        self.requests: deque[tuple[str, str, dict[str, str]]] = deque(maxlen=1000)
        self.sse_c = sse_c
        self.holds: list[Hold] = []
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._down = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def down(self) -> None:
        """Refuse every request (connection reset) until `up()`."""
        self._down.set()

    def up(self) -> None:
        self._down.clear()

    def set_rates(self, rates: FaultRates) -> None:
        self.rates = rates

    def hold(self, match: Callable[[str, str, dict[str, str]], bool]) -> Hold:
        """Hold the answers to requests `match(command, path, headers)` accepts."""
        held = Hold(match)
        self.holds.append(held)
        return held

    def _draw(self) -> str | None:
        rates = self.rates
        with self._random_lock:
            for name in ("error500", "slowdown503", "reset", "delay"):
                if self._random.random() < getattr(rates, name):
                    return name
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the tests read the stats instead

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reset(self) -> None:
                # SO_LINGER 0: close sends RST, which clients see as "connection reset".
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.close_connection = True
                self.connection.close()

            def _error(self, status: int, code: str = "", extra: str = "", headers=()) -> None:
                code, message = (code, code) if code else _ERROR_BODIES[status]
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
                    "<RequestId>faultproxy</RequestId></Error>"
                ).encode()
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _wrong_region(self) -> bool:
                """Answer a request signed for another region than the bucket's."""
                if proxy.region is None:
                    return False
                auth = self.headers.get("Authorization", "")
                scope = auth.partition("Credential=")[2].split(",")[0].split("/")
                if len(scope) < 3 or scope[2] == proxy.region:
                    return False
                proxy.stats.count("wrong_region")
                where = [("x-amz-bucket-region", proxy.region)]
                if proxy.region_answer == "redirect":
                    self._error(301, "PermanentRedirect", headers=where)
                else:
                    region = f"<Region>{proxy.region}</Region>"
                    self._error(400, "AuthorizationHeaderMalformed", region, where)
                return True

            def _handle(self) -> None:
                proxy.stats.enter()
                try:
                    self._handle_one()
                finally:
                    proxy.stats.leave()

            def _handle_one(self) -> None:
                body = self._read_body()
                proxy.stats.count("requests")
                proxy.seen.append(f"{self.command} {self.path}")
                asked = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if asked:
                    proxy.ranges.append(int(asked[2]) - int(asked[1]) + 1)
                    proxy.spans.append((int(asked[1]), int(asked[2])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.requests.append((self.command, self.path, headers))
                if proxy._down.is_set():
                    proxy.stats.count("refused")
                    self._reset()
                    return
                if self._wrong_region():
                    return
                fault = proxy._draw()
                if fault == "error500":
                    proxy.stats.count("error500")
                    self._error(500)
                    return
                if fault == "slowdown503":
                    proxy.stats.count("slowdown503")
                    self._error(503)
                    return
                if fault == "reset":
                    proxy.stats.count("reset")
                    self._reset()
                    return
                if fault == "delay":
                    proxy.stats.count("delayed")
                    time.sleep(proxy.rates.delay_seconds)
                if proxy.sse_c is not None:
                    refusal = proxy.sse_c.check(self.command, self.path, headers)
                    if refusal:
                        self._error(*refusal)
                        return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                except OSError:
                    self._reset()
                    return
                finally:
                    conn.close()
                proxy.stats.count("forwarded")
                sent = {k.lower(): v for k, v in headers.items()}
                for held in proxy.holds:
                    if held.match(self.command, self.path, sent):
                        held.reached.set()
                        held.released.wait(60)
                extra: list[tuple[str, str]] = []
                if proxy.sse_c is not None:
                    extra = proxy.sse_c.answered(
                        self.command, self.path, sent, response.status, body, payload
                    )
                self.send_response(response.status, response.reason)
                for key, value in extra:
                    self.send_header(key, value)
                for key, value in response.getheaders():
                    # A HEAD answer's Content-Length is the object's size: pass it on.
                    if key.lower() in _HOP_BY_HOP or (
                        key.lower() == "content-length" and self.command != "HEAD"
                    ):
                        continue
                    self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler

"""HEAD requests on a lane of their own: keep-alive sockets, one selector thread, SigV4
signed here.

Why: `ls -l`, `find` and most lookups are one HEAD per name, and through the CRT a HEAD
costs about 0.5 ms of client CPU (0.25 ms in the CRT itself, as much again in the Python
around its callbacks): on 2 cores that bounds `ls -l` on a fast server at about 2,000
names a second, behind s3fs's libcurl. A HEAD has no body, so the whole exchange is a
request of a few hundred bytes and one header block; made here it costs about 0.1 ms
(bench/README.md has the measurements).

What the lane does: up to `max_connections` keep-alive connections (http, or https with
the mount's certificate checks); SigV4 with the credentials current at each request;
retries of 5xx, SlowDown, resets and requests that make no progress for
`readwrite_timeout`, with the CRT path's exponential backoff and within the same
`retries`; a region redirect followed (the engine switches its endpoint). Any other
answer but 200 and 404 (a 400 or 403, which may mean expired credentials) is handed back
to the caller, which sends the request again on the CRT path with its rules.

Everything runs on the lane's thread: submit() only queues a request and wakes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import os
import random
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from run_s3fs.endpoint import Endpoint
from run_s3fs.fs.engine.errors import (
    REDIRECT_STATUSES,
    S3Error,
    error_region,
    from_response,
    from_transport,
)

log = logging.getLogger("run_s3fs.fs.engine")

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_RETRIED_STATUSES = frozenset({500, 502, 503, 504})
_DNS_SECONDS = 30.0  # how long a name's addresses are used before resolving it again
_IDLE_SECONDS = 20.0  # an unused connection is closed after this long
_MAX_HEADER_BYTES = 256 * 1024
_SCAN_SECONDS = 0.05


class Keys(Protocol):
    access_key: str
    secret_key: str
    session_token: str | None


# What the caller learns: (status, headers, None) for an answer it takes (200 or 404),
# (0, None, error) for a failure after the retries, (0, None, None) to send it itself.
Done = Callable[[int, "dict[str, str] | None", "S3Error | None"], None]


class _Head:
    __slots__ = ("attempts", "done", "key", "redirected", "sent", "what")

    def __init__(self, key: str, done: Done) -> None:
        self.key = key
        self.done = done
        self.what = f"HEAD {key}"
        self.attempts = 0
        self.redirected = False
        self.sent = 0.0


class _Conn:
    __slots__ = ("buf", "events", "head", "host", "out", "reused", "since", "sock", "state")

    def __init__(self, sock: socket.socket, host: tuple[str, int, bool]) -> None:
        self.sock = sock
        self.host = host  # (connect host, port, tls): a connection serves one endpoint
        self.state = "connecting"
        self.head: _Head | None = None
        self.out = b""
        self.buf = b""
        self.reused = False
        self.since = time.monotonic()
        self.events = selectors.EVENT_WRITE  # what the selector waits for on it


class HeadLane:
    def __init__(
        self,
        endpoint: Callable[[], Endpoint],
        keys: Callable[[], Keys],
        switch_region: Callable[[str], bool],
        *,
        retries: int,
        connect_timeout: float,
        readwrite_timeout: float,
        max_connections: int,
        request_headers: tuple[tuple[str, str], ...] = (),
        verify_tls: bool = True,
        ca_file: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._keys = keys
        self._switch_region = switch_region
        self._retries = retries
        self._connect_timeout = connect_timeout
        self._timeout = readwrite_timeout
        self._max = max(1, max_connections)
        self._extra = tuple(sorted((n.lower(), v.strip()) for n, v in request_headers))
        self._verify_tls = verify_tls
        self._ca_file = ca_file
        self._tls: ssl.SSLContext | None = None
        self._queue: deque[_Head] = deque()  # submitted, not yet seen by the thread
        self._pending: deque[_Head] = deque()  # waiting for a connection
        self._later: list[tuple[float, _Head]] = []  # retries waiting out their backoff
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._addresses: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._signing_key: tuple[tuple[str, str, str], bytes] | None = None
        self._woken = False
        self._scanned = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._ident = 0
        self._start_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.stats = {"sent": 0, "handed_back": 0, "connections": 0}
        # Seconds from sending a HEAD to its answer, the last few: a HEAD has no body,
        # so the least of them is the link's round trip (queueing only adds to it).
        self._trips: deque[float] = deque(maxlen=32)
        self._trips_lock = threading.Lock()

    # --- the callers' side ------------------------------------------------------------

    def submit(self, key: str, done: Done) -> None:
        """Start a HEAD of `key`; `done` is called once, on the lane's thread (or on this
        one, handing the request back, once the lane is closed)."""
        if self._closed:
            done(0, None, None)
            return
        if self._thread is None:
            self._start()
        self._queue.append(_Head(key, done))
        # The lane's own thread (a callback asking for the next HEAD) drains the queue
        # before it waits again: no need to wake it.
        if not self._woken and threading.get_ident() != self._ident:
            self._woken = True
            # A full pipe: the thread is awake anyway; a closed one: it is gone.
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def round_trip(self) -> float | None:
        """The least time a recent HEAD took from request to answer, if any was made."""
        with self._trips_lock:
            return min(self._trips) if self._trips else None

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._thread is None or not self._thread.is_alive():
            self._release()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="s3-heads", daemon=True)
                thread.start()
                self._ident = thread.ident or 0
                self._thread = thread

    # --- the lane's thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed:
                for key, mask in self._sel.select(self._wait()):
                    if key.data is None:
                        # Emptied before the flag is cleared: a submit after this writes
                        # anew, and one before it is in the queue, drained below.
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                        self._woken = False
                    else:
                        self._event(key.data, mask)
                while self._queue:
                    self._pending.append(self._queue.popleft())
                self._tick()
                self._dispatch()
        except Exception:  # a bug here must not leave callers waiting for ever
            log.exception("the HEAD lane stopped")
        finally:
            self._closed = True
            for head in self._drain():
                head.done(0, None, None)
            self._release()

    def _drain(self) -> list[_Head]:
        heads = [*self._queue, *self._pending, *(h for _, h in self._later)]
        heads += [c.head for c in self._busy if c.head is not None]
        self._queue.clear()
        self._pending.clear()
        self._later.clear()
        for conn in self._busy:
            conn.head = None
        return heads

    def _release(self) -> None:
        for conn in [*self._idle, *self._busy]:
            self._close(conn)
        with contextlib.suppress(OSError, RuntimeError):
            self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _wait(self) -> float | None:
        if self._queue:
            return 0
        if self._busy or self._later:
            return 0.1
        return _IDLE_SECONDS if self._idle else None

    def _tick(self) -> None:
        """Retries whose backoff is over; requests that made no progress for too long;
        connections left unused."""
        now = time.monotonic()
        if self._later:
            due = [h for when, h in self._later if when <= now]
            if due:
                self._later = [(w, h) for w, h in self._later if w > now]
                self._pending.extend(due)
        # The scans below, over every connection, a few times a second rather than at
        # every answer: timeouts are seconds long.
        if now - self._scanned < _SCAN_SECONDS:
            return
        self._scanned = now
        for conn in list(self._busy):
            limit = self._connect_timeout if conn.state != "reading" else self._timeout
            if limit > 0 and now - conn.since > limit:
                head = conn.head
                self._close(conn)
                if head is not None:
                    if conn.state == "reading":
                        message = f"{head.what}: no progress for {self._timeout:g}s"
                        self._failed(head, S3Error(errno.EIO, message, "Timeout"))
                    else:
                        self._failed(head, from_transport(head.what, "Timeout", "timed out"))
        for conn in [c for c in self._idle if now - c.since > _IDLE_SECONDS]:
            self._close(conn)

    def _dispatch(self) -> None:
        while self._pending:
            endpoint = self._endpoint()
            target = (endpoint.connect_host, endpoint.port, endpoint.tls)
            conn = self._idle_for(target)
            if conn is None:
                if len(self._busy) + len(self._idle) >= self._max:
                    if not self._idle:
                        return
                    self._close(self._idle.pop(0))  # one for an endpoint no longer used
                head = self._pending.popleft()
                try:
                    conn = self._connect(target)
                except OSError as e:
                    self._failed(head, from_transport(head.what, type(e).__name__, str(e)))
                    continue
            else:
                head = self._pending.popleft()
            self._send(conn, head, endpoint)

    def _idle_for(self, target: tuple[str, int, bool]) -> _Conn | None:
        for i in range(len(self._idle) - 1, -1, -1):  # the most recently used first
            if self._idle[i].host == target:
                return self._idle.pop(i)
        return None

    def _connect(self, target: tuple[str, int, bool]) -> _Conn:
        host, port, _ = target
        family, kind, proto, _, address = self._address(host, port)
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, os.strerror(err))
        self.stats["connections"] += 1
        conn = _Conn(sock, target)
        self._sel.register(sock, selectors.EVENT_WRITE, conn)
        return conn

    def _address(self, host: str, port: int) -> Any:
        now = time.monotonic()
        cached = self._addresses.get((host, port))
        if cached is None or now - cached[0] > _DNS_SECONDS:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            cached = (now, infos)
            self._addresses[(host, port)] = cached
        return random.choice(cached[1])  # S3 names many addresses: spread over them

    def _send(self, conn: _Conn, head: _Head, endpoint: Endpoint) -> None:
        try:
            keys = self._keys()
        except Exception as e:  # expired, and no new ones to be had
            if conn.state == "idle":
                self._park(conn)
            else:
                self._close(conn)
            message = f"{head.what}: no valid credentials: {e}"
            head.done(0, None, S3Error(errno.EIO, message, "NoCredentials"))
            return
        head.attempts += 1
        conn.head = head
        conn.out = self._request(endpoint, head.key, keys)
        conn.buf = b""
        conn.since = head.sent = time.monotonic()
        self._busy.add(conn)
        self.stats["sent"] += 1
        if conn.state == "idle":
            conn.state = "sending"
            self._write(conn)  # a few hundred bytes: sent at once, no wait for EVENT_WRITE

    def _want(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            self._sel.modify(conn.sock, events, conn)
            conn.events = events

    def _park(self, conn: _Conn) -> None:
        conn.head = None
        conn.state = "idle"
        conn.since = time.monotonic()
        conn.reused = True
        self._busy.discard(conn)
        self._idle.append(conn)
        # Readable while idle means the server closed it (or broke the protocol).
        self._want(conn, selectors.EVENT_READ)

    def _event(self, conn: _Conn, mask: int) -> None:
        try:
            if conn.state == "idle":
                self._close(conn)
            elif conn.state == "connecting":
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                if conn.host[2]:
                    conn.sock = self._context().wrap_socket(
                        conn.sock, server_hostname=conn.host[0], do_handshake_on_connect=False
                    )
                    self._sel.unregister(conn.sock.fileno())
                    self._sel.register(conn.sock, selectors.EVENT_WRITE, conn)
                    conn.events = selectors.EVENT_WRITE
                    conn.state = "handshake"
                    self._handshake(conn)
                else:
                    conn.state = "sending"
                    self._write(conn)
            elif conn.state == "handshake":
                self._handshake(conn)
            elif conn.state == "sending":
                self._write(conn)
            else:
                self._read(conn)
        except ssl.SSLCertVerificationError as e:
            self._broken(conn, e, retry=False)
        except (OSError, ssl.SSLError) as e:
            self._broken(conn, e, retry=True)

    def _handshake(self, conn: _Conn) -> None:
        try:
            conn.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return
        conn.state = "sending"
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        conn.out = conn.out[sent:]
        conn.since = time.monotonic()
        if conn.out:
            self._want(conn, selectors.EVENT_WRITE)
            return
        conn.state = "reading"
        self._want(conn, selectors.EVENT_READ)

    def _read(self, conn: _Conn) -> None:
        while True:
            try:
                chunk = conn.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
            conn.buf += chunk
            conn.since = time.monotonic()
            end = conn.buf.find(b"\r\n\r\n")
            if end >= 0:
                self._answered(conn, conn.buf[:end])
                return
            if len(conn.buf) > _MAX_HEADER_BYTES:
                raise ConnectionError("an answer's headers without an end")
            if not isinstance(conn.sock, ssl.SSLSocket) or not conn.sock.pending():
                return

    def _answered(self, conn: _Conn, block: bytes) -> None:
        head = conn.head
        assert head is not None
        try:
            lines = block.decode("utf-8").split("\r\n")
            version, status_text = lines[0].split(" ", 2)[:2]
            status = int(status_text)
        except (UnicodeDecodeError, ValueError):
            # Not for us to judge (a header not in UTF-8, say): the CRT path decides.
            self._close(conn)
            self._hand_back(head)
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if keep:
            self._park(conn)
        else:
            self._close(conn)
        if status in (200, 404):
            with self._trips_lock:
                self._trips.append(time.monotonic() - head.sent)
            head.done(status, headers, None)
        elif status in _RETRIED_STATUSES:
            self._failed(head, from_response(head.what, status, None))
        elif status in REDIRECT_STATUSES and not head.redirected:
            region = error_region(None, headers)
            if region and region != self._endpoint().region and self._switch_region(region):
                head.redirected = True
                head.attempts -= 1  # told where to go: not a failed attempt
                self._pending.append(head)
            else:
                self._hand_back(head)
        else:
            self._hand_back(head)

    def _hand_back(self, head: _Head) -> None:
        self.stats["handed_back"] += 1
        head.done(0, None, None)

    def _broken(self, conn: _Conn, error: BaseException, retry: bool) -> None:
        head, reused, state = conn.head, conn.reused, conn.state
        self._close(conn)
        if head is None:
            return
        if retry and reused and state in ("sending", "reading") and not conn.buf:
            # A kept-alive connection the server had closed: not the request's fault.
            head.attempts -= 1
            self._pending.append(head)
            return
        name = type(error).__name__
        failure = from_transport(head.what, name, str(error) or name)
        if retry:
            self._failed(head, failure)
        else:
            head.done(0, None, failure)

    def _failed(self, head: _Head, error: S3Error) -> None:
        """One attempt failed in a way worth trying again, within `retries`."""
        if head.attempts > self._retries:
            head.done(0, None, error)
            return
        log.info("%s: %s; trying again (attempt %d)", head.what, error, head.attempts + 1)
        backoff = min(10.0, 0.1 * 2 ** (head.attempts - 1)) * random.random()
        self._later.append((time.monotonic() + backoff, head))

    def _close(self, conn: _Conn) -> None:
        self._busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        with contextlib.suppress(KeyError, ValueError, OSError, RuntimeError):
            self._sel.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = ssl.create_default_context(cafile=self._ca_file)
            if not self._verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls

    # --- SigV4 ------------------------------------------------------------------------

    def _request(self, endpoint: Endpoint, key: str, keys: Keys) -> bytes:
        path = endpoint.path(key)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        day = stamp[:8]
        headers = [
            ("host", endpoint.host),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", stamp),
        ]
        if keys.session_token:
            headers.append(("x-amz-security-token", keys.session_token))
        if self._extra:
            headers = sorted([*headers, *self._extra])
        names = ";".join(n for n, _ in headers)
        canonical = "\n".join(
            ["HEAD", path, "", *(f"{n}:{v}" for n, v in headers), "", names, EMPTY_SHA256]
        )
        scope = f"{day}/{endpoint.region}/s3/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                stamp,
                scope,
                hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest(),
            ]
        )
        signature = hmac.new(
            self._signing(keys.secret_key, day, endpoint.region),
            to_sign.encode(),
            hashlib.sha256,
        ).hexdigest()
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={keys.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        lines = [f"HEAD {path} HTTP/1.1", *(f"{n}: {v}" for n, v in headers)]
        lines.append(f"authorization: {authorization}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    def _signing(self, secret: str, day: str, region: str) -> bytes:
        cached = self._signing_key
        # The secret is part of what the key is cached under, so refreshed credentials
        # get a key of their own; hashed, so that no copy of it sits here.
        ident = (hashlib.sha256(secret.encode()).hexdigest(), day, region)
        if cached is not None and cached[0] == ident:
            return cached[1]
        key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
        for part in (region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._signing_key = (ident, key)
        return key

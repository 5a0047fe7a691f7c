"""The engine on the AWS Common Runtime's S3 client (PyPI awscrt: aws-c-s3, the client
under mountpoint-s3).

Why this and not botocore: botocore spends ~2 ms of CPU per request under the GIL, which
caps a 2-core machine at ~450 requests/s whatever the parallelism; the CRT signs, sends
and parses in C on its own event-loop threads, ~0.25 ms per request, and moves bodies
without holding the GIL (bench/README.md has the comparison). Requests are asynchronous:
many HEADs or ranged GETs can be in flight from one thread.

What the CRT does: connections (keep-alive, pooled per host), SigV4, retries of 5xx,
SlowDown and broken connections with exponential backoff, and, for uploads from a file,
a parallel multipart upload (aborted if it fails). What it does not do, done here:
  - addressing: path-style or virtual-hosted requests (run_s3fs.endpoint);
  - a region redirect: S3 names the bucket's region (301 + x-amz-bucket-region, or a
    wrong-region AuthorizationHeaderMalformed): re-signed for it and sent again;
  - `readwrite_timeout`: a watchdog cancels a request that made no progress for that
    long, and it is retried within the same `retries` budget (the CRT itself gives up
    on a connection that moves nothing for about 30 s);
  - errors → S3Error with an errno (errors.py); keys and secrets never in a message;
  - SSE-C: the customer key each object needs, tried and remembered (sse.py), sent on
    every request that reads or writes the object's data, copies included.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from awscrt import auth, http, s3
from awscrt import io as crt_io
from awscrt.exceptions import AwsCrtError

from run_s3fs.endpoint import Endpoint, resolve
from run_s3fs.endpoint import quote_query as _q
from run_s3fs.fs.engine import xml
from run_s3fs.fs.engine.errors import (
    REDIRECT_STATUSES,
    S3Error,
    error_code,
    error_region,
    from_response,
    from_transport,
)
from run_s3fs.fs.engine.futures import then
from run_s3fs.fs.engine.heads import HeadLane
from run_s3fs.fs.engine.multipart import MIN_PART, MultipartUpload
from run_s3fs.fs.engine.sse import MD5_HEADER, CustomerKey, CustomerKeys
from run_s3fs.fs.engine.types import MAX_PARTS, Body, ListEntry, Listing, ObjectInfo, Page

log = logging.getLogger("run_s3fs.fs.engine")

MIB = 1024 * 1024
META = "x-amz-meta-"
DEFAULT = s3.S3RequestType.DEFAULT
_KEY_MEMORY = 100_000  # objects whose SSE-C key is remembered (then forgotten at once)
Headers = list[tuple[str, str]]


class Answer:
    """A finished exchange: status, headers (names lowercased), body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes | bytearray) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Budget:
    """Bytes that may be held at once. A taker larger than the whole budget waits until
    nothing else is held, so it waits for others, never forever."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def take(self, n: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n

    def give(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


def _info(key: str, headers: dict[str, str], size: int | None = None) -> ObjectInfo:
    modified = headers.get("last-modified")
    try:
        when = parsedate_to_datetime(modified) if modified else None
    except (TypeError, ValueError):
        when = None
    return ObjectInfo(
        key=key,
        size=int(headers.get("content-length") or 0) if size is None else size,
        last_modified=when,
        etag=headers.get("etag", ""),
        content_type=headers.get("content-type", ""),
        metadata={k[len(META) :]: v for k, v in headers.items() if k.startswith(META)},
        storage_class=headers.get("x-amz-storage-class", ""),
        sse=headers.get("x-amz-server-side-encryption", ""),
        kms_key_id=headers.get("x-amz-server-side-encryption-aws-kms-key-id", ""),
    )


class Link:
    """What ranged GETs show of the link to the server: the wait for a first byte and
    what one connection carries.

    The CRT hands over a GET's headers and body only once the whole part has arrived,
    so neither can be timed directly: both come from a least-squares line through the
    recent GETs' (size, seconds) pairs, whose slope is 1/rate and intercept the wait.
    Reads make GETs of many sizes (a kernel read, blocks of a growing window).

    A block should be big enough that the wait is a small part of its transfer (4 x the
    bandwidth-delay product), and small enough that the window holds as many GETs as it
    takes to fill the pipe: two where each request costs the server much (few large
    GETs), eight of 8 MiB on a local server or an S3-like link."""

    TARGET = 1.5e9  # bytes/s worth aiming at: about what FUSE streams here
    SAMPLES = 32
    # A wait for the first byte longer than this is a server building each answer (moto
    # copies the whole object for every ranged GET), not a network: more GETs in flight
    # would only add to its work, so few large ones.
    BUSY_SERVER = 0.1
    # The least a block of a grown window is (mountpoint-s3's part size): a quick
    # server does not need larger ones, but many small GETs cost CPU at both ends.
    PART = 8 * MIB
    MOST_IN_FLIGHT = 16
    # A window is cut in no more blocks than this, at least PART each where it is that
    # large (64 MiB: eight of 8 MiB, mountpoint-s3's parts). Sixteen of 4 MiB read a
    # 64 MiB object no faster on the S3-like link (the read path alone: 286-309 MB/s
    # against 296-326), twice the GETs for a server that charges per request (moto:
    # 64 MB/s against 92-105) or bills them (S3).
    WINDOW_BLOCKS = 8
    CROWD = 4  # requests in flight past which a GET's time is not observed
    NETWORK_WAIT = 0.005  # seconds to a first byte: past this, a network, not loopback

    def __init__(self, round_trip: Callable[[], float | None] = lambda: None) -> None:
        self.ttfb = 0.02  # seconds: S3's order of magnitude until measured
        self.rate = 80e6  # bytes/s per connection
        # The least time a HEAD took (no body: all of it is the wait), where HEADs are
        # timed; GETs of one size, several in flight, cannot tell wait from transfer.
        self.round_trip = round_trip
        self._seen: deque[tuple[int, float]] = deque(maxlen=self.SAMPLES)
        self._lock = threading.Lock()

    def observe(self, seconds: float, size: int) -> None:
        if size < 64 * 1024 or seconds <= 0:
            return
        with self._lock:
            self._seen.append((size, seconds))
            self._fit()

    def _fit(self) -> None:
        n = len(self._seen)
        if n < 4:
            # Too few for a line: the time past what the assumed rate explains is the
            # wait (one GET of a server that builds each answer slowly says so at once).
            waits = [t - size / self.rate for size, t in self._seen]
            self.ttfb = max(0.0002, sum(waits) / n)
            return
        mean_s = sum(s for s, _ in self._seen) / n
        mean_t = sum(t for _, t in self._seen) / n
        sizes = sorted(s for s, _ in self._seen)
        if sizes[3 * n // 4] < 2 * sizes[n // 4]:
            # Mostly of one size (a random reader's pieces, a window's blocks): a line
            # through them would rest on the few of another size, and one of those that
            # happened to come quickly would make every connection look fast. Keep the
            # wait, and credit the rest of the time to the transfer.
            spent = max(mean_t - self.ttfb, mean_t / 10)
            self.rate = mean_s / spent
            return
        var = sum((s - mean_s) ** 2 for s, _ in self._seen)
        slope = sum((s - mean_s) * (t - mean_t) for s, t in self._seen) / var
        if slope <= 0:
            return  # noise (queueing) hides the transfer: keep what we had
        self.rate = 1 / slope
        self.ttfb = max(0.0002, mean_t - slope * mean_s)

    @property
    def samples(self) -> int:
        """How many GETs the estimate rests on."""
        with self._lock:
            return len(self._seen)

    @property
    def network(self) -> bool:
        """A GET waits for its first byte long enough (NETWORK_WAIT) that a round trip
        saved is worth fetching more at once: a network, or a busy server."""
        return self.busy or self.ttfb >= self.NETWORK_WAIT

    @property
    def busy(self) -> bool:
        """Each request costs the server much (see BUSY_SERVER): ask for few, large ones."""
        return self.ttfb > self.BUSY_SERVER

    def wait(self) -> float:
        """Seconds a request waits beyond its transfer: the least recent HEAD's time
        (no body), else what the GETs show; on a server that builds each GET's answer
        slowly (busy) the GETs' wait, which a HEAD does not show."""
        trip = None if self.busy else self.round_trip()
        return self.ttfb if trip is None else trip

    def pieces(self, size: int) -> int:
        """How many GETs in parallel fetch `size` bytes soonest: one where the wait for
        a first byte dominates (a local server that builds each answer slowly), up to
        four where one connection's transfer does (S3: 1 MiB takes 13 ms after a 20 ms
        wait; four quarter-GETs arrive in 23 ms instead of 33). One on a local server,
        which a HEAD answered within NETWORK_WAIT shows: there the connections share the
        CPU, and pieces only add to its work (rclone serve s3 on loopback: 64 random
        1 MiB reads took 5.9-7.0 ms each in one GET, 9.5-10.8 in four, and the figures
        of GETs side by side put its wait at 2-8 ms, where a HEAD took 0.6)."""
        trip = self.round_trip()
        if trip is not None and trip < self.NETWORK_WAIT:
            return 1
        transfer = size / max(self.rate, 1.0)
        return max(1, min(4, size // (256 * 1024), math.ceil(transfer / max(self.ttfb / 4, 1e-4))))

    def transfer_seconds(self, size: int) -> float:
        """About how long the bytes of a read of `size` take after its wait, in
        `pieces` GETs; nothing on a busy server (there the wait is all of it)."""
        return 0.0 if self.busy else size / (max(self.rate, 1.0) * self.pieces(size))

    def in_flight(self) -> int:
        """How many GETs are worth having in flight at once (a file's regions, through
        the backlog; a read-ahead window's blocks are at most WINDOW_BLOCKS of them): as
        many as it takes to reach TARGET at one connection's rate. On a local server a
        connection's rate is the CPU's, and more GETs only add to its work."""
        if self.busy:
            return 2
        most = self.MOST_IN_FLIGHT if self.network else self.MOST_IN_FLIGHT // 2
        return min(most, max(2, math.ceil(self.TARGET / max(self.rate, 1.0))))

    def window_gets(self) -> int:
        """How many of a read-ahead window's blocks to have in flight: all of them over
        a network; two on loopback, where GETs in flight share the server's CPU and the
        block the reader waits for comes soonest with few beside it."""
        return self.WINDOW_BLOCKS if self.network and not self.busy else 2

    def fetch_seconds(self, size: int, window: int) -> float:
        """About how long `size` bytes take in a `window`'s blocks, `in_flight` at a
        time: each round a block's wait and transfer (on a busy server, the wait: what
        the transfer of one size adds there is lost in the noise of its work), and never
        faster than TARGET. On loopback the connections share the CPU, so the whole
        comes at about one connection's rate (measured on rclone serve s3: 256 MiB in
        0.5-0.6 s, where sixteen connections' rates would say 0.18)."""
        if not self.network:
            return max(size / max(self.rate, 1.0), size / self.TARGET)
        part = self.part(window)
        rounds = math.ceil(size / (part * self.in_flight()))
        each = self.ttfb if self.busy else self.ttfb + part / max(self.rate, 1.0)
        return max(rounds * each, size / self.TARGET)

    def part(self, window: int) -> int:
        """A block size for a read-ahead `window`: a power of two, at least 1 MiB. On a
        busy server as large as the window allows, whatever the rate: there the time
        past a GET's wait is the server's work, not a transfer (moto: 0.27-0.4 s a GET
        whatever its size, which read as a few MB/s and made 8 MiB blocks, 16 rounds
        for a 256 MiB file instead of 4)."""
        want = self.MOST_IN_FLIGHT * self.PART if self.busy else 4 * self.ttfb * self.rate
        want = max(want, self.PART)
        cap = window // min(self.in_flight(), self.WINDOW_BLOCKS)
        part = MIB
        while part < want and part * 2 <= cap:
            part *= 2
        return part


class _Exchange:
    """One logical request, attempted until it succeeds, fails for good, or runs out of
    the retries the CRT leaves to us (our timeouts, a region redirect)."""

    __slots__ = (
        "attempts",
        "base",
        "body",
        "creds_retried",
        "crowded",
        "engine",
        "first_byte",
        "future",
        "headers",
        "into",
        "kind",
        "method",
        "observe",
        "op",
        "options",
        "path_of",
        "payload",
        "progress",
        "request",
        "response_headers",
        "sent",
        "signed_with",
        "status",
        "timed_out",
        "what",
    )

    def __init__(
        self,
        engine: CrtEngine,
        what: str,
        method: str,
        path_of: Callable[[Endpoint], str],
        headers: list[tuple[str, str]],
        payload: bytes | None,
        kind: s3.S3RequestType,
        op: str | None,
        into: bytearray | None,
        base: int,
        options: dict[str, Any],
        observe: int = 0,
    ) -> None:
        self.engine = engine
        self.base = base
        self.what = what
        self.method = method
        self.path_of = path_of
        self.headers = headers
        self.payload = payload
        self.kind = kind
        self.op = op
        self.into = into
        self.options = options
        # A body this big tells the link's first-byte wait and rate (Link.observe).
        self.observe = observe or (len(into) if into is not None else 0)
        self.future: Future[Answer] = Future()
        self.attempts = 0
        self.creds_retried = False
        self.request: s3.S3Request | None = None
        self.crowded = False

    def start(self) -> None:
        self.attempts += 1
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.body = bytearray() if self.into is None else self.into
        self.timed_out = False
        self.progress = self.sent = time.monotonic()
        self.first_byte = 0.0
        engine = self.engine
        source = engine.credentials_source
        try:
            self.signed_with = source.get() if source is not None else None
        except Exception as e:  # expired, and no new ones to be had (the source said why)
            self.future.set_exception(
                S3Error(errno.EIO, f"{self.what}: no valid credentials: {e}", "NoCredentials")
            )
            return
        endpoint = engine.endpoint
        headers = http.HttpHeaders([("host", endpoint.host), *self.headers])
        stream = None
        if self.payload is not None:
            headers.set("content-length", str(len(self.payload)))
            stream = io.BytesIO(self.payload)
        request = http.HttpRequest(self.method, self.path_of(endpoint), headers, stream)
        try:
            self.request = engine.client.make_request(
                type=self.kind,
                operation_name=self.op,
                request=request,
                signing_config=engine.signing,
                on_headers=self._on_headers,
                on_body=None
                if self.kind == s3.S3RequestType.PUT_OBJECT or "recv_filepath" in self.options
                else self._on_body,
                on_progress=self._on_progress,
                **self.options,
            )
        except Exception as e:  # refused before it was sent (a closed client, bad input)
            self.future.set_exception(from_transport(self.what, type(e).__name__, str(e)))
            return
        # A GET sent among many waits in the CRT's queue and shares the CPU: its time says
        # little of the link, and taken as the server's wait it made the link look like
        # a slow server (few, huge GETs) in the middle of a fast read.
        self.crowded = engine.watch(self) >= Link.CROWD
        self.request.finished_future.add_done_callback(self._finished)

    def _on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.progress = self.first_byte = time.monotonic()
        self.status = status_code
        self.response_headers = {k.lower(): v for k, v in headers}

    def _on_body(self, chunk: bytes, offset: int, **_: Any) -> None:
        self.progress = time.monotonic()
        if self.into is None:
            self.body += chunk
        else:
            start = offset - self.base
            self.body[start : start + len(chunk)] = chunk

    def _on_progress(self, progress: int, **_: Any) -> None:
        self.progress = time.monotonic()

    def _finished(self, crt_future: Future[None]) -> None:
        self.engine.unwatch(self)
        # Dropped now: the CRT frees a request (and, in the end, its client) only once
        # nothing refers to it, and a reference cycle would wait for the collector.
        self.request = None
        error = crt_future.exception()
        if error is None:
            if self.observe and self.attempts == 1 and not self.crowded:
                self.engine.link.observe(time.monotonic() - self.sent, self.observe)
            self.future.set_result(Answer(self.status, self.response_headers, self.body))
            return
        retry = self._retry_for(error)
        if retry:
            log.info("%s: %s; trying again (attempt %d)", self.what, retry, self.attempts + 1)
            self.start()
            return
        self.future.set_exception(self._error(error))

    def _retry_for(self, error: BaseException) -> str | None:
        engine = self.engine
        if self.timed_out:
            if self.attempts <= engine.settings.retries:
                return f"no progress for {engine.settings.readwrite_timeout:g}s"
            return None
        status = getattr(error, "status_code", None)
        source = engine.credentials_source
        if source is not None and not self.creds_retried and _refused_credentials(error):
            # Temporary credentials that S3 calls expired (or no longer knows): once, with
            # new ones, which the source fetches now if it has none newer.
            self.creds_retried = True
            if source.invalidate(self.signed_with):
                return "the credentials were refused as expired; trying with fresh ones"
        if status in REDIRECT_STATUSES and self.attempts <= 2:
            headers = {k.lower(): v for k, v in (getattr(error, "headers", None) or [])}
            region = error_region(getattr(error, "body", None), headers)
            if region and region != engine.endpoint.region and engine.switch_region(region):
                return f"the bucket is in {region}"
        return None

    def _error(self, error: BaseException) -> S3Error:
        if self.timed_out:
            timeout = self.engine.settings.readwrite_timeout
            return S3Error(errno.EIO, f"{self.what}: no progress for {timeout:g}s", "Timeout")
        status = getattr(error, "status_code", None)
        if status:
            return from_response(self.what, status, getattr(error, "body", None))
        if isinstance(error, AwsCrtError):
            return from_transport(self.what, error.name, error.message)
        return from_transport(self.what, type(error).__name__, str(error))


class CrtEngine:
    def __init__(self, settings: Any, credentials: Any) -> None:
        self.settings = settings
        self._upload_budget = _Budget(settings.upload_buffer)
        self.bucket = settings.bucket
        self.endpoint = resolve(settings.url, settings.bucket, settings.region, settings.path_style)
        self._provider = _provider(credentials)
        # A source of temporary credentials, told when S3 refuses them (see _retry_for).
        self.credentials_source = (
            credentials
            if hasattr(credentials, "invalidate") and getattr(credentials, "fixed", None) is None
            else None
        )
        self.signing = s3.create_default_s3_signing_config(
            region=self.endpoint.region, credential_provider=self._provider
        )
        bootstrap = _bootstrap()
        tls = None
        if self.endpoint.tls:
            context = crt_io.TlsContextOptions()
            if settings.ca_file:
                context.override_default_trust_store_from_path(None, settings.ca_file)
            context.verify_peer = settings.verify_tls
            tls = crt_io.TlsConnectionOptions(crt_io.ClientTlsContext(context))
        # The CRT sizes its connection pool from a throughput target: about 10
        # connections per 4 Gb/s (measured: 10 → ~30 in flight, 100 → ~250).
        target = max(10.0, settings.max_connections * 0.4)
        self.client = s3.S3Client(
            bootstrap=bootstrap,
            region=self.endpoint.region,
            tls_mode=s3.S3RequestTlsMode.ENABLED if tls else s3.S3RequestTlsMode.DISABLED,
            tls_connection_options=tls,
            signing_config=self.signing,
            part_size=settings.part_size,
            multipart_upload_threshold=settings.multipart_threshold,
            throughput_target_gbps=target,
            memory_limit=max(1024 * MIB, 4 * settings.parallel_count * settings.part_size),
            retry_config=s3.S3RetryConfig(
                max_retries=settings.retries,
                backoff_scale_factor_ms=100,
                max_backoff_secs=10,
                retry_mode=s3.S3RetryMode.EXPONENTIAL_BACKOFF
                if settings.retries
                else s3.S3RetryMode.NONE,
            ),
            connect_timeout_ms=max(1, int(settings.connect_timeout * 1000)),
        )
        self.link = Link(self._head_round_trip)
        # SSE-C: the MD5 of the key each object was last seen with ("": none).
        self._keys: CustomerKeys | None = getattr(settings, "customer_keys", None)
        self._key_of: dict[str, str] = {}
        written = {name.lower() for name, _ in settings.write_headers}
        self._sse_configured = "x-amz-server-side-encryption" in written
        self._class_configured = "x-amz-storage-class" in written
        self._region_lock = threading.Lock()
        # HEADs on a lane of their own (heads.py), but with SSE-C: a HEAD of an SSE-C
        # object needs its key, tried in turn (_with_key).
        self._lane: HeadLane | None = None
        if self._keys is None and getattr(settings, "head_lane", True):
            self._lane = HeadLane(
                lambda: self.endpoint,
                _keys_of(credentials),
                self.switch_region,
                retries=settings.retries,
                connect_timeout=settings.connect_timeout,
                readwrite_timeout=settings.readwrite_timeout,
                max_connections=settings.max_connections,
                request_headers=settings.request_headers,
                verify_tls=settings.verify_tls,
                ca_file=settings.ca_file,
            )
        self._active: dict[int, _Exchange] = {}
        self._active_lock = threading.Lock()
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None
        if settings.readwrite_timeout > 0:
            self._watchdog = threading.Thread(target=self._watch_loop, name="s3-watchdog")
            self._watchdog.daemon = True
            self._watchdog.start()

    # --- plumbing ---------------------------------------------------------------------

    def switch_region(self, region: str) -> bool:
        """The bucket lives in `region`: sign (and, on AWS, address) for it from now on."""
        with self._region_lock:
            if region == self.endpoint.region:
                return True
            log.warning("bucket %s is in region %s; using it", self.bucket, region)
            s = self.settings
            self.endpoint = self.endpoint.with_region(region, s.url, s.bucket, s.path_style)
            self.signing = s3.create_default_s3_signing_config(
                region=region, credential_provider=self._provider
            )
            return True

    def costly_requests(self) -> bool:
        """Whether the server's cost per request is high (Link.busy)."""
        return self.link.busy

    def window_gets(self) -> int:
        """How many of a read-ahead window's GETs to have in flight (Link.window_gets)."""
        return self.link.window_gets()

    def suggested_pieces(self, size: int) -> int:
        """In how many ranged GETs to fetch `size` bytes a reader waits for (see Link)."""
        return self.link.pieces(size)

    def suggested_part(self, window: int) -> int:
        """The size of a ranged GET for a read-ahead window on this link (see Link)."""
        return self.link.part(window)

    def _head_round_trip(self) -> float | None:
        return None if self._lane is None else self._lane.round_trip()

    def first_byte_wait(self) -> float:
        """Seconds a request waits beyond its transfer (Link.wait)."""
        return self.link.wait()

    def read_seconds(self, size: int) -> float:
        """About how long a read of `size` bytes that nothing holds takes: its wait, and
        its transfer in `suggested_pieces` GETs (see Link)."""
        return self.first_byte_wait() + self.link.transfer_seconds(size)

    def fetch_seconds(self, size: int, window: int) -> float:
        """About how long `size` bytes take to fetch with a read-ahead `window` (see Link)."""
        return self.link.fetch_seconds(size, window)

    def watch(self, exchange: _Exchange) -> int:
        """Track `exchange` (for the watchdog); returns how many others are in flight."""
        with self._active_lock:
            self._active[id(exchange)] = exchange
            return len(self._active) - 1

    def unwatch(self, exchange: _Exchange) -> None:
        with self._active_lock:
            self._active.pop(id(exchange), None)

    def _watch_loop(self) -> None:
        timeout = self.settings.readwrite_timeout
        while not self._closed.wait(min(1.0, max(timeout / 4, 0.05))):
            now = time.monotonic()
            with self._active_lock:
                stalled = [e for e in self._active.values() if now - e.progress > timeout]
            for exchange in stalled:
                exchange.timed_out = True
                if exchange.request is not None:
                    exchange.request.cancel()

    def _learn(self, key: str, md5: str) -> None:
        if self._keys is None:
            return
        if len(self._key_of) >= _KEY_MEMORY:
            self._key_of.clear()
        self._key_of[key] = md5

    def _with_key(
        self, key: str, send: Callable[[Headers, bool], Future[Answer]]
    ) -> Future[Answer]:
        """`send(extra headers, guess)` for a read of `key`, with the SSE-C key it needs:
        the one it took before, else each in turn (S3 answers 400 or 403 to a wrong
        guess; `guess` says another key is left to try). When every key fails the error
        is a 403 if there was one (a key this mount lacks)."""
        keys = self._keys
        if keys is None:
            return send([], False)
        order = keys.read_order(self._key_of.get(key))
        out: Future[Answer] = Future()
        errors: list[BaseException] = []

        def attempt(i: int) -> None:
            md5 = order[i]
            guess = i + 1 < len(order)
            send(keys.headers_for(md5), guess).add_done_callback(lambda f: done(f, i, md5))

        def done(f: Future[Answer], i: int, md5: str) -> None:
            error = f.exception()
            if error is None:
                answer = f.result()
                self._learn(key, answer.headers.get(MD5_HEADER, md5))
                out.set_result(answer)
                return
            errors.append(error)
            if getattr(error, "status", None) not in (400, 403):
                out.set_exception(error)
            elif i + 1 < len(order):
                attempt(i + 1)
            else:
                denied = [e for e in errors if getattr(e, "status", None) == 403]
                out.set_exception(denied[0] if denied else errors[0])

        attempt(0)
        return out

    def _source_key(self, src: str) -> str:
        """The MD5 of the SSE-C key `src` is stored with ("": none), by a HEAD if unknown."""
        if self._keys is None:
            return ""
        if src not in self._key_of:
            self.head(src)
        return self._key_of.get(src, "")

    def _copy_key(self, src_md5: str) -> CustomerKey | None:
        """The SSE-C key a copy is written with: the mount's if it encrypts with one;
        else, where no other encryption is asked for, the source's (a rename or chmod of
        an SSE-C object keeps it encrypted); else none."""
        keys = self._keys
        if keys is None:
            return None
        if keys.encrypt:
            return keys.write_key
        if src_md5 and not self._sse_configured:
            return keys.by_md5(src_md5)
        return None

    def _kept(self, source: ObjectInfo | None, sse_c: CustomerKey | None) -> Headers:
        """What a copy keeps of how `source` is stored where the mount sets nothing of
        its own: S3 would give it STANDARD and the bucket's default encryption."""
        if source is None:
            return []
        kept = []
        if not self._class_configured and source.storage_class not in ("", "STANDARD"):
            kept.append(("x-amz-storage-class", source.storage_class))
        if not self._sse_configured and sse_c is None and source.sse in ("AES256", "aws:kms"):
            kept.append(("x-amz-server-side-encryption", source.sse))
            if source.sse == "aws:kms" and source.kms_key_id:
                kept.append(("x-amz-server-side-encryption-aws-kms-key-id", source.kms_key_id))
        return kept

    def _write_key(self) -> CustomerKey | None:
        return self._keys.write_key if self._keys is not None else None

    def _send(
        self,
        what: str,
        method: str,
        key: str | None,
        query: str = "",
        headers: list[tuple[str, str]] | None = None,
        payload: bytes | None = None,
        kind: s3.S3RequestType = DEFAULT,
        op: str | None = None,
        into: bytearray | None = None,
        base: int = 0,
        observe: int = 0,
        key_guess: bool = False,
        **options: Any,
    ) -> Future[Answer]:
        """Start one exchange; its future holds the Answer or raises S3Error. `key` None
        addresses the bucket itself; a body goes into `into` (at its offset less `base`)
        when given. `options` go to the CRT as they are."""

        def path_of(endpoint: Endpoint) -> str:
            path = endpoint.path(key) if key is not None else (endpoint.base_path or "/")
            return f"{path}?{query}" if query else path

        all_headers = [*self.settings.request_headers, *(headers or ())]
        exchange = _Exchange(
            self,
            what,
            method,
            path_of,
            all_headers,
            payload,
            kind,
            op,
            into,
            base,
            options,
            observe,
        )
        # A wrong SSE-C key is answered 400/403 too (with no body to a HEAD): not a sign
        # of expired credentials, and _with_key tries the next key itself.
        exchange.creds_retried = key_guess
        exchange.start()
        return exchange.future

    def close(self) -> None:
        """Stop the watchdog and let the CRT shut its connections and threads down (the
        client goes with its last reference; requests still in flight are cancelled)."""
        self._closed.set()
        if self._lane is not None:
            self._lane.close()
        self.client = None

    # --- objects ----------------------------------------------------------------------

    def head_async(self, key: str) -> Future[ObjectInfo | None]:
        out: Future[ObjectInfo | None] = Future()
        if self._lane is None:
            self._crt_head(key, out)
            return out

        def answered(status: int, headers: dict[str, str] | None, error: S3Error | None) -> None:
            if error is not None:
                out.set_exception(error)
            elif headers is None:  # handed back: an answer the CRT path's rules decide
                self._crt_head(key, out)
            elif status == 404:
                out.set_result(None)
            else:
                out.set_result(_info(key, headers))

        self._lane.submit(key, answered)
        return out

    def _crt_head(self, key: str, out: Future[ObjectInfo | None]) -> None:
        inner = self._with_key(
            key,
            lambda sse, guess: self._send(
                f"HEAD {key}", "HEAD", key, headers=sse, op="HeadObject", key_guess=guess
            ),
        )

        def done(f: Future[Answer]) -> None:
            try:
                out.set_result(_info(key, f.result().headers))
            except S3Error as e:
                if e.status == 404:
                    out.set_result(None)
                else:
                    out.set_exception(e)

        inner.add_done_callback(done)

    def head(self, key: str) -> ObjectInfo | None:
        return self.head_async(key).result()

    def _get(self, key: str, start: int, length: int, etag: str) -> Future[Answer]:
        """A ranged GET whose body comes back in the Answer (small: headers matter)."""
        into = bytearray(length)
        return self._ranged(key, start, length, etag, into=into, base=start)

    def _ranged(
        self, key: str, start: int, length: int, etag: str, **options: Any
    ) -> Future[Answer]:
        extra = [("range", f"bytes={start}-{start + length - 1}")]
        if etag:
            extra.append(("if-match", etag))
        return self._with_key(
            key,
            lambda sse, guess: self._send(
                f"GET {key} [{start}+{length}]",
                "GET",
                key,
                headers=[*extra, *sse],
                key_guess=guess,
                kind=s3.S3RequestType.GET_OBJECT,
                # One part: our read-ahead decides how ranges are split and run in parallel.
                part_size=max(length, MIN_PART),
                **options,
            ),
        )

    def get_range_async(
        self, key: str, start: int, length: int, etag: str = "", spill: str | None = None
    ) -> Future[Body]:
        """Bytes [start, start+length) (fewer at the end of the object; none past it),
        in memory the CRT wrote them into itself. A block of read-ahead is megabytes:
        taking it chunk by chunk in Python, under the GIL, cost more CPU than the rest of
        the read path. So the body goes to a memory-backed file (memfd), which the Body
        keeps; with `spill`, a directory, to a nameless file there instead (disk, for
        bytes kept longer). With `etag`, of that version only: ESTALE if it was
        replaced."""
        out: Future[Body] = Future()
        if length <= 0:
            out.set_result(Body.of(b""))
            return out
        try:
            if spill is None:
                fd = os.memfd_create("run-s3fs-read", os.MFD_CLOEXEC)
            else:
                fd = os.open(spill, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as e:
            out.set_exception(S3Error(e.errno or errno.EIO, f"GET {key}: {e.strerror}", "Local"))
            return out
        body = Body(fd, 0)  # closes fd once unreferenced, whatever happens below
        inner = self._ranged(
            key, start, length, etag, observe=length, recv_filepath=f"/proc/self/fd/{fd}"
        )

        def done(f: Future[Answer]) -> None:
            try:
                f.result()
                body.size = min(os.fstat(fd).st_size, length)
                out.set_result(body)
            except S3Error as e:
                if e.status == 416:  # at or past the end: an empty read, as for a local file
                    out.set_result(Body.of(b""))
                else:
                    out.set_exception(e)
            except OSError as e:
                out.set_exception(S3Error(errno.EIO, f"GET {key}: {e}"))

        inner.add_done_callback(done)
        return out

    def get_range(self, key: str, start: int, length: int, etag: str = "") -> bytes:
        return bytes(self.get_range_async(key, start, length, etag).result().view)

    def get_start(self, key: str, length: int) -> tuple[ObjectInfo, bytes] | None:
        """The object's headers and its first `length` bytes in one request, or None."""
        try:
            answer = self._get(key, 0, length, "").result()
        except S3Error as e:
            if e.status == 416:  # an empty object has no byte 0
                info = self.head(key)
                return None if info is None else (info, b"")
            if e.status == 404:
                return None
            raise
        total = answer.headers.get("content-range", "").rpartition("/")[2]
        got = _content_length(answer, length)
        size = int(total) if total.isdigit() else got
        return _info(key, answer.headers, size), bytes(memoryview(answer.body)[:got])

    def download(self, key: str, fd: int, size: int, etag: str = "") -> None:
        """The whole object into the file open at `fd`, in parallel ranged GETs written
        straight to it; with `etag`, all of that version (ESTALE if it was replaced)."""
        if size <= 0:
            return
        headers = [("if-match", etag)] if etag else []
        self._with_key(
            key,
            lambda sse, guess: self._send(
                f"GET {key}",
                "GET",
                key,
                headers=[*headers, *sse],
                key_guess=guess,
                kind=s3.S3RequestType.GET_OBJECT,
                recv_filepath=f"/proc/self/fd/{fd}",
                part_size=self.settings.part_size,
                max_active_connections_override=self.settings.parallel_count,
            ),
        ).result()

    def _object_headers(
        self, metadata: dict[str, str], ctype: str, sse_c: CustomerKey | None
    ) -> Headers:
        """What a new object is written with: type, metadata, the mount's SSE and storage
        class (sent again on every copy: S3 carries neither over a copy), its SSE-C key."""
        return [
            ("content-type", ctype),
            *((META + k, v) for k, v in metadata.items()),
            *self.settings.write_headers,
            *(sse_c.headers() if sse_c else ()),
        ]

    def put(self, key: str, body: bytes, metadata: dict[str, str], ctype: str) -> str:
        sse_c = self._write_key()
        answer = self._send(
            f"PUT {key}",
            "PUT",
            key,
            headers=self._object_headers(metadata, ctype, sse_c),
            payload=bytes(body),
            op="PutObject",
        ).result()
        self._learn(key, sse_c.md5 if sse_c else "")
        return answer.headers.get("etag", "")

    def upload_file(
        self, key: str, path: str, size: int, metadata: dict[str, str], ctype: str
    ) -> str:
        """A local file → the object: one PUT below the threshold, else a multipart upload
        with `parallel_count` parts in flight (the CRT's own multipart PUT is not used:
        it cannot read the answers of some S3-compatible servers, rclone's among them)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        budget = self._upload_budget
        try:
            if size < self.settings.multipart_threshold:
                budget.take(size)
                try:
                    return self.put(key, _read_all(fd, size), metadata, ctype)
                finally:
                    budget.give(size)
            # No larger than it takes to keep parallel_count parts in flight, within the
            # upload buffer: one connection carries only so much (S3: 50-100 MB/s), so
            # 32 MiB goes up faster as 7 parts of 5 MiB than as 4 of 10.
            # part_size (multipart_size) is the most.
            count = self.settings.parallel_count
            spread = min(-(-size // count), self.settings.upload_buffer // count)
            part = max(min(self.settings.part_size, spread), -(-size // MAX_PARTS), MIN_PART)
            upload = self.begin_upload(key, metadata, ctype)
            try:
                for start in range(0, size, part):
                    if upload.failed:
                        break  # start no more: complete() raises the failure
                    upload.send_file_part(fd, start, min(part, size - start))
            except BaseException:
                upload.abort()
                raise
            return upload.complete()
        finally:
            os.close(fd)

    def begin_upload(self, key: str, metadata: dict[str, str], ctype: str) -> MultipartUpload:
        """A multipart upload of a new object `key`, its parts sent by the caller (a file
        streamed while written): cut in part_size (multipart_size), or smaller if the
        upload buffer would not hold parallel_count of them in flight."""
        sse_c = self._write_key()
        headers = self._object_headers(metadata, ctype, sse_c)
        settings = self.settings
        part = max(
            MIN_PART, min(settings.part_size, settings.upload_buffer // settings.parallel_count)
        )
        return MultipartUpload(self, f"multipart upload of {key}", key, headers, sse_c, part)

    def stream_threshold(self) -> int:
        """The size from which a file being written goes up in parts while it is written."""
        return self.settings.multipart_threshold

    def copy(
        self,
        src: str,
        dst: str,
        size: int,
        metadata: dict[str, str] | None = None,
        ctype: str | None = None,
        source: ObjectInfo | None = None,
    ) -> str:
        """Server-side copy; returns the copy's ETag. With `metadata`, the metadata is
        replaced (chmod, utimens…) and the Content-Type kept unless given. `source`, its
        HEAD if the caller has it: its storage class and encryption are kept where the
        mount sets none. Objects over `singlepart_copy_limit` (S3's limit: 5 GiB) are
        copied in parts."""
        if size > self.settings.singlepart_copy_limit:
            return self._multipart_copy(src, dst, size, metadata, ctype, source)
        src_md5 = self._source_key(src)
        sse_c = self._copy_key(src_md5)
        headers = [("x-amz-copy-source", self._copy_source(src))]
        if self._keys is not None:
            headers += self._keys.headers_for(src_md5, copy_source=True)
        if metadata is not None:
            if ctype is None:
                ctype = self._content_type(src)
            headers += [
                ("x-amz-metadata-directive", "REPLACE"),
                *self._object_headers(metadata, ctype, sse_c),
            ]
        else:
            headers += [*self.settings.write_headers, *(sse_c.headers() if sse_c else ())]
        headers += self._kept(source, sse_c)
        answer = self._send(
            f"COPY {src} → {dst}", "PUT", dst, headers=headers, op="CopyObject"
        ).result()
        self._learn(dst, sse_c.md5 if sse_c else "")
        return xml.find(bytes(answer.body), "ETag") if answer.body else ""

    def _copy_source(self, key: str) -> str:
        return quote(f"/{self.bucket}/", safe="/") + quote(
            key.encode("utf-8", "surrogateescape"), safe="/~"
        )

    def _content_type(self, key: str) -> str:
        info = self.head(key)
        if info is None:
            raise S3Error(errno.ENOENT, f"COPY {key}: no such key", "NoSuchKey", 404)
        return info.content_type or "application/octet-stream"

    def _multipart_copy(
        self,
        src: str,
        dst: str,
        size: int,
        metadata: dict[str, str] | None,
        ctype: str | None,
        source: ObjectInfo | None,
    ) -> str:
        if metadata is None or ctype is None or source is None:
            source = self.head(src)
            if source is None:
                raise S3Error(errno.ENOENT, f"COPY {src}: no such key", "NoSuchKey", 404)
            metadata = source.metadata if metadata is None else metadata
            ctype = ctype or source.content_type or "application/octet-stream"
        part = max(self.settings.part_size, 512 * MIB, -(-size // MAX_PARTS))
        copy_source = self._copy_source(src)
        what = f"multipart copy of {src} to {dst}"
        src_md5 = self._source_key(src)
        sse_c = self._copy_key(src_md5)
        sse_headers = [
            *(self._keys.headers_for(src_md5, copy_source=True) if self._keys else ()),
            *(sse_c.headers() if sse_c else ()),
        ]

        def part_request(upload_id: str, n: int, start: int) -> Future[str]:
            end = min(start + part, size) - 1
            return then(
                self._send(
                    f"copy part {n} of {src}",
                    "PUT",
                    dst,
                    query=f"partNumber={n}&uploadId={_q(upload_id)}",
                    headers=[
                        ("x-amz-copy-source", copy_source),
                        ("x-amz-copy-source-range", f"bytes={start}-{end}"),
                        *sse_headers,
                    ],
                    op="UploadPartCopy",
                ),
                lambda a: xml.find(bytes(a.body), "ETag"),
            )

        headers = [*self._object_headers(metadata, ctype, sse_c), *self._kept(source, sse_c)]
        upload = MultipartUpload(self, what, dst, headers, sse_c)
        try:
            for start in range(0, size, part):
                if upload.failed:
                    break  # start no more: complete() raises the failure
                upload.start(lambda upload_id, n, start=start: part_request(upload_id, n, start))
        except BaseException:
            upload.abort()
            raise
        return upload.complete()

    def delete(self, key: str) -> None:
        self._key_of.pop(key, None)
        try:
            self._send(f"DELETE {key}", "DELETE", key, op="DeleteObject").result()
        except S3Error as e:
            if e.status != 404:  # gone already: what was asked for
                raise

    def delete_many(self, keys: list[str]) -> None:
        """Batched DeleteObjects (1000 a request); any key that fails raises."""
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            for key in batch:
                self._key_of.pop(key, None)
            body = xml.delete_objects(batch)
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            answer = self._send(
                f"DELETE {len(batch)} keys",
                "POST",
                None,
                query="delete",
                headers=[("content-md5", md5), ("content-type", "application/xml")],
                payload=body,
                op="DeleteObjects",
            ).result()
            failed = xml.delete_errors(bytes(answer.body))
            if failed:
                key, code, message = failed[0]
                error = from_response(f"DELETE {key}", 400, None)
                raise S3Error(error.errno, f"DELETE {key}: {code} ({message})", code)

    # --- listings ---------------------------------------------------------------------

    def list_page_async(
        self, prefix: str, delimiter: str = "/", token: str | None = None, max_keys: int = 1000
    ) -> Future[Page]:
        query = f"list-type=2&encoding-type=url&max-keys={max_keys}&prefix={_q(prefix)}"
        if delimiter:
            query += f"&delimiter={_q(delimiter)}"
        if token:
            query += f"&continuation-token={_q(token)}"
        what = f"LIST {prefix or '/'}"

        def parse(answer: Answer) -> Page:
            try:
                return xml.list_page(bytes(answer.body))
            except (ValueError, SyntaxError) as e:
                raise S3Error(errno.EIO, f"{what}: unreadable answer ({e})") from None

        return then(self._send(what, "GET", None, query=query, op="ListObjectsV2"), parse)

    def list_page(
        self, prefix: str, delimiter: str = "/", token: str | None = None, max_keys: int = 1000
    ) -> Page:
        return self.list_page_async(prefix, delimiter, token, max_keys).result()

    def list_dir_async(self, prefix: str) -> Future[Listing]:
        """Every object and common prefix directly under `prefix`: the pages one after
        the other, each asked for from the thread that received the one before."""
        out: Future[Listing] = Future()
        listing = Listing()

        def ask(token: str | None) -> None:
            self.list_page_async(prefix, token=token).add_done_callback(arrived)

        def arrived(f: Future[Page]) -> None:
            try:
                page = f.result()
                listing.files.extend(page.files)
                listing.prefixes.extend(page.prefixes)
                if page.next_token is None:
                    out.set_result(listing)
                else:
                    ask(page.next_token)
            except BaseException as e:
                out.set_exception(e)

        ask(None)
        return out

    def list_dir(self, prefix: str) -> Listing:
        return self.list_dir_async(prefix).result()

    def iter_keys(self, prefix: str) -> Iterator[ListEntry]:
        """Every key under `prefix`, recursively."""
        token: str | None = None
        while True:
            page = self.list_page(prefix, delimiter="", token=token)
            yield from page.files
            token = page.next_token
            if token is None:
                return

    def first_keys(self, prefix: str, count: int) -> list[ListEntry]:
        """Up to `count` keys under `prefix` (one request): existence checks."""
        return self.list_page(prefix, delimiter="", max_keys=count).files


_BOOTSTRAP: crt_io.ClientBootstrap | None = None
_BOOTSTRAP_LOCK = threading.Lock()


def _bootstrap() -> crt_io.ClientBootstrap:
    """One set of event-loop threads for the process: an engine's are not all freed when
    it is closed, and a daemon needs one engine anyway (a probe's comes and goes)."""
    global _BOOTSTRAP
    with _BOOTSTRAP_LOCK:
        if _BOOTSTRAP is None:
            group = crt_io.EventLoopGroup(2)
            _BOOTSTRAP = crt_io.ClientBootstrap(group, crt_io.DefaultHostResolver(group))
        return _BOOTSTRAP


def _content_length(answer: Answer, asked: int) -> int:
    """How many of the `asked` bytes the answer holds (fewer at the end of the object)."""
    length = answer.headers.get("content-length")
    if length and length.isdigit():
        return min(int(length), asked)
    return min(len(answer.body), asked)


def _read_all(fd: int, size: int) -> bytes:
    data = os.pread(fd, size, 0)
    if len(data) != size:
        raise S3Error(errno.EIO, "the file changed size while uploading")
    return data


# What S3 answers when temporary credentials have run out (or their key is gone).
_EXPIRED_CODES = frozenset(
    {"ExpiredToken", "TokenRefreshRequired", "InvalidToken", "InvalidAccessKeyId"}
)


def _refused_credentials(error: BaseException) -> bool:
    """An answer that fresh credentials may cure. A HEAD's has no body to tell: a 400
    or 403 to one counts (the source refetches at most once every few seconds)."""
    status = getattr(error, "status_code", None)
    if status not in (400, 403):
        return False
    body = getattr(error, "body", None)
    if not body:
        return True
    code, _ = error_code(body)
    return code in _EXPIRED_CODES


def _unwrap(credentials: Any) -> tuple[Any, Callable[[], Any] | None]:
    """(fixed keys or the source, the source's `get`): a source of fixed keys signs with
    them as they are; any other is asked at every signing."""
    credentials = getattr(credentials, "fixed", None) or credentials
    return credentials, getattr(credentials, "get", None)


def _keys_of(credentials: Any) -> Callable[[], Any]:
    """The keys to sign with now (fixed, or a source's current ones)."""
    fixed, getter = _unwrap(credentials)
    return getter if getter is not None else (lambda: fixed)


def _provider(credentials: Any) -> auth.AwsCredentialsProvider:
    """A CRT credentials provider: fixed keys as they are; a source with `get()` asked at
    every signing, so that refreshed credentials are used from the next request on (the
    parts of a long upload included)."""
    credentials, getter = _unwrap(credentials)
    if getter is None:
        return auth.AwsCredentialsProvider.new_static(
            credentials.access_key, credentials.secret_key, credentials.session_token
        )

    def current() -> auth.AwsCredentials:
        c = getter()
        expiry = getattr(c, "expiry", None)
        if isinstance(expiry, (int, float)) and math.isfinite(expiry):
            from datetime import datetime, timezone

            expiry = datetime.fromtimestamp(expiry, timezone.utc)
        return auth.AwsCredentials(c.access_key, c.secret_key, c.session_token, expiry)

    return auth.AwsCredentialsProvider.new_delegate(current)

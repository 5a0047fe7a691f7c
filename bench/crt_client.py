"""A small S3 client on the AWS Common Runtime (awscrt), for the benchmark's own use.

Three jobs: filling the buckets fast (tens of thousands of small PUTs), the direct
client (the ceiling: parallel ranged GETs and a parallel multipart upload, no FUSE), and
the awscrt row of engines.py. It is deliberately independent of run_s3fs.fs.engine, so
the ceiling does not move when the backend's engine changes.

Path-style addressing, http only (the benchmark's servers are on loopback), static keys.
Every call returns a concurrent.futures.Future; `.result()` raises S3CallError on a
status ≥ 300 (the body's S3 error code in the message, never a key or a secret).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from awscrt import auth, http, s3
from awscrt import io as crt_io

MIB = 1 << 20
DEFAULT = s3.S3RequestType.DEFAULT


class S3CallError(RuntimeError):
    def __init__(self, what: str, status: int, body: bytes = b"") -> None:
        code = re.search(rb"<Code>([^<]*)</Code>", body or b"")
        super().__init__(f"{what}: HTTP {status}" + (f" {code[1].decode()}" if code else ""))
        self.status = status


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


def _q(value: str, safe: str = "-_.~") -> str:
    return quote(value.encode(), safe=safe)


_BOOTSTRAP: crt_io.ClientBootstrap | None = None
_LOCK = threading.Lock()


def _bootstrap() -> crt_io.ClientBootstrap:
    global _BOOTSTRAP
    with _LOCK:
        if _BOOTSTRAP is None:
            group = crt_io.EventLoopGroup(2)
            _BOOTSTRAP = crt_io.ClientBootstrap(group, crt_io.DefaultHostResolver(group))
        return _BOOTSTRAP


class CrtClient:
    """One bucket on one endpoint. Thread-safe; many requests in flight from one thread."""

    def __init__(
        self,
        url: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        part_size: int = 8 * MIB,
        connections: int = 32,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.netloc
        self.bucket = bucket
        self.part_size = part_size
        provider = auth.AwsCredentialsProvider.new_static(access_key, secret_key)
        self.signing = s3.create_default_s3_signing_config(
            region=region, credential_provider=provider
        )
        self.client = s3.S3Client(
            bootstrap=_bootstrap(),
            region=region,
            tls_mode=s3.S3RequestTlsMode.DISABLED,
            signing_config=self.signing,
            part_size=part_size,
            # ~10 connections per 4 Gb/s of target (the CRT's own sizing rule)
            throughput_target_gbps=max(10.0, connections * 0.4),
            memory_limit=2048 * MIB,
        )
        self.connections = connections

    # --- plumbing ---------------------------------------------------------------------

    def path(self, key: str | None) -> str:
        base = f"/{self.bucket}"
        return base if key is None else f"{base}/{_q(key, safe='/-_.~')}"

    def send(
        self,
        method: str,
        key: str | None,
        query: str = "",
        headers: Iterable[tuple[str, str]] = (),
        payload: bytes | None = None,
        kind: s3.S3RequestType = DEFAULT,
        into: bytearray | memoryview | None = None,
        base: int = 0,
        op: str | None = "Benchmark",
        **options: Any,
    ) -> Future[Answer]:
        """One request. A body goes into `into` (at offset - `base`) when given."""
        answer = Answer()
        out: Future[Answer] = Future()
        hdrs = http.HttpHeaders([("host", self.host), *headers])
        stream = None
        if payload is not None:
            hdrs.set("content-length", str(len(payload)))
            stream = io.BytesIO(payload)
        target = self.path(key) + (f"?{query}" if query else "")
        request = http.HttpRequest(method, target, hdrs, stream)

        def on_headers(status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
            answer.status = status_code
            answer.headers = {k.lower(): v for k, v in headers}

        def on_body(chunk: bytes, offset: int, **_: Any) -> None:
            if into is None:
                answer.body += chunk
            else:
                start = offset - base
                into[start : start + len(chunk)] = chunk

        def finished(f: Future[None]) -> None:
            error = f.exception()
            if error is None and answer.status < 300:
                out.set_result(answer)
                return
            status = getattr(error, "status_code", None) or answer.status
            body = bytes(getattr(error, "body", None) or answer.body or b"")
            what = f"{method} {key or '/'}"
            if not status and error is not None:
                what += f" ({getattr(error, 'name', type(error).__name__)})"
            out.set_exception(S3CallError(what, status or 0, body))

        if kind == DEFAULT:
            options.setdefault("operation_name", op)
        made = self.client.make_request(
            type=kind,
            request=request,
            signing_config=self.signing,
            on_headers=on_headers,
            on_body=on_body,
            **options,
        )
        made.finished_future.add_done_callback(finished)
        # Keep the request alive until it finishes (the CRT frees it with its last reference).
        out.add_done_callback(lambda _f, keep=made: None)
        return out

    # --- operations ---------------------------------------------------------------------

    def create_bucket(self) -> Future[Answer]:
        return self.send("PUT", None, op="CreateBucket")

    def head(self, key: str) -> Future[Answer]:
        return self.send("HEAD", key, op="HeadObject")

    def put(self, key: str, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> Future[Answer]:
        return self.send("PUT", key, headers=list(headers), payload=body, op="PutObject")

    def delete(self, key: str) -> Future[Answer]:
        return self.send("DELETE", key, op="DeleteObject")

    def get_range(self, key: str, start: int, length: int) -> Future[Answer]:
        return self.send(
            "GET",
            key,
            headers=[("range", f"bytes={start}-{start + length - 1}")],
            kind=s3.S3RequestType.GET_OBJECT,
            part_size=max(length, 5 * MIB),  # one request: the caller chose the range
        )

    def get_parallel(
        self, key: str, into: bytearray, part_size: int | None = None
    ) -> Future[Answer]:
        """The whole object into `into`: the CRT splits it into `part_size` ranged GETs
        and keeps up to `connections` of them in flight."""
        return self.send(
            "GET",
            key,
            kind=s3.S3RequestType.GET_OBJECT,
            into=into,
            part_size=part_size or self.part_size,
            max_active_connections_override=self.connections,
        )

    def put_multipart(
        self,
        key: str,
        data: bytes | memoryview,
        headers: Iterable[tuple[str, str]] = (),
        part_size: int | None = None,
        in_flight: int = 8,
    ) -> None:
        """A multipart upload of `data`, `in_flight` parts at a time (blocking). The CRT's
        own multipart PUT is not used: it cannot read some servers' answers (rclone's)."""
        part = part_size or self.part_size
        started = self.send("POST", key, query="uploads", headers=list(headers)).result()
        upload_id = re.search(rb"<UploadId>([^<]+)</UploadId>", bytes(started.body))
        if upload_id is None:
            raise S3CallError(f"POST {key}?uploads: no UploadId", started.status)
        uid = upload_id[1].decode()
        view = memoryview(data)
        count = max(1, -(-len(view) // part))
        etags: list[str] = [""] * count
        gate = threading.Semaphore(in_flight)
        pending: list[Future[Answer]] = []
        for n in range(count):
            gate.acquire()
            f = self.send(
                "PUT",
                key,
                query=f"partNumber={n + 1}&uploadId={_q(uid)}",
                payload=bytes(view[n * part : (n + 1) * part]),
                op="UploadPart",
            )

            def done(fut: Future[Answer], n: int = n) -> None:
                gate.release()
                if fut.exception() is None:
                    etags[n] = fut.result().headers.get("etag", "")

            f.add_done_callback(done)
            pending.append(f)
        for f in pending:
            f.result()
        body = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n + 1}</PartNumber><ETag>{e}</ETag></Part>"
            for n, e in enumerate(etags)
        )
        body += "</CompleteMultipartUpload>"
        done_answer = self.send(
            "POST", key, query=f"uploadId={_q(uid)}", payload=body.encode()
        ).result()
        if b"<Error>" in bytes(done_answer.body):  # S3 may fail a completion with a 200
            raise S3CallError(f"complete {key}", 500, bytes(done_answer.body))

    def list_page(
        self, prefix: str, delimiter: str = "/", token: str | None = None
    ) -> Future[Answer]:
        query = f"list-type=2&max-keys=1000&prefix={_q(prefix)}"
        if delimiter:
            query += f"&delimiter={_q(delimiter)}"
        if token:
            query += f"&continuation-token={_q(token)}"
        return self.send("GET", None, query=query, op="ListObjectsV2")

    def list_all(self, prefix: str, delimiter: str = "/") -> tuple[list[str], list[str]]:
        """Every key and common prefix under `prefix` (pages one after the other)."""
        keys: list[str] = []
        prefixes: list[str] = []
        token = None
        while True:
            body = bytes(self.list_page(prefix, delimiter, token).result().body)
            keys += [_xml_text(k) for k in re.findall(rb"<Key>([^<]*)</Key>", body)]
            for block in re.findall(rb"<CommonPrefixes>(.*?)</CommonPrefixes>", body, re.S):
                prefixes += [_xml_text(p) for p in re.findall(rb"<Prefix>([^<]*)</Prefix>", block)]
            more = re.search(rb"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
            truncated = re.search(rb"<IsTruncated>true</IsTruncated>", body)
            if not (more and truncated):
                return keys, prefixes
            token = _xml_text(more[1])

    def delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            objects = "".join(
                f"<Object><Key>{_xml_escape(k)}</Key></Object>" for k in keys[i : i + 1000]
            )
            body = f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            self.send(
                "POST",
                None,
                query="delete",
                headers=[("content-md5", md5), ("content-type", "application/xml")],
                payload=body,
                op="DeleteObjects",
            ).result()

    def many(self, futures_of: Iterable[Any], in_flight: int = 64) -> list[Answer]:
        """Run zero-argument callables that each start one request, `in_flight` at a time;
        the answers in order (the first failure raises)."""
        gate = threading.Semaphore(in_flight)
        started: list[Future[Answer]] = []
        for start in futures_of:
            gate.acquire()
            f = start()
            f.add_done_callback(lambda _f: gate.release())
            started.append(f)
        return [f.result() for f in started]

    def close(self) -> None:
        self.client = None


def _xml_text(raw: bytes) -> str:
    text = raw.decode()
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'")):
        text = text.replace(entity, char)
    return text.replace("&amp;", "&")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

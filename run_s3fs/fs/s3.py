"""The S3 layer: one boto3 client, retries, S3 errors → errno, and the operations the
filesystem needs (head, ranged get, put, listing, copy, delete, multipart).

Every failure leaves this module as an OSError carrying an errno (S3Error), so the
layers above never see botocore. Secrets stay inside the client.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from run_s3fs.fs.credentials import Credentials
from run_s3fs.fs.lighthead import FALLBACK, LightHead, ServerError

log = logging.getLogger("run_s3fs.fs.s3")

T = TypeVar("T")
GIB = 1024**3
MAX_SINGLE_COPY = 5 * GIB  # S3's limit for CopyObject
MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000


class S3Error(OSError):
    """An S3 failure as an errno, with S3's error code kept for the log."""

    def __init__(self, err: int, message: str, code: str = "") -> None:
        super().__init__(err, message)
        self.code = code


_ERRNO_BY_CODE = {
    "NoSuchKey": errno.ENOENT,
    "NotFound": errno.ENOENT,
    "404": errno.ENOENT,
    "NoSuchBucket": errno.ENOENT,
    "NoSuchUpload": errno.ENOENT,
    "AccessDenied": errno.EACCES,
    "403": errno.EACCES,
    "Forbidden": errno.EACCES,
    "InvalidAccessKeyId": errno.EACCES,
    "SignatureDoesNotMatch": errno.EACCES,
    "ExpiredToken": errno.EACCES,
    "InvalidToken": errno.EACCES,
    "AllAccessDisabled": errno.EACCES,
    "AccountProblem": errno.EACCES,
    "InvalidRange": errno.EINVAL,
    # A read pinned to the version it opened (If-Match) finds the object replaced.
    "PreconditionFailed": errno.ESTALE,
    "412": errno.ESTALE,
    "EntityTooLarge": errno.EFBIG,
    "KeyTooLongError": errno.ENAMETOOLONG,
    "SlowDown": errno.EAGAIN,
    "503": errno.EAGAIN,
}


def to_oserror(exc: BaseException, what: str) -> S3Error:
    """A botocore exception → S3Error (errno + one-line message naming the operation)."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(err.get("Code") or status)
        number = _ERRNO_BY_CODE.get(code)
        if number is None:
            number = {404: errno.ENOENT, 403: errno.EACCES}.get(status, errno.EIO)
        message = err.get("Message") or code
        return S3Error(number, f"{what}: {code} ({message})", code)
    if isinstance(exc, BotoCoreError):
        # Connection refused/reset, timeouts, DNS: the service is unreachable, an I/O error.
        return S3Error(errno.EIO, f"{what}: {exc}", type(exc).__name__)
    return S3Error(errno.EIO, f"{what}: {type(exc).__name__}: {exc}", type(exc).__name__)


# Failures botocore does not retry because they happen after it returned the response:
# reading a GET's body. Retried here with backoff.
_BODY_ERRORS = (
    IncompleteReadError,
    ResponseStreamingError,
    ReadTimeoutError,
    BotoConnectionError,
    ConnectionError,
)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None
    etag: str
    content_type: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class ListEntry:
    key: str
    size: int
    last_modified: datetime | None
    etag: str


def _entry(item: dict) -> ListEntry:
    return ListEntry(
        item["Key"], int(item.get("Size", 0)), item.get("LastModified"), item.get("ETag", "")
    )


@dataclass
class Listing:
    files: list[ListEntry] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    url: str | None  # None → AWS's default endpoint for the region
    region: str
    path_style: bool
    retries: int
    connect_timeout: float
    read_timeout: float
    pool_size: int
    transfer_threads: int
    part_size: int
    multipart_threshold: int
    singlepart_copy_limit: int = MAX_SINGLE_COPY


class S3:
    """Thread-safe: boto3 clients are; the executor is for transfers (parts, ranges)."""

    def __init__(self, settings: S3Settings, creds: Credentials) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        config = BotoConfig(
            region_name=settings.region,
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.path_style else "auto"},
            max_pool_connections=settings.pool_size,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"mode": "standard", "total_max_attempts": settings.retries + 1},
            # S3-compatible services (older MinIO, Ceph, moto) choke on the default CRC
            # trailers; s3fs does not send them either.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.session_token,
        )
        self.client = session.client("s3", endpoint_url=settings.url, config=config)
        self._light = LightHead(self.client, self.bucket, settings.retries)
        self.transfers = ThreadPoolExecutor(
            max_workers=settings.transfer_threads, thread_name_prefix="s3-transfer"
        )
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()
        self.transfers.shutdown(wait=True)

    # --- plumbing ---------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise to_oserror(exc, what) from None

    def _with_body_retries(self, what: str, fn: Callable[[], T]) -> T:
        """Retry what botocore cannot: failures while streaming a response body."""
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            try:
                return fn()
            except _BODY_ERRORS as exc:
                if attempt + 1 >= attempts:
                    raise to_oserror(exc, what) from None
                delay = min(10.0, 0.2 * 2**attempt) * (0.5 + random.random() / 2)
                log.warning("%s: %s; retrying in %.1fs", what, type(exc).__name__, delay)
                time.sleep(delay)
            except Exception as exc:
                raise to_oserror(exc, what) from None
        raise AssertionError("unreachable")

    # --- the bucket -------------------------------------------------------------------

    def probe(self) -> None:
        """Check the bucket exists and the keys work (a one-key listing, as s3fs does)."""
        self._call("checking the bucket", self.client.list_objects_v2, MaxKeys=1)

    # --- objects ----------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        """The object's headers, or None if there is no such key."""
        try:
            r = self._light.head(key)
        except ServerError as e:
            number = _ERRNO_BY_CODE.get(str(e.status), errno.EIO)
            raise S3Error(number, f"HEAD {key}: {e.status} (server error)", str(e.status)) from None
        if r is None:
            return None
        if r is FALLBACK:
            try:
                r = self._call(f"HEAD {key}", self.client.head_object, Key=key)
            except S3Error as e:
                if e.errno == errno.ENOENT:
                    return None
                raise
        assert isinstance(r, dict)
        return ObjectInfo(
            key=key,
            size=int(r.get("ContentLength", 0)),
            last_modified=r.get("LastModified"),
            etag=r.get("ETag", ""),
            content_type=r.get("ContentType", ""),
            metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
        )

    def get_start(self, key: str, length: int) -> tuple[ObjectInfo, bytes] | None:
        """The object's headers and its first `length` bytes in one request (a HEAD and
        a first read in one), or None if there is no such key."""
        what = f"GET {key} [0+{length}]"

        def once() -> tuple[ObjectInfo, bytes] | None:
            try:
                r = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes=0-{length - 1}"
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "InvalidRange":  # an empty object has no byte 0
                    info = self.head(key)
                    return None if info is None else (info, b"")
                if code in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            with r["Body"] as body:
                data = body.read()
            total = r.get("ContentRange", "").rpartition("/")[2]
            info = ObjectInfo(
                key=key,
                size=int(total) if total.isdigit() else int(r.get("ContentLength", len(data))),
                last_modified=r.get("LastModified"),
                etag=r.get("ETag", ""),
                content_type=r.get("ContentType", ""),
                metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
            )
            return info, data

        return self._with_body_retries(what, once)

    def get_range(self, key: str, start: int, length: int, etag: str = "") -> bytes:
        """Bytes [start, start+length) (fewer at the end of the object). With `etag`, of
        that version only: ESTALE if the object was replaced since (no mixed reads)."""
        if length <= 0:
            return b""
        what = f"GET {key} [{start}+{length}]"
        pin = {"IfMatch": etag} if etag else {}

        def once() -> bytes:
            try:
                r = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}", **pin
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # at or past the end: an empty read, as for a local file
                raise
            with r["Body"] as body:
                return body.read()

        return self._with_body_retries(what, once)

    def get_stream(self, key: str, start: int, etag: str = "") -> Any:
        """The unread body of a GET from `start` to the end of the object (a plain GET
        from 0): read it as far as needed, then close it. `etag`: as for get_range."""
        kwargs: dict[str, Any] = {"Key": key}
        if etag:
            kwargs["IfMatch"] = etag
        if start:
            kwargs["Range"] = f"bytes={start}-"
        return self._call(f"GET {key} [{start}-]", self.client.get_object, **kwargs)["Body"]

    def download(self, key: str, out: BinaryIO, size: int, etag: str = "") -> None:
        """The whole object into `out` (a file opened for writing), parallel ranged GETs;
        with `etag`, all of that version (ESTALE if it was replaced: never a mix)."""
        chunk = self.settings.part_size
        if size <= chunk:
            out.seek(0)
            out.write(self.get_range(key, 0, size, etag) if size else b"")
            return
        fd = out.fileno()
        futures = [
            self.transfers.submit(
                self._download_part, key, fd, start, min(chunk, size - start), etag
            )
            for start in range(0, size, chunk)
        ]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e), None)
        if first:
            raise first

    def _download_part(self, key: str, fd: int, start: int, length: int, etag: str) -> None:
        data = self.get_range(key, start, length, etag)
        if len(data) != length:
            raise S3Error(errno.EIO, f"GET {key}: short read at {start} (object changed?)")
        os.pwrite(fd, data, start)

    def put(self, key: str, body: bytes | BinaryIO, metadata: dict[str, str], ctype: str) -> str:
        r = self._call(
            f"PUT {key}",
            self.client.put_object,
            Key=key,
            Body=body,
            Metadata=metadata,
            ContentType=ctype,
        )
        return r.get("ETag", "")

    def upload_file(
        self, key: str, path: str, size: int, metadata: dict[str, str], ctype: str
    ) -> str:
        """A local file → the object: one PUT below the threshold, else a parallel multipart
        upload (aborted on any failure, so no orphaned parts stay behind)."""
        if size < self.settings.multipart_threshold:
            with open(path, "rb") as f:
                return self.put(key, f, metadata, ctype)
        part = max(self.settings.part_size, -(-size // MAX_PARTS), MIN_PART)
        fd = os.open(path, os.O_RDONLY)
        try:
            return self._multipart(
                "multipart upload",
                key,
                metadata,
                ctype,
                [
                    lambda upload_id, n=n, start=start: self._upload_part(
                        key, upload_id, fd, n, start, min(part, size - start)
                    )
                    for n, start in enumerate(range(0, size, part), 1)
                ],
            )
        finally:
            os.close(fd)

    def _multipart(
        self,
        what: str,
        key: str,
        metadata: dict[str, str],
        ctype: str,
        parts: list[Callable[[str], dict]],
    ) -> str:
        """A multipart upload of `key` whose parts are made by `parts` (each given the
        upload id), in parallel on the transfer pool. On any failure it is aborted once
        every part has finished: a part still in flight would land after the abort and
        stay behind (and a part reading a file must not outlive its descriptor)."""
        upload = self._call(
            f"{what} {key}",
            self.client.create_multipart_upload,
            Key=key,
            Metadata=metadata,
            ContentType=ctype,
        )
        upload_id = upload["UploadId"]
        try:
            futures = [self.transfers.submit(make, upload_id) for make in parts]
            try:
                done = [f.result() for f in futures]
            finally:
                for f in futures:
                    f.exception()  # waits
            r = self._call(
                f"complete {what} {key}",
                self.client.complete_multipart_upload,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
            return r.get("ETag", "")
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _upload_part(
        self, key: str, upload_id: str, fd: int, number: int, start: int, length: int
    ) -> dict:
        data = os.pread(fd, length, start)
        r = self._call(
            f"upload part {number} of {key}",
            self.client.upload_part,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": r["ETag"]}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call(
                f"abort multipart upload {key}",
                self.client.abort_multipart_upload,
                Key=key,
                UploadId=upload_id,
            )
        except OSError as e:
            log.error("could not abort multipart upload of %s (parts may remain): %s", key, e)

    def copy(
        self,
        src: str,
        dst: str,
        size: int,
        metadata: dict[str, str] | None = None,
        ctype: str | None = None,
    ) -> str:
        """Server-side copy; returns the copy's ETag (it may differ from the source's).
        With `metadata`, the metadata is replaced (chmod, utimens…); the Content-Type is
        kept unless given. Objects over 5 GiB: multipart copy."""
        if size > self.settings.singlepart_copy_limit:
            return self._multipart_copy(src, dst, size, metadata, ctype)
        kwargs: dict[str, Any] = {"CopySource": {"Bucket": self.bucket, "Key": src}, "Key": dst}
        if metadata is not None:
            kwargs["MetadataDirective"] = "REPLACE"
            kwargs["Metadata"] = metadata
            kwargs["ContentType"] = ctype or self._content_type(src)
        r = self._call(f"COPY {src} → {dst}", self.client.copy_object, **kwargs)
        return r.get("CopyObjectResult", {}).get("ETag", "")

    def _content_type(self, key: str) -> str:
        info = self.head(key)
        if info is None:
            raise S3Error(errno.ENOENT, f"COPY {key}: no such key")
        return info.content_type or "application/octet-stream"

    def _multipart_copy(
        self, src: str, dst: str, size: int, metadata: dict[str, str] | None, ctype: str | None
    ) -> str:
        if metadata is None or ctype is None:
            info = self.head(src)
            if info is None:
                raise S3Error(errno.ENOENT, f"COPY {src}: no such key")
            metadata = info.metadata if metadata is None else metadata
            ctype = ctype or info.content_type
        part = max(self.settings.part_size, 512 * 1024 * 1024, -(-size // MAX_PARTS))
        return self._multipart(
            f"multipart copy of {src} to",
            dst,
            metadata,
            ctype or "application/octet-stream",
            [
                lambda upload_id, n=n, start=start: self._copy_part(
                    src, dst, upload_id, n, start, min(start + part, size) - 1
                )
                for n, start in enumerate(range(0, size, part), 1)
            ],
        )

    def _copy_part(self, src: str, dst: str, upload_id: str, n: int, start: int, end: int) -> dict:
        r = self._call(
            f"copy part {n} of {src}",
            self.client.upload_part_copy,
            Key=dst,
            UploadId=upload_id,
            PartNumber=n,
            CopySource={"Bucket": self.bucket, "Key": src},
            CopySourceRange=f"bytes={start}-{end}",
        )
        return {"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]}

    def delete(self, key: str) -> None:
        self._call(f"DELETE {key}", self.client.delete_object, Key=key)

    def delete_many(self, keys: list[str]) -> None:
        """Batched DeleteObjects (1000 a request); any per-key failure raises."""
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            r = self._call(
                f"DELETE {len(batch)} keys",
                self.client.delete_objects,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            failed = r.get("Errors") or []
            if failed:
                first = failed[0]
                number = _ERRNO_BY_CODE.get(first.get("Code", ""), errno.EIO)
                raise S3Error(number, f"DELETE {first.get('Key')}: {first.get('Code')}")

    # --- listings ---------------------------------------------------------------------

    def list_dir(self, prefix: str, page_size: int = 1000) -> Listing:
        """Every object and common prefix directly under `prefix` (all pages)."""
        listing = Listing()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/", "MaxKeys": page_size}
            if token:
                kwargs["ContinuationToken"] = token
            r = self._call(f"LIST {prefix or '/'}", self.client.list_objects_v2, **kwargs)
            for item in r.get("Contents") or []:
                listing.files.append(_entry(item))
            listing.prefixes.extend(p["Prefix"] for p in r.get("CommonPrefixes") or [])
            if not r.get("IsTruncated"):
                return listing
            token = r.get("NextContinuationToken")
            if not token:
                return listing

    def iter_keys(self, prefix: str, page_size: int = 1000) -> Iterator[ListEntry]:
        """Every key under `prefix`, recursively."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": page_size}
            if token:
                kwargs["ContinuationToken"] = token
            r = self._call(f"LIST {prefix or '/'}", self.client.list_objects_v2, **kwargs)
            for item in r.get("Contents") or []:
                yield _entry(item)
            if not r.get("IsTruncated") or not r.get("NextContinuationToken"):
                return
            token = r["NextContinuationToken"]

    def first_keys(self, prefix: str, count: int) -> list[ListEntry]:
        """Up to `count` keys under `prefix` (one request): existence checks."""
        r = self._call(
            f"LIST {prefix or '/'}", self.client.list_objects_v2, Prefix=prefix, MaxKeys=count
        )
        return [_entry(item) for item in r.get("Contents") or []]

"""The S3 engine: every request the bundled backend makes goes through this interface.

`Engine` is what the core may call: head, list, get a range, put (bytes or a file,
multipart above a threshold), copy with metadata, delete. Every failure leaves it as an
S3Error (an OSError with an errno), so nothing above knows the transport. `open_engine`
builds the one implementation, on the AWS Common Runtime (crt.py): C code signs, sends
and receives, off the GIL, with many requests in flight on few threads; HEADs, which
carry no body, go on a lane of their own (heads.py), where they cost less per request.
Completions of either run on the engine's threads: a callback must not wait for S3.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from run_s3fs.fs.engine.errors import S3Error
from run_s3fs.fs.engine.sse import CustomerKey, CustomerKeys
from run_s3fs.fs.engine.types import (
    MAX_PARTS,
    Body,
    ListEntry,
    Listing,
    ObjectInfo,
    Page,
    Piece,
    joined,
)

__all__ = [
    "MAX_PARTS",
    "Body",
    "CustomerKey",
    "CustomerKeys",
    "Engine",
    "EngineSettings",
    "ListEntry",
    "Listing",
    "ObjectInfo",
    "Page",
    "Piece",
    "S3Error",
    "Upload",
    "joined",
    "open_engine",
]

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class EngineSettings:
    bucket: str
    url: str | None  # None: AWS's endpoint for the region
    region: str
    path_style: bool
    retries: int = 5  # after the first attempt
    connect_timeout: float = 300.0
    readwrite_timeout: float = 120.0  # the longest a request may go without progress
    part_size: int = 8 * MIB  # multipart uploads
    multipart_threshold: int = 10 * MIB
    parallel_count: int = 10  # parts of one upload in flight
    # Bodies of all uploads in memory at once, each held twice while it is sent (here
    # and in the CRT's buffer): what bounds the backend's memory while files are saved.
    upload_buffer: int = 64 * MIB
    singlepart_copy_limit: int = 5 * GIB
    max_connections: int = 128  # requests in flight over the whole engine
    head_lane: bool = True  # HEADs over the engine's own sockets (heads.py), not the CRT
    verify_tls: bool = True
    ca_file: str | None = None
    # Headers every request that writes an object carries, copies included (SSE-S3 or
    # SSE-KMS, storage class), and every request (requester pays): (name, value) pairs.
    write_headers: tuple[tuple[str, str], ...] = ()
    request_headers: tuple[tuple[str, str], ...] = ()
    # SSE-C keys (sse.py): sent per object on reads, writes and copies.
    customer_keys: CustomerKeys | None = None


class Upload(Protocol):
    """A multipart upload under way (Engine.begin_upload): nothing is visible under its
    key until complete() returns."""

    part_size: int  # the size its parts are best cut in (all but the last ≥ 5 MiB)

    @property
    def parts(self) -> int: ...

    @property
    def failed(self) -> bool: ...

    def send_file_part(self, fd: int, start: int, length: int) -> None: ...

    def complete(self) -> str: ...

    def abort(self) -> None: ...


class Engine(Protocol):
    """Thread-safe; every blocking call may be made from any thread."""

    def head(self, key: str) -> ObjectInfo | None: ...

    def head_async(self, key: str) -> Future[ObjectInfo | None]: ...

    def list_page(
        self, prefix: str, delimiter: str = "/", token: str | None = None, max_keys: int = 1000
    ) -> Page: ...

    def list_page_async(
        self, prefix: str, delimiter: str = "/", token: str | None = None, max_keys: int = 1000
    ) -> Future[Page]: ...

    def list_dir(self, prefix: str) -> Listing: ...

    def list_dir_async(self, prefix: str) -> Future[Listing]: ...

    def iter_keys(self, prefix: str) -> Iterator[ListEntry]: ...

    def first_keys(self, prefix: str, count: int) -> list[ListEntry]: ...

    def get_start(self, key: str, length: int) -> tuple[ObjectInfo, bytes] | None: ...

    def get_range(self, key: str, start: int, length: int, etag: str = "") -> bytes: ...

    def get_range_async(
        self, key: str, start: int, length: int, etag: str = "", spill: str | None = None
    ) -> Future[Body]: ...

    def suggested_part(self, window: int) -> int: ...

    def first_byte_wait(self) -> float: ...

    def read_seconds(self, size: int) -> float: ...

    def fetch_seconds(self, size: int, window: int) -> float: ...

    def suggested_pieces(self, size: int) -> int: ...

    def costly_requests(self) -> bool: ...

    def window_gets(self) -> int: ...

    def download(self, key: str, fd: int, size: int, etag: str = "") -> None: ...

    def put(self, key: str, body: bytes, metadata: dict[str, str], ctype: str) -> str: ...

    def upload_file(
        self, key: str, path: str, size: int, metadata: dict[str, str], ctype: str
    ) -> str: ...

    def begin_upload(self, key: str, metadata: dict[str, str], ctype: str) -> Upload: ...

    def stream_threshold(self) -> int: ...

    def copy(
        self,
        src: str,
        dst: str,
        size: int,
        metadata: dict[str, str] | None = None,
        ctype: str | None = None,
        source: ObjectInfo | None = None,
    ) -> str: ...

    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: list[str]) -> None: ...

    def close(self) -> None: ...


def open_engine(settings: EngineSettings, credentials: Any) -> Engine:
    """The engine for `settings`, signing with `credentials` (a source with `get()`, or
    fixed keys with access_key/secret_key/session_token)."""
    from run_s3fs.fs.engine.crt import CrtEngine

    return CrtEngine(settings, credentials)

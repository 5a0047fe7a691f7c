"""What the engine hands back: plain, frozen values with nothing of the transport in them."""

from __future__ import annotations

import mmap
import os
import weakref
from dataclasses import dataclass, field
from datetime import datetime

MAX_PARTS = 10_000  # parts of one multipart upload (S3's limit)


@dataclass(frozen=True)
class ObjectInfo:
    """An object's headers, as a HEAD (or the start of a GET) answered them."""

    key: str
    size: int
    last_modified: datetime | None
    etag: str
    content_type: str
    metadata: dict[str, str]  # x-amz-meta-* without the prefix, names lowercased
    # How it is stored ("" where S3 did not say: STANDARD, no SSE-S3/SSE-KMS).
    storage_class: str = ""
    sse: str = ""  # x-amz-server-side-encryption: AES256 or aws:kms
    kms_key_id: str = ""


@dataclass(frozen=True)
class ListEntry:
    key: str
    size: int
    last_modified: datetime | None
    etag: str


@dataclass
class Listing:
    """One directory's worth of a delimiter listing: objects and common prefixes."""

    files: list[ListEntry] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Page:
    """One ListObjectsV2 answer."""

    files: list[ListEntry]
    prefixes: list[str]
    next_token: str | None  # None once the listing is complete


class Body:
    """A GET's bytes, in the memory file (memfd) the CRT wrote them into, or in memory.

    The file stays open while the Body lives (closed when it is collected), so a reader
    of it may hand its pages on to the kernel by splice(2) without their passing
    through Python (fuse_adapter.read_buf), and no one can close it under such a reader.
    `view` maps it for readers in Python."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd  # -1: the bytes are in `_view`
        self.size = size
        self._view: memoryview | None = None
        if fd >= 0:
            weakref.finalize(self, os.close, fd)

    @classmethod
    def of(cls, data: bytes | memoryview) -> Body:
        body = cls(-1, len(data))
        body._view = memoryview(data)
        return body

    def __len__(self) -> int:
        return self.size

    @property
    def view(self) -> memoryview:
        if self._view is None:
            self._view = memoryview(mmap.mmap(self.fd, self.size)) if self.size else memoryview(b"")
        return self._view


@dataclass(frozen=True)
class Piece:
    """Bytes [start, end) of a Body: what a read returns, a piece per block it spans."""

    body: Body
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def view(self) -> memoryview:
        return self.body.view[self.start : self.end]


def joined(pieces: list[Piece]) -> bytes | memoryview:
    """The pieces' bytes as one buffer (a view, no copy, for a single piece)."""
    if len(pieces) == 1:
        return pieces[0].view
    return b"".join(p.view for p in pieces)

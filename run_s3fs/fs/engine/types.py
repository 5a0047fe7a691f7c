"""What the engine hands back: plain, frozen values with nothing of the transport in them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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

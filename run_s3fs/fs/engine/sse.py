"""SSE-C, customer-provided keys: which key an object needs and the headers that carry it.

S3 keeps no SSE-C key: every PUT, GET, HEAD, UploadPart and copy of such an object names
its key (algorithm, the key in base64, the key's MD5), and a copy names the source's key
in x-amz-copy-source-… headers too. A request with no key or the wrong key for an
encrypted object is refused (400 / 403), and so is a key sent for an object stored
without one: so, like s3fs, the engine tries the keys it has, remembers which one an
object took, and sends that one from then on (s3fs's HeadRequest / GetSseKey).

The keys are secrets: a CustomerKey shows only its MD5 (which S3 itself answers with).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

ALGORITHM = "AES256"
_PREFIX = "x-amz-server-side-encryption-customer-"
_COPY_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"
MD5_HEADER = _PREFIX + "key-md5"


@dataclass(frozen=True, repr=False)
class CustomerKey:
    raw: bytes = field(repr=False)  # 32 bytes: AES-256

    @property
    def md5(self) -> str:
        return base64.b64encode(hashlib.md5(self.raw).digest()).decode()

    def headers(self, copy_source: bool = False) -> list[tuple[str, str]]:
        prefix = _COPY_PREFIX if copy_source else _PREFIX
        return [
            (prefix + "algorithm", ALGORITHM),
            (prefix + "key", base64.b64encode(self.raw).decode()),
            (prefix + "key-md5", self.md5),
        ]

    def __repr__(self) -> str:
        return f"CustomerKey(md5={self.md5})"


@dataclass(frozen=True)
class CustomerKeys:
    """The keys of a mount, newest first. With `encrypt` (use_sse=custom) new objects are
    written with the first; without it (load_sse_c only) they are written unencrypted
    and the keys serve to read objects written with them."""

    keys: tuple[CustomerKey, ...]
    encrypt: bool

    def by_md5(self, md5: str) -> CustomerKey | None:
        return next((k for k in self.keys if k.md5 == md5), None)

    @property
    def write_key(self) -> CustomerKey | None:
        return self.keys[0] if self.encrypt else None

    def read_order(self, known: str | None) -> list[str]:
        """The key MD5s to try for reading an object, "" meaning no key: the one it took
        last time first, then the likeliest (the write key on a mount that encrypts)."""
        usual = [k.md5 for k in self.keys]
        usual.insert(1 if self.encrypt else 0, "")
        if known is not None:
            usual.insert(0, known)
        return list(dict.fromkeys(usual))

    def headers_for(self, md5: str, copy_source: bool = False) -> list[tuple[str, str]]:
        key = self.by_md5(md5) if md5 else None
        return key.headers(copy_source) if key is not None else []

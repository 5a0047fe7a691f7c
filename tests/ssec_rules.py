"""S3's SSE-C rules, for the fault proxy to play in front of moto (5.x accepts SSE-C
headers and ignores them: it neither stores the key's MD5 nor refuses a read without it).

What AWS documents and answers, per object (path-style requests, /bucket/key):
  - a key sent must be well formed: algorithm AES256, a 32-byte key in base64, and its
    MD5 in base64 matching it (else 400 InvalidArgument);
  - PUT, CreateMultipartUpload and CopyObject store the object with the key sent, or
    none; UploadPart, UploadPartCopy and CompleteMultipartUpload must send the upload's;
  - GET and HEAD of an object stored with a key: without one 400 InvalidRequest, with
    another one 403 AccessDenied; they answer with the algorithm and the key's MD5;
  - a key sent for an object stored without one: 400 InvalidRequest (for a missing one,
    404 as ever: objects that did not pass through the proxy are not judged);
  - a copy names the source's key in x-amz-copy-source-server-side-encryption-customer-*
    by the same rules.
The data in moto stays plaintext: these rules are about who may read it through S3.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from urllib.parse import parse_qs, unquote, urlsplit

PREFIX = "x-amz-server-side-encryption-customer-"
COPY_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"

Refusal = tuple[int, str]


def _key_md5(headers: dict[str, str], prefix: str) -> tuple[str, Refusal | None]:
    """The MD5 of the key these headers send ("" for none), or why they are malformed."""
    algorithm = headers.get(prefix + "algorithm")
    key = headers.get(prefix + "key")
    md5 = headers.get(prefix + "key-md5")
    if algorithm is None and key is None and md5 is None:
        return "", None
    if algorithm != "AES256" or key is None or md5 is None:
        return "", (400, "InvalidArgument")
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        return "", (400, "InvalidArgument")
    if len(raw) != 32 or base64.b64encode(hashlib.md5(raw).digest()).decode() != md5:
        return "", (400, "InvalidArgument")
    return md5, None


class SseCRules:
    def __init__(self) -> None:
        self.objects: dict[str, str] = {}  # "/bucket/key" → MD5 of its key ("": none)
        self.uploads: dict[str, str] = {}  # upload id → MD5 of its key
        self.refused = 0
        self._lock = threading.Lock()

    def _read_rule(self, stored: str, sent: str) -> Refusal | None:
        if stored and not sent:
            return 400, "InvalidRequest"
        if stored and sent != stored:
            return 403, "AccessDenied"
        if sent and not stored:
            return 400, "InvalidRequest"
        return None

    def check(self, method: str, target: str, headers: dict[str, str]) -> Refusal | None:
        """A refusal for this request, or None to forward it."""
        path, query = self._split(target)
        if path.count("/") < 2 or (path.endswith("/") and path.count("/") == 2):
            return None  # the bucket itself: listings, DeleteObjects
        sent, bad = _key_md5(headers, PREFIX)
        if bad:
            return self._refuse(bad)
        with self._lock:
            stored = self.objects.get(path, "")
            upload = query.get("uploadId")
            if upload is not None and method in ("PUT", "POST"):
                # a part, a part copy or the completion: the upload's key
                if sent != self.uploads.get(upload, ""):
                    return self._refuse((400, "InvalidRequest"))
            elif method in ("GET", "HEAD") and path in self.objects:
                # (a missing object is moto's to answer: 404, whatever key is sent)
                refusal = self._read_rule(stored, sent)
                if refusal:
                    return self._refuse(refusal)
            source = headers.get("x-amz-copy-source")
            if source is not None and method == "PUT":
                source_path = "/" + unquote(source.split("?")[0]).lstrip("/")
                sent_source, bad = _key_md5(headers, COPY_PREFIX)
                if bad:
                    return self._refuse(bad)
                refusal = self._read_rule(self.objects.get(source_path, ""), sent_source)
                if refusal:
                    return self._refuse(refusal)
        return None

    def answered(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        status: int,
        sent_body: bytes,
        body: bytes,
    ) -> list[tuple[str, str]]:
        """Record what a successful request stored; the headers to add to its answer."""
        if status >= 300:
            return []
        path, query = self._split(target)
        sent, _ = _key_md5(headers, PREFIX)
        with self._lock:
            if method == "PUT" and "uploadId" not in query:
                self.objects[path] = sent
            elif method == "POST" and "uploads" in query:
                upload = body.split(b"<UploadId>")[1].split(b"</UploadId>")[0].decode()
                self.uploads[upload] = sent
            elif method == "POST" and "uploadId" in query:
                self.objects[path] = self.uploads.pop(query["uploadId"], "")
            elif method == "DELETE" and "uploadId" not in query:
                self.objects.pop(path, None)
            elif method == "POST" and "delete" in query:
                bucket = path.rstrip("/")
                for part in sent_body.split(b"<Key>")[1:]:
                    key = part.split(b"</Key>")[0].decode()
                    self.objects.pop(f"{bucket}/{key}", None)
            stored = self.objects.get(path, "")
        if method in ("GET", "HEAD", "PUT") and stored and "uploadId" not in query:
            return [(PREFIX + "algorithm", "AES256"), (PREFIX + "key-md5", stored)]
        return []

    def _refuse(self, refusal: Refusal) -> Refusal:
        self.refused += 1
        return refusal

    @staticmethod
    def _split(target: str) -> tuple[str, dict[str, str]]:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        return unquote(parts.path), query

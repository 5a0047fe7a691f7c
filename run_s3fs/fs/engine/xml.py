"""The few S3 XML documents the engine reads, parsed with the C parser (expat).

Keys in listings are asked for URL-encoded (`encoding-type=url`) and decoded here: a key
may hold characters XML cannot carry faithfully (a CR is normalised to LF by every XML
parser, s3fs-fuse#2136). S3 encodes them as a form would (a space is `+`), as botocore
decodes them; decoded only when the answer says it is encoded, since a server that
ignores the parameter sends the keys as they are.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from urllib.parse import unquote_plus

from run_s3fs.fs.engine.types import ListEntry, Page

_NAMESPACE = re.compile(rb'\sxmlns="[^"]*"', re.ASCII)


def _root(body: bytes) -> ET.Element:
    # Without the namespace, tags read as plain names (and parse a little faster).
    return ET.fromstring(_NAMESPACE.sub(b"", body, count=1))


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def list_page(body: bytes) -> Page:
    """A ListObjectsV2 answer → its objects, common prefixes and continuation token."""
    root = _root(body)
    decode = unquote_plus if (root.findtext("EncodingType") or "").lower() == "url" else _same
    files = []
    for item in root.iterfind("Contents"):
        files.append(
            ListEntry(
                decode(item.findtext("Key") or ""),
                int(item.findtext("Size") or 0),
                parse_time(item.findtext("LastModified")),
                quoted(item.findtext("ETag") or ""),
            )
        )
    prefixes = [decode(p.findtext("Prefix") or "") for p in root.iterfind("CommonPrefixes")]
    truncated = (root.findtext("IsTruncated") or "").lower() == "true"
    token = root.findtext("NextContinuationToken") if truncated else None
    return Page(files, prefixes, token or None)


def quoted(etag: str) -> str:
    """An ETag as HEAD gives it, in quotes (some servers list it without)."""
    return etag if not etag or etag.startswith(('"', 'W/"')) else f'"{etag}"'


def _same(text: str) -> str:
    return text


def find(body: bytes, tag: str) -> str:
    """The text of the first `tag` anywhere in a small answer (ETag, UploadId)."""
    element = _root(body).find(f".//{tag}")
    return (element.text or "") if element is not None else ""


def delete_errors(body: bytes) -> list[tuple[str, str, str]]:
    """(key, code, message) of each key a DeleteObjects answer could not delete."""
    if not body:
        return []
    return [
        (e.findtext("Key") or "", e.findtext("Code") or "", e.findtext("Message") or "")
        for e in _root(body).iterfind("Error")
    ]


def complete_multipart(parts: list[tuple[int, str]]) -> bytes:
    """The CompleteMultipartUpload request body for (part number, ETag) pairs."""
    items = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{_escape(etag)}</ETag></Part>"
        for n, etag in parts
    )
    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()


def delete_objects(keys: list[str]) -> bytes:
    items = "".join(f"<Object><Key>{_escape(k)}</Key></Object>" for k in keys)
    return f"<Delete><Quiet>true</Quiet>{items}</Delete>".encode("utf-8", "surrogateescape")


def _escape(text: str) -> str:
    # Characters XML 1.0 cannot hold literally (CR would be normalised away) as references.
    out = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace('"', "&quot;")
    return "".join(c if c >= " " or c in "\t" else f"&#{ord(c)};" for c in out)

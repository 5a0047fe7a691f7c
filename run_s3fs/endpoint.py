"""Endpoint rules both halves need once: is an endpoint AWS, which addressing style it
takes, and how a bucket and a key become a request's host and path.

The launcher uses them to build s3fs's command line; the bundled backend's engine to
address its requests. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

DEFAULT_REGION = "us-east-1"
_AWS_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")


class BadURL(ValueError):
    """An endpoint URL that cannot be used; the message says why, in a few words."""


def is_aws(url: str | None) -> bool:
    """True for AWS's own endpoints (and for no URL at all: AWS is the default)."""
    if url is None:
        return True
    host = (urlsplit(url).hostname or "").lower()
    return host.endswith(_AWS_SUFFIXES) or host == "amazonaws.com"


def check_url(url: str) -> str:
    """`url` without its trailing slash if it is a usable http(s) endpoint, else BadURL.

    A user:password@ part is refused without repeating it: it would be a secret."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadURL("is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadURL("must start with http:// or https://")
    if "@" in parts.netloc:
        raise BadURL("must not contain user:password@")
    if not parts.hostname:
        raise BadURL("has no host name")
    if port == 0:
        raise BadURL("has port 0")
    if parts.query or parts.fragment:
        raise BadURL("must not have a ?query or #fragment")
    return url.rstrip("/")


def aws_url(region: str) -> str:
    """AWS's regional S3 endpoint."""
    suffix = ".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com"
    return f"https://s3.{region}{suffix}"


def dns_compatible(bucket: str) -> bool:
    """A bucket that can be a host name label under TLS: virtual-hosted addressing works.
    (Dots would break the endpoint's wildcard certificate; botocore falls back too.)"""
    return (
        3 <= len(bucket) <= 63
        and bucket == bucket.lower()
        and "." not in bucket
        and "_" not in bucket
        and bucket[0].isalnum()
        and bucket[-1].isalnum()
    )


def quote_key(key: str) -> str:
    """A key as a request path: every byte but unreserved ones and `/` percent-encoded,
    once (S3 signs the path as sent, without double encoding or normalising it)."""
    return quote(key.encode("utf-8", "surrogateescape"), safe="/~")


def quote_query(value: str) -> str:
    """A query-string value, encoded as SigV4's canonical form wants it."""
    return quote(value.encode("utf-8", "surrogateescape"), safe="-_.~")


@dataclass(frozen=True)
class Endpoint:
    """Where a bucket's requests go: scheme, host header, and the path before the key."""

    scheme: str  # http | https
    host: str  # the Host header (with :port when not the scheme's default)
    connect_host: str  # the name to resolve and connect to
    port: int
    base_path: str  # "" or "/bucket" (path style), with any path of the URL before it
    region: str

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def path(self, key: str = "") -> str:
        """The request path of `key` (the bucket itself for "")."""
        return f"{self.base_path}/{quote_key(key)}"

    def with_region(self, region: str, url: str | None, bucket: str, path_style: bool) -> Endpoint:
        """The same bucket in another region (after S3 said the bucket lives there): a new
        AWS endpoint when the URL was AWS's default, else the same host, re-signed."""
        if url is None:
            return resolve(None, bucket, region, path_style)
        return Endpoint(
            self.scheme, self.host, self.connect_host, self.port, self.base_path, region
        )


def resolve(url: str | None, bucket: str, region: str, path_style: bool) -> Endpoint:
    """The endpoint for `bucket`: `url` (default AWS's for `region`), path-style or
    virtual-hosted. Path style when asked for, for every endpoint that is not AWS (an
    S3-compatible service rarely has wildcard DNS), and for buckets that cannot be a host
    name."""
    base = check_url(url or aws_url(region))
    parts = urlsplit(base)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    url_path = parts.path.rstrip("/")
    virtual = not path_style and is_aws(base) and dns_compatible(bucket)
    if virtual:
        host = f"{bucket}.{host}"
        base_path = url_path
    else:
        base_path = f"{url_path}/{bucket}"
    header = host if port == default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):  # an IPv6 literal
        header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    return Endpoint(scheme, header, host, port, base_path, region)

"""HEAD requests without botocore's per-call machinery.

`ls -l` of a big directory is a HEAD per entry, and botocore spends ~1.9 ms of CPU on
each (events, endpoint rules, validation, serialisation, response parsing) where the
request itself needs a signature and a socket: ~0.8 ms here. The CPU matters because
the client shares the machine (and the GIL) with everything else the mount does.

The light path reuses the client's own pieces: its HTTP session (pool, timeouts, TLS,
proxies), its credentials (refreshed as usual) and SigV4. It takes the plain answers,
200 and 404, and retries server errors (5xx) as botocore would, the same number of
times; anything else (403, a redirect, a network failure) is left to the full botocore
call and its own retries, and a network failure turns the light path off for a while.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from typing import Any

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.utils import percent_encode

log = logging.getLogger("run_s3fs.fs.s3")

FALLBACK = object()  # no plain answer: ask through botocore
PROBE_KEY = "run-s3fs-url-probe"
PAUSE_AFTER_FAILURE = 30.0  # seconds the light path stays off after a network failure
META = "x-amz-meta-"


class ServerError(Exception):
    """5xx on every attempt."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Captured(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


def base_url(client: Any, bucket: str) -> str | None:
    """The URL botocore would use for a key, without the key: captured from a HEAD that
    is stopped before it is sent, so addressing style and endpoint rules are botocore's."""

    def grab(request: Any, **_kwargs: Any) -> None:
        raise _Captured(request.url)

    event = "before-send.s3.HeadObject"
    client.meta.events.register_first(event, grab)
    try:
        client.head_object(Bucket=bucket, Key=PROBE_KEY)
    except _Captured as c:
        url = c.url
    except Exception:
        return None
    else:
        return None
    finally:
        client.meta.events.unregister(event, grab)
    if "?" in url or not url.endswith("/" + PROBE_KEY):
        return None
    return url[: -len(PROBE_KEY)]


class LightHead:
    """`head(key)` → (status 200: headers dict) | None (404) | FALLBACK."""

    def __init__(self, client: Any, bucket: str, retries: int) -> None:
        self._retries = retries
        self._base: str | None = None
        self._paused_until = 0.0
        try:
            self._session = client._endpoint.http_session
            self._credentials = client._request_signer._credentials
            self._region = client.meta.region_name
            if self._credentials is not None and client.meta.config.signature_version in (
                "s3v4",
                "v4",
            ):
                self._base = base_url(client, bucket)
        except AttributeError:  # another botocore: the full path only
            self._base = None
        if self._base is None:
            log.debug("light HEAD path off")

    def head(self, key: str) -> dict[str, Any] | object | None:
        """Raises ServerError once the retries are spent."""
        for attempt in range(self._retries + 1):
            if self._base is None or time.monotonic() < self._paused_until:
                return FALLBACK
            status, answer = self._once(key)
            if status < 500:
                return answer
            if attempt < self._retries:
                time.sleep(min(10.0, 0.2 * 2**attempt) * (0.5 + random.random() / 2))
        raise ServerError(status)

    def _once(self, key: str) -> tuple[int, Any]:
        try:
            request = AWSRequest("HEAD", self._base + percent_encode(key, safe="/~"))
            S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(
                request
            )
            response = self._session.send(request.prepare())
        except Exception as e:  # network trouble: botocore retries it, and we pause
            log.debug("light HEAD %s: %s; using the full path for a while", key, type(e).__name__)
            self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            return 0, FALLBACK
        status = response.status_code
        if status == 404:
            return status, None
        if status != 200:
            return status, FALLBACK
        return status, parse(response.headers)


def parse(headers: Any) -> dict[str, Any]:
    """The fields of a HEAD response that S3.head uses, as botocore names them."""
    modified = headers.get("Last-Modified")
    metadata: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(META):
            metadata[lower[len(META) :]] = value
    return {
        "ContentLength": int(headers.get("Content-Length") or 0),
        "LastModified": email.utils.parsedate_to_datetime(modified) if modified else None,
        "ETag": headers.get("ETag", ""),
        "ContentType": headers.get("Content-Type", ""),
        "Metadata": metadata,
    }

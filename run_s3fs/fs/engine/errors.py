"""S3 failures as errnos: what every layer above the engine sees (S3Error is an OSError).

The mapping follows what a program on a local file system would make of the failure:
a missing key is ENOENT, a refused signature EACCES, an object replaced under a pinned
read ESTALE, a service that stays away (after the retries) EIO.
"""

from __future__ import annotations

import errno
import re


class S3Error(OSError):
    """An S3 failure as an errno, with S3's error code (or the HTTP status, or the
    transport's error name) kept for the log. The message never holds a secret."""

    def __init__(self, err: int, message: str, code: str = "", status: int = 0) -> None:
        super().__init__(err, message)
        self.code = code
        self.status = status


ERRNO_BY_CODE = {
    "NoSuchKey": errno.ENOENT,
    "NotFound": errno.ENOENT,
    "NoSuchBucket": errno.ENOENT,
    "NoSuchUpload": errno.ENOENT,
    "AccessDenied": errno.EACCES,
    "Forbidden": errno.EACCES,
    "InvalidAccessKeyId": errno.EACCES,
    "SignatureDoesNotMatch": errno.EACCES,
    "ExpiredToken": errno.EACCES,
    "InvalidToken": errno.EACCES,
    "TokenRefreshRequired": errno.EACCES,
    "AllAccessDisabled": errno.EACCES,
    "AccountProblem": errno.EACCES,
    "InvalidRange": errno.EINVAL,
    # A read pinned to the version it opened (If-Match) finds the object replaced.
    "PreconditionFailed": errno.ESTALE,
    "EntityTooLarge": errno.EFBIG,
    "KeyTooLongError": errno.ENAMETOOLONG,
    "SlowDown": errno.EAGAIN,
    "InvalidObjectState": errno.EIO,
}

ERRNO_BY_STATUS = {
    404: errno.ENOENT,
    403: errno.EACCES,
    412: errno.ESTALE,
    416: errno.EINVAL,
    503: errno.EAGAIN,
}

# Answers that may name the bucket's region (a 301 or 307 redirect, a wrong-region 400):
# the request is re-signed for it and sent again.
REDIRECT_STATUSES = frozenset({301, 307, 400})

_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,300})</Message>")
_REGION = re.compile(rb"<Region>([a-z0-9-]{1,40})</Region>")


def error_code(body: bytes | None) -> tuple[str, str]:
    """(Code, Message) from an S3 error document; ("", "") if it is not one."""
    if not body:
        return "", ""
    code = _CODE.search(body)
    message = _MESSAGE.search(body)
    return (
        code.group(1).decode("utf-8", "replace") if code else "",
        message.group(1).decode("utf-8", "replace") if message else "",
    )


def error_region(body: bytes | None, headers: dict[str, str]) -> str | None:
    """The region S3 says the bucket lives in, from a redirect or a wrong-region answer."""
    region = headers.get("x-amz-bucket-region")
    if region:
        return region
    match = _REGION.search(body or b"")
    return match.group(1).decode() if match else None


def from_response(what: str, status: int, body: bytes | None) -> S3Error:
    """An error answer of the service → S3Error."""
    code, message = error_code(body)
    number = ERRNO_BY_CODE.get(code) or ERRNO_BY_STATUS.get(status, errno.EIO)
    label = code or str(status)
    detail = f" ({message})" if message and message != code else ""
    return S3Error(number, f"{what}: {label}{detail}", code or str(status), status)


def from_transport(what: str, name: str, message: str) -> S3Error:
    """A failure with no answer (refused, reset, timed out, DNS, TLS) → EIO."""
    return S3Error(errno.EIO, f"{what}: {message or name}", name)

"""use_sse, load_sse_c, storage_class and requester_pays → the engine's request headers,
as s3fs sends them (its curl.cpp AddSseRequestHead, PutRequest, insertV4Headers):

  SSE-S3   x-amz-server-side-encryption: AES256                       } on every PUT,
  SSE-KMS  x-amz-server-side-encryption: aws:kms, …-aws-kms-key-id    } multipart create
  storage  x-amz-storage-class (not sent for STANDARD)                 } and copy
  SSE-C    x-amz-server-side-encryption-customer-algorithm/-key/-key-MD5 per object
           (engine/sse.py), copies naming the source's key in x-amz-copy-source-…
  requester pays  x-amz-request-payer: requester, on every request

SSE-C key files follow s3fs: one key a line, raw (32 characters) or in base64 (longer),
blank lines and lines starting with # skipped, the first key the one new objects get;
the file must not be readable by group or others (s3fs: "should be 0600 permissions").
AWSSSECKEYS holds keys separated by ':' when no file is given; AWSSSEKMSID the KMS key
id for a bare use_sse=kmsid. Everything is checked at startup: one line and exit 78 for
a key file or key that cannot be used (64 for a malformed option, in options.py). No
message shows a key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any

from run_s3fs.errors import ConfigError
from run_s3fs.fs.engine.sse import CustomerKey, CustomerKeys
from run_s3fs.fs.options import Options

log = logging.getLogger("run_s3fs.fs")

_KEY_FILE_MAX = 64 * 1024
_RAW_KEY = 32  # AES-256


def engine_fields(
    opts: Options, environ: Mapping[str, str], aws: bool, quiet: bool = False
) -> dict[str, Any]:
    """EngineSettings' write_headers, request_headers and customer_keys for `opts`.
    `aws`: the endpoint is AWS's (which refuses SSE-KMS requests over plain http);
    `quiet`: no warning (the settings are made twice, for the probe and the mount)."""
    write: list[tuple[str, str]] = []
    if opts.sse == "s3":
        write.append(("x-amz-server-side-encryption", "AES256"))
    elif opts.sse == "kms":
        key_id = opts.sse_kms_id or environ.get("AWSSSEKMSID")
        if not key_id:
            raise ConfigError(
                "-o use_sse=kmsid needs a KMS key id: give use_sse=kmsid:KEY_ID or set AWSSSEKMSID"
            )
        if opts.url_given and opts.url.startswith("http://"):
            if aws:
                raise ConfigError(
                    "-o use_sse=kmsid: AWS refuses SSE-KMS requests over plain http;"
                    " use an https:// url"
                )
            if not quiet:
                log.warning("SSE-KMS over plain http: AWS would refuse it; %s may too", opts.url)
        write += [
            ("x-amz-server-side-encryption", "aws:kms"),
            ("x-amz-server-side-encryption-aws-kms-key-id", key_id),
        ]
    if opts.storage_class != "STANDARD":
        write.append(("x-amz-storage-class", opts.storage_class))
    request = [("x-amz-request-payer", "requester")] if opts.requester_pays else []
    return {
        "write_headers": tuple(write),
        "request_headers": tuple(request),
        "customer_keys": customer_keys(opts, environ),
    }


def customer_keys(opts: Options, environ: Mapping[str, str]) -> CustomerKeys | None:
    """The SSE-C keys: from the key file if one is named, else from AWSSSECKEYS; needed
    with use_sse=custom, optional otherwise (load_sse_c only reads with them)."""
    if opts.sse_c_file:
        keys = _keys_from_file(opts.sse_c_file)
    elif environ.get("AWSSSECKEYS"):
        items = environ["AWSSSECKEYS"].split(":")
        keys = _parse_keys(items, "AWSSSECKEYS", "key")
        if not keys:
            raise ConfigError("AWSSSECKEYS holds no SSE-C key")
    elif opts.sse == "c":
        raise ConfigError(
            "-o use_sse=custom needs SSE-C keys: give use_sse=custom:FILE or load_sse_c=FILE"
            " (one key a line, mode 0600), or set AWSSSECKEYS"
        )
    else:
        return None
    return CustomerKeys(tuple(keys), encrypt=opts.sse == "c")


def _keys_from_file(path: str) -> list[CustomerKey]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"could not open SSE-C key file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"SSE-C key file {path} is not a regular file")
        # s3fs's rule: no bit for group or others, and not executable.
        if st.st_mode & (stat.S_IXUSR | stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"SSE-C key file {path} should be 0600 permissions (it is"
                f" {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}"
            )
        data = os.read(fd, _KEY_FILE_MAX + 1)
    except OSError as e:
        raise ConfigError(f"could not read SSE-C key file {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _KEY_FILE_MAX:
        raise ConfigError(f"SSE-C key file {path} is larger than {_KEY_FILE_MAX} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"SSE-C key file {path} is not text") from None
    keys = _parse_keys(text.splitlines(), f"SSE-C key file {path}", "line")
    if not keys:
        raise ConfigError(f"SSE-C key file {path} holds no key")
    return keys


def _parse_keys(items: list[str], where: str, unit: str) -> list[CustomerKey]:
    keys = []
    for number, item in enumerate(items, 1):
        text = item.strip()
        if not text or text.startswith("#"):
            continue
        if len(text) > _RAW_KEY:  # s3fs: longer than a raw key means base64
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
        else:
            raw = text.encode("utf-8")
        if len(raw) != _RAW_KEY:
            raise ConfigError(
                f"{where}: {unit} {number} is not an AES-256 key (32 characters, or 32 bytes"
                " in base64: 44 characters)"
            )
        keys.append(CustomerKey(raw))
    return keys

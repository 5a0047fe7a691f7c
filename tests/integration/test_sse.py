"""use_sse, storage_class and requester_pays through the engine against moto: the headers
on every write, kept through copies (single and multipart, REPLACE and COPY metadata),
and SSE-C round trips with S3's SSE-C rules played by the fault proxy (moto ignores them).
The engines are built the way the backend builds them: options → engine_settings."""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import ACCESS_KEY, SECRET_KEY
from faultproxy import FaultProxy
from ssec_rules import SseCRules

from run_s3fs.fs.__main__ import engine_settings
from run_s3fs.fs.credentials import Credentials
from run_s3fs.fs.engine import Engine, open_engine
from run_s3fs.fs.options import parse_args

MIB = 1024 * 1024
NEW_KEY = bytes(range(32))
OLD_KEY = b"an-older-key-of-32-characters-.."
assert len(OLD_KEY) == 32


def engine(url: str, bucket: str, options: str) -> Engine:
    # multipart above 5 MiB and multipart copies above 5 MiB, so that 6 MiB takes both
    opts = parse_args(
        [
            bucket,
            "/mnt/unused",
            "-o",
            f"url={url},use_path_request_style,multipart_threshold=5,multipart_size=5,"
            f"singlepart_copy_limit=5,{options}",
        ]
    )
    settings = dataclasses.replace(
        engine_settings(opts), retries=1, connect_timeout=3, readwrite_timeout=20
    )
    return open_engine(settings, Credentials(ACCESS_KEY, SECRET_KEY))


def upload(e: Engine, key: str, data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return e.upload_file(key, str(path), len(data), {"mode": "33188"}, "application/x-test")


@pytest.fixture
def kms_key(s3_server) -> str:
    kms = boto3.client(
        "kms",
        endpoint_url=s3_server.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    return kms.create_key(Description="run-s3fs test")["KeyMetadata"]["Arn"]


def stored(s3, bucket: str, key: str) -> tuple:
    head = s3.head_object(Bucket=bucket, Key=key)
    return (
        head.get("ServerSideEncryption"),
        head.get("SSEKMSKeyId"),
        head.get("StorageClass", "STANDARD"),
    )


def test_sse_kms_and_storage_class_on_every_write_and_copy(
    s3_server, s3, bucket, kms_key, tmp_path
):
    big = os.urandom(6 * MIB)
    e = engine(s3_server.url, bucket, f"use_sse=kmsid:{kms_key},storage_class=standard_ia")
    try:
        e.put("small", b"hello", {"mode": "33188"}, "text/plain")
        upload(e, "big", big, tmp_path)
        e.copy("small", "renamed", 5, {"mode": "33261"}, "text/plain")  # rename, chmod
        e.copy("small", "dir-rename", 5)  # metadata copied (a directory rename's copies)
        e.copy("big", "big-renamed", len(big), {"mode": "33188"}, None)  # multipart copy
        e.copy("big", "big-copied", len(big))  # multipart copy, metadata from the source
        expected = ("aws:kms", kms_key, "STANDARD_IA")
        for key in ("small", "big", "renamed", "dir-rename", "big-renamed", "big-copied"):
            assert stored(s3, bucket, key) == expected, key
        assert e.get_range("big-renamed", 0, len(big)) == big
        assert s3.head_object(Bucket=bucket, Key="renamed")["Metadata"]["mode"] == "33261"
    finally:
        e.close()


def test_a_copy_without_the_headers_loses_them(s3_server, s3, bucket, kms_key):
    """Why every copy sends them again: a REPLACE copy on its own keeps neither."""
    s3.put_object(
        Bucket=bucket,
        Key="a",
        Body=b"x",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=kms_key,
        StorageClass="STANDARD_IA",
    )
    plain = engine(s3_server.url, bucket, "retries=1")
    try:
        plain.copy("a", "b", 1, {"mode": "33188"}, "text/plain")
    finally:
        plain.close()
    assert stored(s3, bucket, "b") == (None, None, "STANDARD")


def test_a_copy_keeps_what_the_mount_does_not_set(s3_server, s3, bucket, kms_key):
    """Given the source's HEAD (renames and metadata edits have it), a copy keeps its
    storage class and SSE-S3/SSE-KMS where the mount sets none; the mount's own win."""
    big = os.urandom(6 * MIB)
    for key, body in (("a", b"x"), ("big", big)):
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=kms_key,
            StorageClass="GLACIER_IR",
        )
    plain = engine(s3_server.url, bucket, "retries=1")
    own = engine(s3_server.url, bucket, "use_sse")
    try:
        plain.copy("a", "b", 1, {"mode": "33188"}, "text/plain", plain.head("a"))
        plain.copy("big", "big2", len(big), {"mode": "33188"}, None, plain.head("big"))
        plain.copy("big", "big3", len(big))  # multipart: the HEAD it makes serves
        own.copy("a", "c", 1, {"mode": "33188"}, "text/plain", own.head("a"))
    finally:
        plain.close()
        own.close()
    for key in ("b", "big2", "big3"):
        assert stored(s3, bucket, key) == ("aws:kms", kms_key, "GLACIER_IR"), key
    assert stored(s3, bucket, "c") == ("AES256", None, "GLACIER_IR")


def test_sse_s3_and_the_old_use_rrs(s3_server, s3, bucket):
    e = engine(s3_server.url, bucket, "use_sse,use_rrs=0,storage_class=glacier_ir")
    try:
        e.put("f", b"data", {}, "text/plain")
        e.copy("f", "g", 4, {"mode": "33188"}, "text/plain")
    finally:
        e.close()
    for key in ("f", "g"):
        assert stored(s3, bucket, key) == ("AES256", None, "GLACIER_IR")


def test_requester_pays_on_every_request(s3_server, s3, bucket, tmp_path):
    proxy = FaultProxy(s3_server.url).start()
    e = engine(proxy.url, bucket, "requester_pays")
    try:
        e.put("a", b"1", {}, "text/plain")
        upload(e, "big", os.urandom(6 * MIB), tmp_path)
        e.head("a")
        e.get_range("a", 0, 1)
        fd = os.open(tmp_path / "down", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            e.download("big", fd, 6 * MIB)
        finally:
            os.close(fd)
        e.list_dir("")
        e.copy("a", "b", 1, {"mode": "33188"}, "text/plain")
        e.copy("big", "big2", 6 * MIB)
        e.delete("a")
        e.delete_many(["b", "big"])
    finally:
        e.close()
        proxy.stop()
    seen = list(proxy.requests)
    kinds = {(method, "uploadId" in path or "uploads" in path) for method, path, _ in seen}
    assert {("PUT", True), ("POST", True), ("GET", False), ("HEAD", False)} <= kinds
    assert len(seen) >= 14
    for method, path, headers in seen:
        assert headers.get("x-amz-request-payer") == "requester", (method, path)


# --- SSE-C ---------------------------------------------------------------------------


def md5(raw: bytes) -> str:
    return base64.b64encode(hashlib.md5(raw).digest()).decode()


@pytest.fixture
def sse_proxy(s3_server) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_server.url, sse_c=SseCRules()).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def through(sse_proxy):
    """boto3 through the SSE-C-enforcing proxy."""
    return boto3.client(
        "s3",
        endpoint_url=sse_proxy.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def keys_file(tmp_path) -> Path:
    path = tmp_path / "sse-c.keys"
    path.write_text(f"{base64.b64encode(NEW_KEY).decode()}\n{OLD_KEY.decode()}\n")
    path.chmod(0o600)
    return path


def customer_key(raw: bytes) -> dict:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": raw}


def head_with(through, bucket: str, key: str, raw: bytes | None) -> dict:
    extra = customer_key(raw) if raw else {}
    return through.head_object(Bucket=bucket, Key=key, **extra)


def test_sse_c_round_trip(sse_proxy, through, bucket, keys_file, tmp_path):
    data, big = b"secret data", os.urandom(6 * MIB)
    e = engine(sse_proxy.url, bucket, f"use_sse=custom:{keys_file},storage_class=onezone_ia")
    try:
        e.put("small", data, {"mode": "33188"}, "text/plain")
        upload(e, "big", big, tmp_path)
        # without the key the object cannot be read; with it, S3 names the key's MD5
        for key in ("small", "big"):
            with pytest.raises(ClientError) as refused:
                through.get_object(Bucket=bucket, Key=key)
            assert refused.value.response["Error"]["Code"] in ("400", "InvalidRequest")
            with pytest.raises(ClientError):
                head_with(through, bucket, key, OLD_KEY)  # the wrong key: 403
            head = head_with(through, bucket, key, NEW_KEY)
            assert head["SSECustomerKeyMD5"] == md5(NEW_KEY)
            assert head["StorageClass"] == "ONEZONE_IA"
        # the engine reads them back: HEAD, ranged GETs, a whole download
        assert e.head("small").size == len(data)
        assert e.get_range("small", 7, 4) == b"data"
        assert e.get_start("small", 6)[1] == b"secret"
        assert e.get_range("big", 5 * MIB, MIB) == big[5 * MIB :]
        fd = os.open(tmp_path / "down", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            e.download("big", fd, len(big))
        finally:
            os.close(fd)
        assert (tmp_path / "down").read_bytes() == big
        # copies (rename, chmod; single and multipart) stay encrypted with the key
        e.copy("small", "renamed", len(data), {"mode": "33261"}, "text/plain")
        e.copy("small", "small", len(data), {"mode": "33152"}, "text/plain")  # chmod
        e.copy("big", "big-renamed", len(big), {"mode": "33188"}, None)
        e.copy("big", "big-copied", len(big))
        for key in ("renamed", "small", "big-renamed", "big-copied"):
            assert head_with(through, bucket, key, NEW_KEY)["SSECustomerKeyMD5"] == md5(NEW_KEY)
            assert head_with(through, bucket, key, NEW_KEY)["StorageClass"] == "ONEZONE_IA"
        assert e.get_range("big-copied", 0, len(big)) == big
        assert e.get_range("renamed", 0, 100) == data
    finally:
        e.close()


def test_sse_c_older_keys_and_plain_objects_are_read(sse_proxy, through, bucket, keys_file):
    through.put_object(Bucket=bucket, Key="old", Body=b"old key", **customer_key(OLD_KEY))
    through.put_object(Bucket=bucket, Key="plain", Body=b"no key")
    e = engine(sse_proxy.url, bucket, f"use_sse=c:{keys_file}")
    try:
        assert e.get_range("old", 0, 100) == b"old key"
        assert e.get_range("plain", 0, 100) == b"no key"
        assert e.head("old").size == 7 and e.head("plain").size == 6
        # a rename re-encrypts with the current key, as s3fs does
        e.copy("old", "old-renamed", 7, {"mode": "33188"}, "text/plain")
        assert head_with(through, bucket, "old-renamed", NEW_KEY)["ContentLength"] == 7
        e.delete("old")
        assert e.head("old") is None
    finally:
        e.close()


def test_load_sse_c_reads_with_keys_writes_plain_keeps_a_copy_encrypted(
    sse_proxy, through, bucket, keys_file
):
    through.put_object(Bucket=bucket, Key="enc", Body=b"12345", **customer_key(OLD_KEY))
    e = engine(sse_proxy.url, bucket, f"load_sse_c={keys_file}")
    try:
        assert e.get_range("enc", 0, 5) == b"12345"
        e.put("new", b"plain", {}, "text/plain")
        assert through.get_object(Bucket=bucket, Key="new")["Body"].read() == b"plain"
        e.copy("enc", "enc-renamed", 5, {"mode": "33188"}, "text/plain")
        assert head_with(through, bucket, "enc-renamed", OLD_KEY)["ContentLength"] == 5
    finally:
        e.close()


def test_without_the_key_the_engine_cannot_read(sse_proxy, through, bucket):
    through.put_object(Bucket=bucket, Key="enc", Body=b"12345", **customer_key(NEW_KEY))
    e = engine(sse_proxy.url, bucket, "retries=1")
    try:
        with pytest.raises(OSError) as refused:
            e.get_range("enc", 0, 5)
        assert refused.value.errno in (errno.EIO, errno.EINVAL, errno.EACCES)
    finally:
        e.close()
    assert sse_proxy.sse_c.refused >= 1
    # no key ever appears in the proxy's view of a request except in its own header
    secret = base64.b64encode(NEW_KEY).decode()
    for _method, path, _headers in sse_proxy.requests:
        assert secret not in path


def test_a_mount_with_other_keys_is_denied(sse_proxy, through, bucket, tmp_path):
    """Every key tried, none fits: the answer is S3's 403 (EACCES), not the 400 of the
    keyless attempt."""
    through.put_object(Bucket=bucket, Key="enc", Body=b"12345", **customer_key(NEW_KEY))
    path = tmp_path / "other.keys"
    path.write_text(OLD_KEY.decode() + "\n")
    path.chmod(0o600)
    e = engine(sse_proxy.url, bucket, f"use_sse=c:{path}")
    try:
        with pytest.raises(OSError) as denied:
            e.get_range("enc", 0, 5)
        assert denied.value.errno == errno.EACCES
        with pytest.raises(OSError) as denied:
            e.head("enc")
        assert denied.value.errno == errno.EACCES
    finally:
        e.close()


def test_the_key_an_object_took_is_remembered(sse_proxy, through, bucket, keys_file):
    through.put_object(Bucket=bucket, Key="plain", Body=b"no key")
    e = engine(sse_proxy.url, bucket, f"use_sse=c:{keys_file}")
    try:
        e.put("mine", b"data", {}, "text/plain")

        def requests_for(call) -> int:
            before = sse_proxy.stats.requests
            call()
            return sse_proxy.stats.requests - before

        assert requests_for(lambda: e.head("mine")) == 1  # written with the first key
        assert requests_for(lambda: e.head("plain")) == 2  # the first key, then none
        assert requests_for(lambda: e.get_range("plain", 0, 2)) == 1
        assert requests_for(lambda: e.head("missing")) == 1  # a 404 is no wrong key
    finally:
        e.close()


class CountingSource:
    """A source of temporary credentials (the engine's protocol) that counts refusals."""

    fixed = None

    def __init__(self) -> None:
        self.creds = Credentials(ACCESS_KEY, SECRET_KEY)
        self.invalidated = 0

    def get(self) -> Credentials:
        return self.creds

    def invalidate(self, creds: object) -> bool:
        self.invalidated += 1
        return False


def test_a_wrong_key_guess_is_no_expired_credentials(sse_proxy, through, bucket, keys_file):
    """A HEAD answered 400/403 (no body) may mean expired credentials; while SSE-C keys
    are being tried, it means a wrong key: no credentials refetch for it."""
    through.put_object(Bucket=bucket, Key="plain", Body=b"no key")
    through.put_object(Bucket=bucket, Key="old", Body=b"old", **customer_key(OLD_KEY))
    opts = parse_args([bucket, "/mnt/unused", "-o", f"url={sse_proxy.url},use_sse=c:{keys_file}"])
    source = CountingSource()
    e = open_engine(engine_settings(opts), source)
    try:
        assert e.head("plain").size == 6 and e.head("old").size == 3
        assert e.get_range("old", 0, 3) == b"old"
    finally:
        e.close()
    assert sse_proxy.sse_c.refused >= 3 and source.invalidated == 0

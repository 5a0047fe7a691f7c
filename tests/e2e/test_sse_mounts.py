"""use_sse and storage_class through a real mount of the bundled backend: what a file
becomes in S3 after it is written, renamed (file and directory) and chmod'ed; SSE-C
files read back through another mount with the key and through none without it (S3's
SSE-C rules played by the fault proxy in front of moto, which ignores them)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import ACCESS_KEY, SECRET_KEY, start_mount, write_passwd
from faultproxy import FaultProxy
from ssec_rules import SseCRules

MIB = 1024 * 1024
KEY = os.urandom(32)


@pytest.fixture
def pw(tmp_path) -> Path:
    return write_passwd(tmp_path / "passwd")


def client(url: str, service: str = "s3"):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def test_kms_and_storage_class_survive_rename_and_chmod(
    s3_server, s3, bucket, pw, tmp_path, require_fuse
):
    key_id = client(s3_server.url, "kms").create_key()["KeyMetadata"]["Arn"]
    big = os.urandom(7 * MIB)
    m = start_mount(
        "python",
        s3_server,
        bucket,
        tmp_path / "mnt",
        pw,
        [f"use_sse=kmsid:{key_id}", "storage_class=standard_ia", "multipart_threshold=5"],
    )
    try:
        root = m.path
        (root / "a.txt").write_bytes(b"hello")
        (root / "big.bin").write_bytes(big)
        os.rename(root / "a.txt", root / "b.txt")
        os.chmod(root / "b.txt", 0o600)
        os.utime(root / "big.bin", (1_600_000_000, 1_600_000_000))
        (root / "d").mkdir()
        (root / "d" / "in.txt").write_bytes(b"inside")
        os.rename(root / "d", root / "e")
        assert (root / "b.txt").read_bytes() == b"hello"
        assert stat.S_IMODE(os.stat(root / "b.txt").st_mode) == 0o600
    finally:
        assert m.stop() == 0
    for key in ("b.txt", "big.bin", "e/in.txt", "e/"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == "aws:kms", key
        assert head.get("SSEKMSKeyId") == key_id, key
        assert head.get("StorageClass") == "STANDARD_IA", key
    assert s3.head_object(Bucket=bucket, Key="b.txt")["Metadata"]["mode"] == str(0o100600)
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == big


def test_sse_c_files_read_back_with_the_key_only(s3_server, bucket, pw, tmp_path, require_fuse):
    proxy = FaultProxy(s3_server.url, sse_c=SseCRules()).start()
    keys = tmp_path / "sse-c.keys"
    keys.write_text(base64.b64encode(KEY).decode() + "\n")
    keys.chmod(0o600)
    data = os.urandom(6 * MIB + 123)
    options = [f"url={proxy.url}", "multipart_threshold=5", "stat_cache_expire=0"]
    try:
        writer = start_mount(
            "python", s3_server, bucket, tmp_path / "w", pw, [*options, f"use_sse=c:{keys}"]
        )
        try:
            (writer.path / "small").write_bytes(b"secret")
            (writer.path / "big").write_bytes(data)
            os.rename(writer.path / "small", writer.path / "renamed")
            os.chmod(writer.path / "renamed", 0o640)
        finally:
            assert writer.stop() == 0
        reader = start_mount(
            "python", s3_server, bucket, tmp_path / "r", pw, [*options, f"load_sse_c={keys}"]
        )
        keyless = start_mount("python", s3_server, bucket, tmp_path / "n", pw, options)
        try:
            assert (reader.path / "renamed").read_bytes() == b"secret"
            assert stat.S_IMODE(os.stat(reader.path / "renamed").st_mode) == 0o640
            assert hashlib.sha256((reader.path / "big").read_bytes()).digest() == (
                hashlib.sha256(data).digest()
            )
            with pytest.raises(OSError):
                (keyless.path / "renamed").read_bytes()
        finally:
            assert reader.stop() == 0
            keyless.stop()
        s3 = client(proxy.url)
        for key in ("renamed", "big"):
            with pytest.raises(ClientError):
                s3.get_object(Bucket=bucket, Key=key)
            head = s3.head_object(
                Bucket=bucket,
                Key=key,
                SSECustomerAlgorithm="AES256",
                SSECustomerKey=KEY,
            )
            assert head["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(KEY).digest()).decode()
        for log in (tmp_path / "w.python.log", tmp_path / "r.python.log"):
            assert base64.b64encode(KEY).decode() not in log.read_text()
    finally:
        proxy.stop()


def test_sse_c_objects_cross_between_s3fs_and_the_bundled_backend(
    s3_server, bucket, pw, tmp_path, require_fuse
):
    """The same key file serves both: s3fs 1.90's SSE-C objects read back through the
    bundled backend and the other way round, under S3's SSE-C rules."""
    proxy = FaultProxy(s3_server.url, sse_c=SseCRules()).start()
    keys = tmp_path / "sse-c.keys"
    keys.write_text(base64.b64encode(KEY).decode() + "\n")
    keys.chmod(0o600)
    options = [f"url={proxy.url}", f"use_sse=custom:{keys}"]
    try:
        m = start_mount("s3fs", s3_server, bucket, tmp_path / "s1", pw, options)
        try:
            (m.path / "from-s3fs").write_bytes(b"written by s3fs")
        finally:
            m.stop()
        key_md5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()
        assert proxy.sse_c.objects[f"/{bucket}/from-s3fs"] == key_md5
        m = start_mount("python", s3_server, bucket, tmp_path / "p", pw, options)
        try:
            assert (m.path / "from-s3fs").read_bytes() == b"written by s3fs"
            (m.path / "from-python").write_bytes(b"written by python")
            os.rename(m.path / "from-s3fs", m.path / "renamed-by-python")
        finally:
            assert m.stop() == 0
        m = start_mount("s3fs", s3_server, bucket, tmp_path / "s2", pw, options)
        try:
            assert (m.path / "from-python").read_bytes() == b"written by python"
            assert (m.path / "renamed-by-python").read_bytes() == b"written by s3fs"
        finally:
            m.stop()
        for key in ("from-python", "renamed-by-python"):
            assert proxy.sse_c.objects[f"/{bucket}/{key}"] == key_md5
        with pytest.raises(ClientError):
            client(proxy.url).get_object(Bucket=bucket, Key="from-python")
    finally:
        proxy.stop()


def test_a_plain_mount_keeps_an_objects_encryption_and_class(
    s3_server, s3, bucket, pw, tmp_path, require_fuse
):
    """Objects written elsewhere with SSE-KMS and a storage class keep both through a
    chmod, a utime and a rename on a mount that sets neither (S3 alone would reset them
    to STANDARD and the bucket's default encryption)."""
    key_id = client(s3_server.url, "kms").create_key()["KeyMetadata"]["Arn"]
    s3.put_object(
        Bucket=bucket,
        Key="f",
        Body=b"elsewhere",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_id,
        StorageClass="INTELLIGENT_TIERING",
    )
    m = start_mount("python", s3_server, bucket, tmp_path / "mnt", pw)
    try:
        os.chmod(m.path / "f", 0o600)
        os.utime(m.path / "f", (1_600_000_000, 1_600_000_000))
        os.rename(m.path / "f", m.path / "g")
    finally:
        assert m.stop() == 0
    head = s3.head_object(Bucket=bucket, Key="g")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_id)
    assert head["StorageClass"] == "INTELLIGENT_TIERING"
    assert head["Metadata"]["mode"] == str(0o100600)

"""The light HEAD path (run_s3fs.fs.lighthead) answers exactly as botocore's head_object,
for awkward keys too, and leaves whatever is not a plain 200/404 to botocore."""

from __future__ import annotations

import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from faultproxy import FaultProxy

from run_s3fs.fs.credentials import Credentials
from run_s3fs.fs.lighthead import FALLBACK
from run_s3fs.fs.s3 import S3, S3Settings

KEYS = [
    "plain.txt",
    "a b/ü+%#?&=.txt",
    "日本/語~!$'()*,;@.bin",
    "dir/",
    "trailing space ",
    "x" * 900,
]


def make(url: str, bucket: str) -> S3:
    settings = S3Settings(
        bucket=bucket,
        url=url,
        region="us-east-1",
        path_style=True,
        retries=1,
        connect_timeout=3,
        read_timeout=10,
        pool_size=8,
        transfer_threads=2,
        part_size=5 * 1024 * 1024,
        multipart_threshold=8 * 1024 * 1024,
    )
    return S3(settings, Credentials(ACCESS_KEY, SECRET_KEY, source="test"))


@pytest.fixture
def fs3(s3_server, bucket):
    s3 = make(s3_server.url, bucket)
    yield s3
    s3.close()


def test_light_head_matches_botocore(fs3, s3_server, s3, bucket):
    for i, key in enumerate(KEYS):
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=b"z" * i,
            ContentType="text/x-test" if i % 2 else "application/x-directory",
            Metadata={"mode": "33188", "uid": str(i), "MixedCase": "Value"[: i % 5]},
        )
    full = make(s3_server.url, bucket)
    full._light._base = None  # botocore only
    try:
        for key in [*KEYS, "missing", "missing/"]:
            assert fs3._light.head(key) is not FALLBACK, key  # the light path answers
            assert fs3.head(key) == full.head(key), key
        assert fs3.head("missing") is None
    finally:
        full.close()


def test_other_answers_go_to_botocore(s3_server, bucket, s3):
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc", Metadata={"mode": "33188"})
    proxy = FaultProxy(s3_server.url).start()
    fs3 = make(proxy.url, bucket)
    try:
        assert fs3._light.head("k") is not FALLBACK
        proxy.down()
        assert fs3._light.head("k") is FALLBACK  # a network failure: botocore retries it
        proxy.up()
        assert fs3._light.head("k") is FALLBACK  # and the light path pauses a while
        info = fs3.head("k")
        assert info is not None and info.size == 3 and info.metadata == {"mode": "33188"}
    finally:
        fs3.close()
        proxy.stop()

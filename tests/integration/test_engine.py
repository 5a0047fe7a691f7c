"""The bundled backend's S3 engine (run_s3fs.fs.engine) against the moto server:
listings, transfers, copies, deletes, errors as errno, retries, timeouts, redirects."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from engine_support import make_engine
from faultproxy import FaultProxy, FaultRates

from run_s3fs.devserver import free_port
from run_s3fs.fs.engine import S3Error
from run_s3fs.fs.engine.crt import Link

MIB = 1024 * 1024
KEYS = [
    "plain.txt",
    "a b/ü+%#?&=.txt",
    "日本/語~!$'()*,;@.bin",
    "dir/",
    "trailing space ",
    "cr\rin name",
    "x" * 900,
]


@pytest.fixture
def fs3(s3_server, bucket):
    s3 = make_engine(s3_server.url, bucket)
    yield s3
    s3.close()


def test_head_put_get(fs3, s3, bucket):
    etag = fs3.put("a b/ü+%#.txt", b"hello world", {"mode": "33188"}, "text/plain")
    info = fs3.head("a b/ü+%#.txt")
    assert info is not None and info.etag == etag
    assert (info.size, info.content_type, info.metadata) == (11, "text/plain", {"mode": "33188"})
    assert fs3.get_range("a b/ü+%#.txt", 6, 5) == b"world"
    assert fs3.get_range("a b/ü+%#.txt", 6, 100) == b"world"  # short at the end
    assert fs3.get_range("a b/ü+%#.txt", 11, 5) == b""  # at the end
    assert fs3.head("missing") is None


def test_head_answers_as_botocore_does(fs3, s3, bucket):
    for i, key in enumerate(KEYS):
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=b"z" * i,
            ContentType="text/x-test" if i % 2 else "application/x-directory",
            Metadata={"mode": "33188", "uid": str(i), "MixedCase": "Value"[: i % 5]},
        )
    for key in KEYS:
        info, head = fs3.head(key), s3.head_object(Bucket=bucket, Key=key)
        assert info is not None, key
        assert (info.size, info.etag, info.content_type) == (
            head["ContentLength"],
            head["ETag"],
            head["ContentType"],
        )
        assert info.metadata == {k.lower(): v for k, v in head["Metadata"].items()}
        assert info.last_modified == head["LastModified"]
    listed = {e.key: e for e in fs3.iter_keys("")}
    assert sorted(listed) == sorted(KEYS)  # a CR in a key survives the listing
    assert all(listed[k].etag == fs3.head(k).etag for k in KEYS)


def test_reads_are_pinned_to_the_version_opened(fs3, s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="f", Body=b"old content")["ETag"]
    assert fs3.get_range("f", 0, 3, first) == b"old"
    s3.put_object(Bucket=bucket, Key="f", Body=b"new content")
    with pytest.raises(S3Error) as e:
        fs3.get_range("f", 0, 3, first)
    assert e.value.errno == errno.ESTALE
    assert fs3.get_range("f", 0, 3) == b"new"


def test_async_heads_are_in_flight_together(s3_server, s3, bucket):
    for i in range(40):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
    # Each answer waits 0.3 s at the proxy: 40 in turn would take 12 s.
    proxy = FaultProxy(s3_server.url, FaultRates(delay=1.0, delay_seconds=0.3)).start()
    engine = make_engine(proxy.url, bucket)
    try:
        futures = [engine.head_async(f"k{i}") for i in range(40)]
        assert all(f.result(timeout=20).size == 1 for f in futures)
        assert proxy.stats.peak_in_flight >= 20
    finally:
        engine.close()
        proxy.stop()


def test_gets_sent_among_many_do_not_tell_the_link_its_speed(s3_server, s3, bucket):
    # A GET that waits behind others (for a connection, for the CPU) says little of the
    # link. Taken as the server's own wait, such times made an S3-like link look like a
    # slow server in the middle of a fast read: few, huge GETs from then on.
    s3.put_object(Bucket=bucket, Key="obj", Body=os.urandom(4 * MIB))
    proxy = FaultProxy(s3_server.url, FaultRates(delay=1.0, delay_seconds=0.3)).start()
    engine = make_engine(proxy.url, bucket)
    try:
        piece = 256 * 1024
        futures = [engine.get_range_async("obj", n * piece, piece) for n in range(12)]
        assert all(len(f.result(timeout=20)) == piece for f in futures)
        assert proxy.stats.peak_in_flight >= 8
        assert engine.link.samples == Link.CROWD  # the first few only
    finally:
        engine.close()
        proxy.stop()


def test_missing_key_is_enoent(fs3):
    with pytest.raises(S3Error) as e:
        fs3.get_range("missing", 0, 10)
    assert e.value.errno == errno.ENOENT


def test_listing_pages_objects_and_prefixes(fs3, s3, bucket):
    keys = [f"d/f{i:04d}" for i in range(250)] + [f"d/sub{i}/x" for i in range(30)] + ["d/"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))
    files, prefixes, token = [], [], None
    while True:  # many pages, prefixes split across them
        page = fs3.list_page("d/", token=token, max_keys=37)
        files += page.files
        prefixes += page.prefixes
        token = page.next_token
        if token is None:
            break
    assert sorted(e.key for e in files) == sorted(["d/", *keys[:250]])
    assert sorted(prefixes) == sorted(f"d/sub{i}/" for i in range(30))
    assert all(e.size == 1 for e in files if e.key != "d/")
    listing = fs3.list_dir("d/")
    assert (listing.files, sorted(listing.prefixes)) == (files, sorted(prefixes))
    assert len(list(fs3.iter_keys("d/"))) == 281
    assert [e.key for e in fs3.first_keys("d/", 2)] == ["d/", "d/f0000"]


def test_listing_more_than_1000_keys_default_page(fs3, s3, bucket):
    keys = [f"big/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    assert len(fs3.list_dir("big/").files) == 1100


def test_multipart_upload_parallel_parts(fs3, s3, bucket, tmp_path):
    data = random.Random(7).randbytes(17 * MIB + 123)  # 4 parts of 5 MiB (last short)
    path = tmp_path / "src"
    path.write_bytes(data)
    fs3.upload_file("big.bin", str(path), len(data), {"mode": "33188"}, "application/x-foo")
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-4")  # really multipart
    assert head["Metadata"] == {"mode": "33188"} and head["ContentType"] == "application/x-foo"
    body = s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    out = tmp_path / "dst"
    with open(out, "wb") as f:
        fs3.download("big.bin", f.fileno(), len(data), head["ETag"])
    assert out.read_bytes() == data


@pytest.mark.parametrize(
    ("part_size", "parallel", "parts"),
    [
        (10 * MIB, 10, 7),  # 32 MiB in 7 parts of 5 MiB (S3's least) keeps 7 busy, not 4
        (10 * MIB, 2, 4),  # parts of at most multipart_size
        (6 * MIB, 4, 6),  # 8 MiB would keep 4 busy: 6 is the most
    ],
)
def test_multipart_parts_keep_parallel_count_busy(
    s3_server, s3, bucket, tmp_path, part_size, parallel, parts
):
    data = os.urandom(32 * MIB)
    path = tmp_path / "src"
    path.write_bytes(data)
    engine = make_engine(s3_server.url, bucket, part_size=part_size, parallel_count=parallel)
    try:
        engine.upload_file("p", str(path), len(data), {}, "application/octet-stream")
    finally:
        engine.close()
    assert s3.head_object(Bucket=bucket, Key="p")["ETag"].strip('"').endswith(f"-{parts}")
    assert s3.get_object(Bucket=bucket, Key="p")["Body"].read() == data


def test_uploads_hold_no_more_part_bodies_than_upload_buffer(s3_server, s3, bucket, tmp_path):
    # Two 30 MiB files closing at once, 5 MiB parts, 8 in flight each allowed: without a
    # bound on the bodies in memory 12 parts (60 MiB, held twice: ours and the CRT's)
    # would be in flight; a 10 MiB buffer allows two at a time over both uploads.
    data = {name: os.urandom(30 * MIB) for name in ("a", "b")}
    for name, body in data.items():
        (tmp_path / name).write_bytes(body)
    proxy = FaultProxy(s3_server.url, FaultRates(delay=1.0, delay_seconds=0.2)).start()
    engine = make_engine(proxy.url, bucket, parallel_count=8, upload_buffer=10 * MIB)
    try:
        with ThreadPoolExecutor(2) as pool:
            list(
                pool.map(
                    lambda n: engine.upload_file(n, str(tmp_path / n), 30 * MIB, {}, "x/y"),
                    data,
                )
            )
    finally:
        engine.close()
        proxy.stop()
    assert proxy.stats.peak_in_flight <= 2 + 1  # + a create or complete of the other upload
    for name, body in data.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == body


def test_small_upload_is_single_put(fs3, s3, bucket, tmp_path):
    path = tmp_path / "small"
    path.write_bytes(b"abc")
    fs3.upload_file("small", str(path), 3, {}, "text/plain")
    assert "-" not in s3.head_object(Bucket=bucket, Key="small")["ETag"]


def test_failed_multipart_upload_is_aborted(s3_server, s3, bucket, tmp_path):
    data = os.urandom(11 * MIB)
    path = tmp_path / "src"
    path.write_bytes(data)
    s3fs = make_engine(s3_server.url, bucket)
    try:
        with pytest.raises(OSError):
            # The file is shorter than claimed: the last part cannot be read → failure.
            s3fs.upload_file("x.bin", str(path), 40 * MIB, {}, "text/plain")
    finally:
        s3fs.close()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_copy_replaces_metadata_keeps_content_type(fs3, s3, bucket):
    s3.put_object(
        Bucket=bucket, Key="f", Body=b"data", ContentType="image/png", Metadata={"a": "1"}
    )
    fs3.copy("f", "f", 4, {"mode": "33152"})
    head = s3.head_object(Bucket=bucket, Key="f")
    assert head["Metadata"] == {"mode": "33152"} and head["ContentType"] == "image/png"
    fs3.copy("f", "g", 4)  # plain copy keeps everything
    head = s3.head_object(Bucket=bucket, Key="g")
    assert head["Metadata"] == {"mode": "33152"} and head["ContentType"] == "image/png"


def test_multipart_copy_above_the_single_copy_limit(s3_server, s3, bucket):
    data = os.urandom(12 * MIB)
    s3.put_object(Bucket=bucket, Key="src", Body=data, Metadata={"mode": "33188"})
    # A 5 MiB limit stands in for S3's 5 GiB: the 12 MiB object goes by UploadPartCopy.
    fs3 = make_engine(s3_server.url, bucket, singlepart_copy_limit=5 * MIB)
    try:
        fs3.copy("src", "dst", len(data), {"mode": "33261"}, "text/plain")
    finally:
        fs3.close()
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["ETag"].strip('"').count("-") == 1
    assert head["Metadata"] == {"mode": "33261"} and head["ContentType"] == "text/plain"
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == data


def test_delete_and_delete_many(fs3, s3, bucket):
    keys = [f"k{i}" for i in range(1203)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    fs3.delete("k0")
    fs3.delete("never-existed")  # S3 semantics: not an error
    fs3.delete_many(keys[1:])
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_the_bucket_checks_listing(fs3, s3, bucket, s3_server):
    """What the backend's bucket check (fs/__main__.py) asks: the first page of the
    mount's prefix, or a NoSuchBucket error."""
    for key in ("top", "sub/path/a", "sub/path/d/b", "sub/other"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    # The mount's place in the bucket, listed as a lookup lists a directory.
    page = fs3.list_page("sub/path/", max_keys=200)
    assert [f.key for f in page.files] == ["sub/path/a"]
    assert page.prefixes == ["sub/path/d/"] and page.next_token is None
    assert fs3.list_page("", max_keys=1).next_token is not None  # 1 of the root's 2
    missing = make_engine(s3_server.url, "no-such-bucket-here")
    try:
        with pytest.raises(S3Error) as e:
            missing.list_page("", max_keys=1)
        assert e.value.errno == errno.ENOENT and e.value.code == "NoSuchBucket"
    finally:
        missing.close()


def test_unreachable_endpoint_is_eio(bucket):
    dead = make_engine(f"http://127.0.0.1:{free_port()}", bucket, retries=0, connect_timeout=1)
    try:
        with pytest.raises(S3Error) as e:
            dead.head("x")
        assert e.value.errno == errno.EIO
        assert ACCESS_KEY not in str(e.value) and SECRET_KEY not in str(e.value)
    finally:
        dead.close()


def test_5xx_are_retried(s3_server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="f", Body=b"payload")
    proxy = FaultProxy(s3_server.url, FaultRates(error500=0.3, slowdown503=0.1), seed=3).start()
    fs3 = make_engine(proxy.url, bucket, retries=8)
    try:
        for i in range(6):
            assert fs3.get_range("f", 0, 7) == b"payload"
            fs3.put(f"p{i}", b"x" * 100, {}, "text/plain")
        assert proxy.stats.error500 + proxy.stats.slowdown503 >= 2
    finally:
        fs3.close()
        proxy.stop()


def test_5xx_after_retries_is_eio(s3_server, bucket):
    proxy = FaultProxy(s3_server.url, FaultRates(error500=1.0), seed=1).start()
    fs3 = make_engine(proxy.url, bucket, retries=1)
    try:
        with pytest.raises(S3Error) as e:
            fs3.head("f")
        assert e.value.errno == errno.EIO
        assert proxy.stats.error500 == 2  # the first try and one retry
    finally:
        fs3.close()
        proxy.stop()


def test_a_stalled_request_times_out_and_is_retried(s3_server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="f", Body=b"payload")
    # Every answer held 5 s: with readwrite_timeout=1 each attempt is cut off.
    proxy = FaultProxy(s3_server.url, FaultRates(delay=1.0, delay_seconds=5)).start()
    engine = make_engine(proxy.url, bucket, retries=1, readwrite_timeout=1)
    try:
        with pytest.raises(S3Error) as e:
            engine.head("f")
        assert e.value.errno == errno.EIO and "no progress for 1s" in str(e.value)
        assert proxy.stats.requests == 2  # the first try and one retry
        proxy.set_rates(FaultRates())
        assert engine.get_range("f", 0, 7) == b"payload"
    finally:
        engine.close()
        proxy.stop()


@pytest.mark.parametrize("answer", ["redirect", "wrong-region"])
def test_a_bucket_in_another_region_is_followed(s3_server, s3, bucket, answer):
    s3.put_object(Bucket=bucket, Key="f", Body=b"payload")
    proxy = FaultProxy(s3_server.url, region="eu-west-3", region_answer=answer).start()
    engine = make_engine(proxy.url, bucket, region="us-east-1")
    try:
        assert engine.get_range("f", 0, 7) == b"payload"
        assert engine.head("f").size == 7
        assert proxy.stats.wrong_region == 1  # once told, every request is signed for it
    finally:
        engine.close()
        proxy.stop()

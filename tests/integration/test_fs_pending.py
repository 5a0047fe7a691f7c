"""Pending uploads (close() failed: EIO) survive whatever else fails while S3 is away.

The data-durability rule: an upload that fails after its retries is an error for the
writer (EIO) and the local copy is kept until it is uploaded. Other operations on such
a file that fail while the server is away must leave it pending: an unlink that could
not delete the object used to drop the pending data (test_faults' process-away test lost
files that way). A rename over a pending file supersedes its pending content: the
background retry must not upload it over the renamed file afterwards.
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, start_mount, wait_for, write_passwd
from faultproxy import FaultProxy

QUICK = ["retries=0", "connect_timeout=1", "readwrite_timeout=3", "upload_retry_interval=1"]


@pytest.fixture(scope="module")
def pw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_passwd(tmp_path_factory.mktemp("pw") / "passwd")


@pytest.fixture(scope="module")
def rig(
    s3_server, pw, tmp_path_factory, require_fuse
) -> Iterator[tuple[Any, Any, str, FaultProxy]]:
    """One mount through a fault proxy for the module; each test uses its own names."""
    client = s3_server.client(ACCESS_KEY, SECRET_KEY)
    bucket = f"fs-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    proxy = FaultProxy(s3_server.url).start()
    mnt = tmp_path_factory.mktemp("pending") / "mnt"
    m = start_mount("python", s3_server, bucket, mnt, pw, [f"url={proxy.url}", *QUICK])
    try:
        yield m, client, bucket, proxy
    finally:
        proxy.up()
        assert m.stop() == 0
        proxy.stop()
    assert "Traceback" not in m.log.read_text()


def body(client: Any, bucket: str, key: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def write_pending(path: Path, data: bytes, proxy: FaultProxy) -> None:
    """Write `data` to `path` with the server away: close() fails, the data is pending."""
    f = open(path, "wb")  # noqa: SIM115 - close() is the point
    proxy.down()
    f.write(data)
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.EIO


@pytest.mark.parametrize("uploaded_before", [True, False], ids=["stale-in-s3", "never-uploaded"])
def test_failed_unlink_keeps_the_pending_upload(rig, uploaded_before):
    m, client, bucket, proxy = rig
    name = f"unlink-{uuid.uuid4().hex[:8]}.txt"
    path = m.path / name
    try:
        if uploaded_before:
            path.write_bytes(b"acknowledged, then replaced")
        write_pending(path, b"pending while the server is away", proxy)
        with pytest.raises(OSError) as e:
            path.unlink()  # the DELETE cannot reach the server
        assert e.value.errno == errno.EIO
        # Failed: the file is still there, with the content its writer last wrote.
        assert path.read_bytes() == b"pending while the server is away"
    finally:
        proxy.up()
    # ... and the background retry uploads it, nobody touching it again.
    want = b"pending while the server is away"
    assert wait_for(lambda: body(client, bucket, name) == want, 15, 0.3), body(client, bucket, name)
    # An unlink that succeeds drops it for good: not uploaded again by the retry.
    path.unlink()
    time.sleep(2.5)  # two retry rounds
    assert body(client, bucket, name) is None
    assert not path.exists()


def test_rename_over_a_pending_file_supersedes_it(rig):
    m, client, bucket, proxy = rig
    src, dst = (f"{n}-{uuid.uuid4().hex[:8]}.txt" for n in ("src", "dst"))
    (m.path / src).write_bytes(b"the renamed file")
    try:
        write_pending(m.path / dst, b"pending, then replaced by a rename", proxy)
    finally:
        proxy.up()
    os.rename(m.path / src, m.path / dst)
    time.sleep(2.5)  # two background retry rounds: the old pending content stays out
    assert body(client, bucket, dst) == b"the renamed file"
    assert body(client, bucket, src) is None
    assert (m.path / dst).read_bytes() == b"the renamed file"

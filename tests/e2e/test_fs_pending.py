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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, Mount, start_mount, unmount, wait_for, write_passwd
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


@dataclass
class OwnRig:
    """A mount of its own (for a kill -9) through a fault proxy, spooling under tmp_path."""

    m: Mount
    client: Any
    bucket: str
    proxy: FaultProxy
    unsaved: Path  # where data whose upload failed is kept
    remount: Callable[[], Mount]  # the same mount again (same spool base)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.m, self.client, self.bucket, self.proxy, self.unsaved))


@pytest.fixture
def own_rig(request, s3_server, pw, tmp_path, require_fuse) -> Iterator[OwnRig]:
    """Extra mount options by indirect parametrization."""
    client = s3_server.client(ACCESS_KEY, SECRET_KEY)
    bucket = f"fs-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    proxy = FaultProxy(s3_server.url).start()
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    options = [f"url={proxy.url}", *QUICK, f"tmpdir={spool}", *getattr(request, "param", [])]
    mounts: list[Mount] = []

    def remount() -> Mount:
        mounts.append(start_mount("python", s3_server, bucket, tmp_path / "mnt", pw, options))
        return mounts[-1]

    unsaved = spool / f"run-s3fs-{os.geteuid()}" / "unsaved"
    try:
        yield OwnRig(remount(), client, bucket, proxy, unsaved, remount)
    finally:
        proxy.up()
        for m in mounts:
            m.stop()
        proxy.stop()


def test_data_whose_close_failed_outlives_a_kill_9(own_rig):
    """The writer was told EIO; its data must not vanish with the process. From the first
    failed upload the spool has a name in unsaved/ (a hard link: later writes show)."""
    m, client, bucket, proxy, unsaved = own_rig
    write_pending(m.path / "a.txt", b"first", proxy)
    kept = list(unsaved.iterdir())
    assert len(kept) == 1 and kept[0].name.endswith("-a.txt")
    assert kept[0].read_bytes() == b"first"
    assert oct(kept[0].stat().st_mode & 0o777) == oct(0o600)
    f = open(m.path / "a.txt", "ab")  # noqa: SIM115 - close() is the point
    f.write(b" and more")
    with pytest.raises(OSError):
        f.close()
    assert list(unsaved.iterdir()) == kept
    m.process.kill()
    m.process.wait(10)
    assert kept[0].read_bytes() == b"first and more"
    assert body(client, bucket, "a.txt") is None
    # The next start says so, and sweeps the dead mount's empty spool directory.
    dead_spools = list(unsaved.parent.glob(f"mount-{m.process.pid}-*"))
    assert dead_spools
    unmount(m.path)
    proxy.up()
    again = own_rig.remount()
    assert f"1 file(s) that an earlier run could not upload are in {unsaved}" in (
        again.log.read_text()
    )
    assert not any(p.exists() for p in dead_spools)


def test_the_kept_copy_goes_once_the_upload_succeeds(own_rig):
    m, client, bucket, proxy, unsaved = own_rig
    write_pending(m.path / "b.txt", b"late but safe", proxy)
    assert len(list(unsaved.iterdir())) == 1
    proxy.up()
    assert wait_for(lambda: body(client, bucket, "b.txt") == b"late but safe", 15, 0.3)
    assert wait_for(lambda: list(unsaved.iterdir()) == [], 5)


@pytest.mark.parametrize("own_rig", [["upload_retry_interval=600"]], indirect=True)
def test_an_unlinked_pending_file_leaves_no_copy(own_rig):
    m, client, bucket, proxy, unsaved = own_rig
    write_pending(m.path / "c.txt", b"unwanted", proxy)
    assert len(list(unsaved.iterdir())) == 1
    proxy.up()  # no background retry for 10 minutes: the unlink comes first
    (m.path / "c.txt").unlink()
    assert list(unsaved.iterdir()) == []
    assert body(client, bucket, "c.txt") is None

"""Extended attributes with `-o use_xattr`, in s3fs's format: one mount of each backend on
one bucket; what one sets, the other reads, and both write the same header."""

from __future__ import annotations

import errno
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Mount, Mounts, make_bucket

pytestmark = pytest.mark.e2e

VALUES = {
    "user.plain": b"value",
    "user.binary": bytes(range(256)),
    "user.empty-ish": b"\x00",
    "user.unicode ü": "日本".encode(),
}


@dataclass
class Pair:
    bucket: str
    s3: Any
    mounts: dict[str, Mount]

    def path(self, backend: str, name: str) -> Path:
        return self.mounts[backend].path / name

    def header(self, key: str) -> str | None:
        return self.s3.head_object(Bucket=self.bucket, Key=key)["Metadata"].get("xattr")


@pytest.fixture(scope="module")
def pair(module_mounts: Mounts, s3c: Any) -> Pair:
    bucket = make_bucket(s3c)
    mounts = {
        b: module_mounts.mount(b, bucket, name=f"xattr-{b}", options=["use_xattr"])
        for b in ("s3fs", "python")
    }
    return Pair(bucket, s3c, mounts)


def xattrs(path: Path) -> dict[str, bytes]:
    return {name: os.getxattr(path, name) for name in os.listxattr(path)}


@pytest.mark.parametrize(("writer", "reader"), [("s3fs", "python"), ("python", "s3fs")])
def test_what_one_backend_sets_the_other_reads(pair: Pair, writer: str, reader: str) -> None:
    name = f"f-{uuid.uuid4().hex[:8]}"
    dname = f"d-{uuid.uuid4().hex[:8]}"
    pair.path(writer, name).write_bytes(b"content")
    os.mkdir(pair.path(writer, dname))
    for key, value in VALUES.items():
        os.setxattr(pair.path(writer, name), key, value)
    os.setxattr(pair.path(writer, dname), "user.dir", b"on a directory")
    assert xattrs(pair.path(writer, name)) == VALUES

    assert xattrs(pair.path(reader, name)) == VALUES
    assert xattrs(pair.path(reader, dname)) == {"user.dir": b"on a directory"}
    assert pair.path(reader, name).read_bytes() == b"content"


def test_both_backends_write_the_same_header(pair: Pair) -> None:
    names = {b: f"same-{b}-{uuid.uuid4().hex[:8]}" for b in pair.mounts}
    for backend, name in names.items():
        path = pair.path(backend, name)
        path.write_bytes(b"x")
        for key, value in VALUES.items():
            os.setxattr(path, key, value)
        os.removexattr(path, "user.plain")
    headers = {b: pair.header(name) for b, name in names.items()}
    assert headers["python"] == headers["s3fs"]
    assert headers["python"] is not None and headers["python"].startswith("%7B%22user.")


def test_removing_the_last_attribute_drops_the_header(pair: Pair) -> None:
    name = f"r-{uuid.uuid4().hex[:8]}"
    path = pair.path("python", name)
    path.write_bytes(b"x")
    os.setxattr(path, "user.only", b"1")
    os.removexattr(path, "user.only")
    assert os.listxattr(path) == []
    assert pair.header(name) is None
    with pytest.raises(OSError) as e:
        os.getxattr(path, "user.only")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.removexattr(path, "user.only")
    assert e.value.errno == errno.ENODATA


def test_create_and_replace_flags(pair: Pair) -> None:
    path = pair.path("python", f"flags-{uuid.uuid4().hex[:8]}")
    path.write_bytes(b"x")
    with pytest.raises(OSError) as e:
        os.setxattr(path, "user.k", b"v", os.XATTR_REPLACE)
    assert e.value.errno == errno.ENODATA
    os.setxattr(path, "user.k", b"v", os.XATTR_CREATE)
    with pytest.raises(OSError) as e:
        os.setxattr(path, "user.k", b"w", os.XATTR_CREATE)
    assert e.value.errno == errno.EEXIST
    os.setxattr(path, "user.k", b"w", os.XATTR_REPLACE)
    assert os.getxattr(path, "user.k") == b"w"


def test_attributes_survive_rewrite_chmod_and_rename(pair: Pair) -> None:
    path = pair.path("python", f"keep-{uuid.uuid4().hex[:8]}")
    path.write_bytes(b"one")
    os.setxattr(path, "user.k", b"kept")
    with open(path, "ab") as f:
        f.write(b" two")
    os.chmod(path, 0o600)
    moved = path.with_name(path.name + ".moved")
    os.rename(path, moved)
    assert os.getxattr(moved, "user.k") == b"kept"
    assert moved.read_bytes() == b"one two"


def test_without_use_xattr_they_are_not_supported(pair: Pair, per_test_mounts: Mounts) -> None:
    plain = per_test_mounts.mount("python", pair.bucket, name="no-xattr")
    path = plain.path / f"n-{uuid.uuid4().hex[:8]}"
    path.write_bytes(b"x")
    with pytest.raises(OSError) as e:
        os.setxattr(path, "user.k", b"v")
    assert e.value.errno == errno.ENOTSUP
    # and a chmod there keeps what an xattr-enabled mount stored
    tagged = pair.path("python", f"t-{uuid.uuid4().hex[:8]}")
    tagged.write_bytes(b"x")
    os.setxattr(tagged, "user.k", b"v")
    os.chmod(plain.path / tagged.name, 0o600)
    assert os.getxattr(pair.path("s3fs", tagged.name), "user.k") == b"v"

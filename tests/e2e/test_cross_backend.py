"""A bucket written by one backend reads back identically through the other.

For each writer backend, one bucket is filled through a mount (nested directories, an
empty directory, chmod'ed, chown'ed and utime'd entries, symlinks, a multipart-size
file), the writer's own view is recorded, and the writer is unmounted. Each reader
backend then mounts the bucket and must show exactly that view: tree, bytes, mode,
uid, gid, mtime to the second, sizes and symlink targets. Finally the two buckets,
written by the same operations, must hold the same objects: same keys, same
x-amz-meta-* header names and values, same Content-Type for directories and symlinks.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS, Mounts, list_keys, make_bucket

pytestmark = pytest.mark.e2e

MiB = 1 << 20
BIG = 30 * MiB + 7  # over s3fs's 25 MiB multipart threshold

# Entries whose times the tree builder sets explicitly: their mtimes must match across
# buckets too (the others carry the moment they were written).
FIXED_MTIMES = {
    "top/dated.txt": 1_500_000_000,
    "top/nested": 1_400_000_000,
    "owned": 1_300_000_000,
}


def build_tree(root: Path) -> None:
    """The same operations, whichever backend serves `root`."""
    os.makedirs(root / "top" / "nested" / "deeper")
    os.mkdir(root / "empty")
    os.mkdir(root / "private")
    os.mkdir(root / "owned")
    files = {
        "top/a.txt": b"hello\n",
        "top/empty-file": b"",
        "top/nested/b.bin": random.Random(1).randbytes(100_000),
        "top/nested/deeper/c.txt": b"deep",
        "top/dated.txt": b"dated",
        "top/script.sh": b"#!/bin/sh\necho hi\n",
        "top/secret": b"0600",
        "top/owned-file": b"owned",
        "top/with space ünï+%#.txt": b"special",
        "private/inside": b"x",
        "owned/inside": b"y",
    }
    for rel, data in files.items():
        with open(root / rel, "wb") as f:
            f.write(data)
    with open(root / "top" / "big.bin", "wb") as f:
        rnd = random.Random(2)
        left = BIG
        while left:
            chunk = rnd.randbytes(min(MiB, left))
            f.write(chunk)
            left -= len(chunk)
    os.symlink("a.txt", root / "top" / "link-rel")
    os.symlink("/nonexistent/absolute/target", root / "top" / "link-abs")
    os.symlink("../top/nested", root / "empty" / "link-to-dir")
    os.chmod(root / "top" / "script.sh", 0o755)
    os.chmod(root / "top" / "secret", 0o600)
    os.chmod(root / "top" / "a.txt", 0o644)
    os.chown(root / "top" / "owned-file", 1234, 5678)
    os.chmod(root / "private", 0o700)
    os.chown(root / "owned", 4321, 8765)
    os.chmod(root / "owned", 0o751)
    for rel, t in FIXED_MTIMES.items():
        os.utime(root / rel, (t + 50, t))


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """{path: (kind, mode, uid, gid, mtime s, size, sha256 or link target)} below root."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                kind, content = "link", os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                kind, content = "dir", None
            else:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda f=f: f.read(MiB), b""):
                        h.update(chunk)
                kind, content = "file", h.hexdigest()
            out[path.relative_to(root).as_posix()] = (
                kind,
                oct(st.st_mode),
                st.st_uid,
                st.st_gid,
                int(st.st_mtime),
                st.st_size if kind != "dir" else None,
                content,
            )
    return out


@pytest.fixture(scope="module")
def written(module_mounts: Mounts, s3c: Any) -> dict[str, tuple[str, dict[str, tuple[Any, ...]]]]:
    """{writer backend: (bucket, the writer's own view of it)}; writers are unmounted."""
    out = {}
    for writer in BACKENDS:
        bucket = make_bucket(s3c)
        try:
            mount = module_mounts.mount(writer, bucket, name=f"write-{writer}")
        except RuntimeError as e:
            out[writer] = (bucket, {"<mount failed>": (str(e)[:300],)})
            continue
        try:
            build_tree(mount.path)
            view = snapshot(mount.path)
        except OSError as e:
            view = {"<write failed>": (repr(e),)}
        finally:
            module_mounts.stop(mount)
        out[writer] = (bucket, view)
    return out


def _writer_view(written: dict, writer: str) -> tuple[str, dict]:
    bucket, view = written[writer]
    if "<mount failed>" in view or "<write failed>" in view:
        pytest.fail(f"{writer} could not write the tree: {view}")
    return bucket, view


@pytest.mark.parametrize("writer", BACKENDS)
def test_writer_view_is_the_tree_that_was_built(written: dict, writer: str) -> None:
    """Sanity for the comparisons below: the writer shows what it was asked to build."""
    _, view = _writer_view(written, writer)
    assert view["top/secret"][1] == oct(stat.S_IFREG | 0o600)
    assert view["top/owned-file"][2:4] == (1234, 5678)
    assert view["top/dated.txt"][4] == 1_500_000_000
    assert view["top/link-rel"][0] == "link" and view["top/link-rel"][6] == "a.txt"
    assert view["top/big.bin"][5] == BIG
    assert view["owned"][1:5] == (oct(stat.S_IFDIR | 0o751), 4321, 8765, 1_300_000_000)


@pytest.mark.parametrize("reader", BACKENDS, ids=lambda b: f"read-by-{b}")
@pytest.mark.parametrize("writer", BACKENDS, ids=lambda b: f"written-by-{b}")
def test_reader_shows_what_writer_wrote(
    written: dict, module_mounts: Mounts, writer: str, reader: str
) -> None:
    bucket, expected = _writer_view(written, writer)
    mount = module_mounts.mount(reader, bucket, name=f"read-{writer}-by-{reader}")
    try:
        got = snapshot(mount.path)
    finally:
        module_mounts.stop(mount)
    assert sorted(got) == sorted(expected)
    for path in expected:
        assert got[path] == expected[path], path


def _object_summary(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    head = s3.head_object(Bucket=bucket, Key=key)
    return {
        "size": head["ContentLength"],
        "content_type": head["ContentType"],
        "meta": dict(head["Metadata"]),
    }


def _mode(key: str, meta: dict[str, str]) -> int:
    """x-amz-meta-mode as read: s3fs 1.90's mkdir stores it without the type bits (493),
    which readers complete from the key, so compare after completing them the same way."""
    mode = int(meta["mode"], 0)
    if key.endswith("/") and not stat.S_IFMT(mode):
        mode |= stat.S_IFDIR
    return mode


def test_raw_objects_match_between_backends(written: dict, s3c: Any) -> None:
    (bucket_a, _), (bucket_b, _) = (_writer_view(written, w) for w in BACKENDS)
    keys_a, keys_b = list_keys(s3c, bucket_a), list_keys(s3c, bucket_b)
    assert keys_a == keys_b
    for key in keys_a:
        a, b = _object_summary(s3c, bucket_a, key), _object_summary(s3c, bucket_b, key)
        assert sorted(a["meta"]) == sorted(b["meta"]), key
        for name in ("uid", "gid"):
            assert a["meta"].get(name) == b["meta"].get(name), (key, name)
        assert _mode(key, a["meta"]) == _mode(key, b["meta"]), key
        rel = key.rstrip("/")
        if rel in FIXED_MTIMES:
            assert int(float(a["meta"]["mtime"])) == int(float(b["meta"]["mtime"])), key
        assert a["size"] == b["size"], key
        if key.endswith("/") or stat.S_ISLNK(int(a["meta"].get("mode", "0"), 0)):
            assert a["content_type"] == b["content_type"], key

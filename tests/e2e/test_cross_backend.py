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


# --- special files -------------------------------------------------------------------------

# name → (type, permissions, device number, mtime): made by mkfifo, bind() and mknod,
# then chmod'ed and utime'd, through whichever backend writes.
SPECIALS = {
    "fifo": (stat.S_IFIFO, 0o640, 0, 1_600_000_000),
    "socket": (stat.S_IFSOCK, 0o755, 0, 1_600_000_100),
    "chardev": (stat.S_IFCHR, 0o620, os.makedev(1, 3), 1_600_000_200),
    "blockdev": (stat.S_IFBLK, 0o660, os.makedev(7, 300), 1_600_000_300),
}


def build_specials(root: Path) -> None:
    import socket

    os.mkdir(root / "special")
    for name, (kind, perm, dev, mtime) in SPECIALS.items():
        path = root / "special" / name
        if kind == stat.S_IFIFO:
            os.mkfifo(path)
        elif kind == stat.S_IFSOCK:
            cwd = os.getcwd()
            os.chdir(path.parent)  # sun_path is short: bind a relative name
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.bind(name)
            finally:
                os.chdir(cwd)
        else:
            os.mknod(path, kind | 0o600, dev)
        os.chmod(path, perm)
        os.utime(path, (mtime, mtime))


def special_view(root: Path) -> dict[str, tuple[int, int, int, int, int]]:
    """{name: (mode, rdev, uid, gid, mtime s)} of the special files, as lstat shows them."""
    out = {}
    for name in sorted(os.listdir(root / "special")):
        st = os.lstat(root / "special" / name)
        out[name] = (st.st_mode, st.st_rdev, st.st_uid, st.st_gid, int(st.st_mtime))
    return out


@pytest.fixture(scope="module")
def specials_written(module_mounts: Mounts, s3c: Any) -> dict[str, tuple[str, dict]]:
    """{writer backend: (bucket, the writer's view of its special files)}."""
    out = {}
    for writer in BACKENDS:
        bucket = make_bucket(s3c)
        mount = module_mounts.mount(writer, bucket, name=f"special-{writer}")
        try:
            build_specials(mount.path)
            out[writer] = (bucket, special_view(mount.path))
        finally:
            module_mounts.stop(mount)
    return out


@pytest.mark.parametrize("writer", BACKENDS)
def test_writer_shows_the_special_files_it_made(specials_written: dict, writer: str) -> None:
    _, view = specials_written[writer]
    assert sorted(view) == sorted(SPECIALS)
    for name, (kind, perm, dev, mtime) in SPECIALS.items():
        # s3fs keeps no device number (its st_rdev is 0); the bundled backend keeps it.
        expected_rdev = 0 if writer == "s3fs" else dev
        assert view[name][0:2] == (kind | perm, expected_rdev), name
        assert view[name][4] == mtime, name


@pytest.mark.parametrize("reader", BACKENDS, ids=lambda b: f"read-by-{b}")
@pytest.mark.parametrize("writer", BACKENDS, ids=lambda b: f"written-by-{b}")
def test_special_files_read_back_identically(
    specials_written: dict, module_mounts: Mounts, writer: str, reader: str
) -> None:
    bucket, expected = specials_written[writer]
    mount = module_mounts.mount(reader, bucket, name=f"special-{writer}-by-{reader}")
    try:
        got = special_view(mount.path)
    finally:
        module_mounts.stop(mount)
    if reader == "s3fs":  # s3fs shows every device number as 0, whoever wrote it
        expected = {name: (v[0], 0, *v[2:]) for name, v in expected.items()}
    assert got == expected


def test_special_objects_match_between_backends(specials_written: dict, s3c: Any) -> None:
    """The same objects: empty, the same mode and Content-Type; the bundled backend's
    one addition is x-amz-meta-rdev on devices."""
    (bucket_a, _), (bucket_b, _) = (specials_written[w] for w in BACKENDS)
    for name, (kind, perm, dev, _mtime) in SPECIALS.items():
        key = f"special/{name}"
        a, b = _object_summary(s3c, bucket_a, key), _object_summary(s3c, bucket_b, key)
        assert a["size"] == b["size"] == 0
        assert a["content_type"] == b["content_type"]
        assert int(a["meta"]["mode"]) == int(b["meta"]["mode"]) == kind | perm
        assert sorted(a["meta"]) == sorted(set(b["meta"]) - {"rdev"}), name
        assert b["meta"].get("rdev") == (str(dev) if dev else None), name

"""Buckets written by other tools: plain objects, no s3fs metadata, no directory markers.

What `aws s3 cp`, `aws s3 sync`, s3sync, GCS and old s3fs versions leave in a bucket
must be listed, traversable and readable through the mount, with the modes and owners
s3fs derives for it (s3fs 1.90 is the reference; its own defects are xfail for s3fs only).

One mount per backend serves the module; each test seeds its objects under a fresh
prefix, which is itself an implicit directory of the mount.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    BACKENDS,
    Mount,
    Mounts,
    list_keys,
    make_bucket,
    object_bytes,
    s3fs_quirk,
)

pytestmark = pytest.mark.e2e


@dataclass
class Plain:
    backend: str
    bucket: str
    mount: Mount
    s3: Any
    mounts: Mounts


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def plain(backend: str, module_mounts: Mounts, s3c: Any) -> Plain:
    bucket = make_bucket(s3c)
    return Plain(
        backend, bucket, module_mounts.mount(backend, bucket, name="plain"), s3c, module_mounts
    )


@dataclass
class Area:
    """A fresh prefix `key` of the module bucket, seen in the mount as directory `path`."""

    plain: Plain
    key: str
    path: Path

    def put(self, rel: str, body: bytes = b"data", **kwargs: Any) -> None:
        self.plain.s3.put_object(
            Bucket=self.plain.bucket, Key=f"{self.key}/{rel}", Body=body, **kwargs
        )

    def head(self, rel: str) -> dict[str, Any]:
        return self.plain.s3.head_object(Bucket=self.plain.bucket, Key=f"{self.key}/{rel}")

    def keys(self, rel: str = "") -> list[str]:
        """Keys under the area (or under `rel` in it), relative to the area."""
        prefix = f"{self.key}/{rel}"
        return [k[len(self.key) + 1 :] for k in list_keys(self.plain.s3, self.plain.bucket, prefix)]


@pytest.fixture
def area(plain: Plain) -> Area:
    key = f"p-{uuid.uuid4().hex[:10]}"
    return Area(plain, key, plain.mount.path / key)


def tree(root: Path) -> dict[str, str]:
    """{relative path: "dir" | file content} for everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = f.read().decode()
    return out


PLAIN_TREE = {
    "a/b/c.txt": "c",
    "a/d.txt": "dd",
    "e.txt": "eee",
    "deep/x/y/z/w.txt": "w",
    "sp ace/ünï 日本.txt": "unicode",
    "a/b/with space+plus&eq=.txt": "specials",
}


def test_plain_tree_is_listed_traversable_and_readable(area: Area) -> None:
    for rel, body in PLAIN_TREE.items():
        area.put(rel, body.encode())
    expected = dict(PLAIN_TREE)
    for rel in PLAIN_TREE:  # every prefix of a key is an implicit directory
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            expected["/".join(parts[:i])] = "dir"
    assert tree(area.path) == expected
    assert sorted(os.listdir(area.path)) == ["a", "deep", "e.txt", "sp ace"]
    assert os.stat(area.path / "deep" / "x" / "y" / "z" / "w.txt").st_size == 1


def test_default_modes_owner_and_times(area: Area) -> None:
    area.put("dir/file.txt", b"12345")
    f, d = area.path / "dir" / "file.txt", area.path / "dir"
    st = os.stat(f)
    assert st.st_mode == stat.S_IFREG | 0o640
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert st.st_size == 5
    assert int(st.st_mtime) == int(area.head("dir/file.txt")["LastModified"].timestamp())
    sd = os.stat(d)
    assert sd.st_mode == stat.S_IFDIR | 0o750
    assert (sd.st_uid, sd.st_gid) == (os.geteuid(), os.getegid())


def test_implicit_directory_time_is_not_negative(
    area: Area, request: pytest.FixtureRequest
) -> None:
    """s3fs's own test_read_external_dir_object: no 1969-12-31 23:59:59 (mtime -1)."""
    s3fs_quirk(request, area.plain.backend, "implicit directories show mtime/ctime/atime -1")
    area.put("implicit/file.txt")
    st = os.stat(area.path / "implicit")
    assert st.st_mtime >= 0 and st.st_ctime >= 0 and st.st_atime >= 0


# name: (user metadata, expected st_mode, expected (uid, gid) or None for the mounter's)
FALLBACKS: dict[str, tuple[dict[str, str], int, tuple[int, int] | None]] = {
    "permissions-full": ({"permissions": "33188"}, stat.S_IFREG | 0o644, None),
    "permissions-no-type": ({"permissions": "0604"}, stat.S_IFREG | 0o604, None),
    "goog-mode-octal": ({"goog-reserved-posix-mode": "604"}, stat.S_IFREG | 0o604, None),
    "goog-mode-leading-0": ({"goog-reserved-posix-mode": "0604"}, stat.S_IFREG | 0o604, None),
    "owner-group": ({"owner": "1001", "group": "1002"}, stat.S_IFREG | 0o640, (1001, 1002)),
    "goog-uid-gid": (
        {"goog-reserved-posix-uid": "1003", "goog-reserved-posix-gid": "1004"},
        stat.S_IFREG | 0o640,
        (1003, 1004),
    ),
    "mode-octal-leading-0": ({"mode": "0100604"}, stat.S_IFREG | 0o604, None),
    "mode-no-type-bits": ({"mode": "420"}, stat.S_IFREG | 0o644, None),
    "mode-beats-permissions": (
        {"mode": "33152", "permissions": "33279"},
        stat.S_IFREG | 0o600,
        None,
    ),
    "uid-beats-owner": (
        {"mode": "33188", "uid": "7", "gid": "8", "owner": "1", "group": "2"},
        stat.S_IFREG | 0o644,
        (7, 8),
    ),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_metadata_fallbacks(area: Area, case: str, request: pytest.FixtureRequest) -> None:
    if case == "permissions-no-type":
        s3fs_quirk(
            request,
            area.plain.backend,
            "an x-amz-meta-permissions value without file-type bits makes stat fail with EIO",
        )
    meta, mode, owner = FALLBACKS[case]
    area.put("obj", b"body", Metadata=meta)
    st = os.stat(area.path / "obj")
    assert oct(st.st_mode) == oct(mode)
    assert (st.st_uid, st.st_gid) == (owner or (os.geteuid(), os.getegid()))
    with open(area.path / "obj", "rb") as f:
        assert f.read() == b"body"


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"mtime": "1500000000"}, 1_500_000_000),
        ({"mtime": "1500000000.250000000"}, 1_500_000_000),
        ({"goog-reserved-file-mtime": "1400000000"}, 1_400_000_000),
    ],
    ids=["mtime", "mtime-with-nanoseconds", "goog-file-mtime"],
)
def test_mtime_metadata(area: Area, meta: dict[str, str], expected: int) -> None:
    area.put("timed", Metadata=meta)
    assert int(os.stat(area.path / "timed").st_mtime) == expected


# key: (Content-Type or None for boto3's default, user metadata, expected st_mode)
DIR_OBJECTS: dict[str, tuple[str | None, dict[str, str], int]] = {
    "old-style-x-directory-mode": ("application/x-directory", {"mode": "493"}, 0o40755),
    "old-style-x-directory-bare": ("application/x-directory", {}, 0o40750),
    "old-style-unix-directory": ("httpd/unix-directory", {"mode": "16877"}, 0o40755),
    "slash-bare/": (None, {}, 0o40750),
    "slash-mode-no-type/": (None, {"mode": "493"}, 0o40755),
    "slash-x-directory/": ("application/x-directory", {"mode": "16832"}, 0o40700),
}


@pytest.mark.parametrize("key", list(DIR_OBJECTS))
def test_directory_objects(area: Area, key: str, request: pytest.FixtureRequest) -> None:
    if key == "old-style-x-directory-bare":
        s3fs_quirk(
            request,
            area.plain.backend,
            "an old-style `dir` object without a mode gets the FILE default 0640 (chosen by the"
            " key's missing trailing slash), so the directory has no search permission",
        )
    content_type, meta, mode = DIR_OBJECTS[key]
    extra = {"ContentType": content_type} if content_type else {}
    area.put(key, b"", Metadata=meta, **extra)
    name = key.rstrip("/")
    assert os.listdir(area.path) == [name]
    assert oct(os.stat(area.path / name).st_mode) == oct(mode)
    assert os.listdir(area.path / name) == []
    with open(area.path / name / "inside.txt", "wb") as f:
        f.write(b"x")
    assert os.listdir(area.path / name) == ["inside.txt"]
    assert os.listdir(area.path) == [name]  # the marker and the child's prefix: one entry


def test_old_style_directory_removed_completely(area: Area) -> None:
    area.put("old", b"", ContentType="application/x-directory", Metadata={"mode": "493"})
    area.put("old/child.txt", b"c")
    assert os.listdir(area.path) == ["old"]
    assert os.listdir(area.path / "old") == ["child.txt"]
    assert os.stat(area.path / "old").st_mode == 0o40755
    os.unlink(area.path / "old" / "child.txt")
    os.rmdir(area.path / "old")
    assert area.keys() == []
    assert not (area.path / "old").exists()


def test_chmod_old_style_directory(
    plain: Plain, per_test_mounts: Mounts, request: pytest.FixtureRequest
) -> None:
    """s3fs's test_external_no_slash_directory_object. A mount of its own: s3fs 1.90 dies."""
    s3fs_quirk(
        request,
        plain.backend,
        "chmod on an old-style `dir` object (no trailing slash) crashes the daemon"
        " (std::out_of_range from basic_string::erase), leaving a dead mount",
    )
    key = f"p-{uuid.uuid4().hex[:10]}"
    plain.s3.put_object(
        Bucket=plain.bucket,
        Key=f"{key}/nsd",
        Body=b"",
        ContentType="application/x-directory",
        Metadata={"mode": "493"},
    )
    mount = per_test_mounts.mount(plain.backend, plain.bucket, name="chmod-old")
    d = mount.path / key / "nsd"
    os.chmod(d, 0o700)
    assert os.stat(d).st_mode == stat.S_IFDIR | 0o700
    with open(d / "f", "wb") as f:
        f.write(b"x")
    os.unlink(d / "f")
    os.rmdir(d)
    assert list_keys(plain.s3, plain.bucket, key + "/") == []


def test_emptied_implicit_directory_disappears_and_rm_r_works(area: Area) -> None:
    area.put("only/one.txt")
    area.put("gone/a.txt")
    area.put("gone/sub/b.txt")
    area.put("keep.txt")
    os.unlink(area.path / "only" / "one.txt")
    assert sorted(os.listdir(area.path)) == ["gone", "keep.txt"]

    # rm -r unlinks the children, then rmdirs each directory: none of it may fail
    done = subprocess.run(["rm", "-r", str(area.path / "gone")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.listdir(area.path) == ["keep.txt"]
    assert area.keys() == ["keep.txt"]


def test_rmdir_of_implicit_directory_with_children_is_refused(area: Area) -> None:
    area.put("busy/file.txt")
    with pytest.raises(OSError) as info:
        os.rmdir(area.path / "busy")
    assert info.value.errno == errno.ENOTEMPTY
    assert area.keys() == ["busy/file.txt"]


def test_write_into_implicit_directory(area: Area) -> None:
    area.put("a/b/old.txt", b"old")
    with open(area.path / "a" / "b" / "new.txt", "wb") as f:
        f.write(b"new")
    assert sorted(os.listdir(area.path / "a" / "b")) == ["new.txt", "old.txt"]
    assert object_bytes(area.plain.s3, area.plain.bucket, f"{area.key}/a/b/new.txt") == b"new"
    assert object_bytes(area.plain.s3, area.plain.bucket, f"{area.key}/a/b/old.txt") == b"old"


def test_rename_implicit_directory_moves_every_key(area: Area) -> None:
    files = {"p/s.txt": b"s", "p/q/r.txt": b"r", "p/q/deeper/t.txt": b"t"}
    for rel, body in files.items():
        area.put(rel, body)
    os.rename(area.path / "p", area.path / "p2")
    assert os.listdir(area.path) == ["p2"]
    assert area.keys("p/") == []
    moved = [k for k in area.keys("p2/") if not k.endswith("/")]  # markers may be added
    assert moved == sorted("p2/" + rel[2:] for rel in files)
    for rel, body in files.items():
        with open(area.path / ("p2/" + rel[2:]), "rb") as f:
            assert f.read() == body


def test_rename_directory_of_more_than_one_listing_page(area: Area) -> None:
    """Rename lists every key below the directory: past the 1,000-key page too."""
    names = [f"sub{i % 3}/f{i:04d}" for i in range(1005)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: area.put(f"many/{n}", n.encode()), names))
    os.rename(area.path / "many", area.path / "moved")
    assert area.keys("many/") == []
    assert [k for k in area.keys("moved/") if not k.endswith("/")] == sorted(
        f"moved/{n}" for n in names
    )
    assert sorted(os.listdir(area.path / "moved")) == ["sub0", "sub1", "sub2"]
    for n in (names[0], names[-1]):
        with open(area.path / "moved" / n, "rb") as f:
            assert f.read() == n.encode()


def test_chmod_implicit_directory_persists(
    area: Area, per_test_mounts: Mounts, request: pytest.FixtureRequest
) -> None:
    area.put("imp/file.txt")
    os.chmod(area.path / "imp", 0o705)
    assert os.stat(area.path / "imp").st_mode == stat.S_IFDIR | 0o705
    fresh = per_test_mounts.mount(area.plain.backend, area.plain.bucket, name="fresh")
    assert os.stat(fresh.path / area.key / "imp").st_mode == stat.S_IFDIR | 0o705
    assert os.listdir(fresh.path / area.key / "imp") == ["file.txt"]


def test_other_tools_metadata_survives_chmod_touch_rewrite_and_rename(area: Area) -> None:
    """Headers we do not write ourselves (an s3fs mount's xattrs, an app's own) are kept
    through every rewrite of the object, as s3fs keeps them."""
    xattr = "%7B%22user.k%22%3A%22dg%3D%3D%22%7D"  # s3fs's use_xattr: {"user.k": "dg=="}
    area.put("doc.dat", b"body", Metadata={"xattr": xattr, "app-tag": "blue"}, ContentType="x/y")

    def foreign(rel: str) -> dict[str, str]:
        meta = area.head(rel)["Metadata"]
        return {k: v for k, v in meta.items() if k in ("xattr", "app-tag")}

    kept = {"xattr": xattr, "app-tag": "blue"}
    os.chmod(area.path / "doc.dat", 0o600)
    assert foreign("doc.dat") == kept
    os.utime(area.path / "doc.dat", (1_200_000_000, 1_200_000_000))
    assert foreign("doc.dat") == kept
    os.chown(area.path / "doc.dat", 1234, 5678)
    assert foreign("doc.dat") == kept
    with open(area.path / "doc.dat", "r+b") as f:
        f.write(b"BODY")
    assert foreign("doc.dat") == kept
    assert int(area.head("doc.dat")["Metadata"]["mode"], 0) & 0o777 == 0o600
    os.rename(area.path / "doc.dat", area.path / "doc2.dat")
    assert foreign("doc2.dat") == kept
    st = os.stat(area.path / "doc2.dat")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1234, 5678)
    with open(area.path / "doc2.dat", "rb") as f:
        assert f.read() == b"BODY"


def test_chmod_and_touch_keep_another_tools_content_type(
    area: Area, request: pytest.FixtureRequest
) -> None:
    s3fs_quirk(
        request,
        area.plain.backend,
        "a metadata update sets the Content-Type from the name's extension, replacing the"
        " one another tool gave the object (s3fs-object-format.md: the Content-Type is kept)",
    )
    area.put("report.dat", b"body", ContentType="application/vnd.custom")
    os.chmod(area.path / "report.dat", 0o600)
    os.utime(area.path / "report.dat", (1_200_000_000, 1_200_000_000))
    assert area.head("report.dat")["ContentType"] == "application/vnd.custom"


# --- sub-path mounts: BUCKET:/prefix -------------------------------------------------------


@pytest.fixture
def subpath_bucket(s3c: Any) -> Iterator[str]:
    bucket = make_bucket(s3c)
    for key in (
        "pre/fix/in.txt",
        "pre/fix/sub/deep.txt",
        "pre/other.txt",
        "prefixnot/x.txt",
        "pre/fixnot.txt",
        "top.txt",
    ):
        s3c.put_object(Bucket=bucket, Key=key, Body=key.encode())
    yield bucket


def test_subpath_mount_shows_only_its_prefix(
    backend: str, subpath_bucket: str, per_test_mounts: Mounts, s3c: Any
) -> None:
    deep = per_test_mounts.mount(backend, f"{subpath_bucket}:/pre/fix", name="sub")
    assert sorted(os.listdir(deep.path)) == ["in.txt", "sub"]
    assert os.listdir(deep.path / "sub") == ["deep.txt"]
    with open(deep.path / "in.txt", "rb") as f:
        assert f.read() == b"pre/fix/in.txt"
    with open(deep.path / "new.txt", "wb") as f:
        f.write(b"n")
    os.mkdir(deep.path / "nd")
    assert list_keys(s3c, subpath_bucket, "pre/fix/") == [
        "pre/fix/in.txt",
        "pre/fix/nd/",
        "pre/fix/new.txt",
        "pre/fix/sub/deep.txt",
    ]

    upper = per_test_mounts.mount(backend, f"{subpath_bucket}:/pre", name="upper")
    assert sorted(os.listdir(upper.path)) == ["fix", "fixnot.txt", "other.txt"]
    assert sorted(os.listdir(upper.path / "fix")) == ["in.txt", "nd", "new.txt", "sub"]

    whole = per_test_mounts.mount(backend, subpath_bucket, name="whole")
    assert sorted(os.listdir(whole.path)) == ["pre", "prefixnot", "top.txt"]


# --- mount options that override what is shown -----------------------------------------------


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        # s3fs's umask REPLACES the permission bits: 0777 & ~umask, for files and dirs alike
        (["umask=0022"], {"plain.txt": 0o100755, "imp": 0o40755, "meta.txt": 0o100755}),
        (["umask=077"], {"plain.txt": 0o100700, "imp": 0o40700, "meta.txt": 0o100700}),
        (["uid=1000", "gid=1001"], {"plain.txt": 0o100640, "imp": 0o40750, "meta.txt": 0o100777}),
    ],
    ids=["umask-0022", "umask-077", "uid-gid"],
)
def test_mount_options_override_modes_and_owners(
    area: Area, per_test_mounts: Mounts, options: list[str], shown: dict[str, int]
) -> None:
    area.put("plain.txt")
    area.put("imp/x.txt")
    area.put("meta.txt", Metadata={"mode": "33279", "uid": "5", "gid": "6"})
    mount = per_test_mounts.mount(area.plain.backend, area.plain.bucket, options=options)
    root = mount.path / area.key
    owner = (1000, 1001) if "uid=1000" in options else None
    for name, mode in shown.items():
        st = os.stat(root / name)
        assert oct(st.st_mode) == oct(mode), name
        if owner:
            assert (st.st_uid, st.st_gid) == owner, name
    if not owner:
        assert (os.stat(root / "meta.txt").st_uid, os.stat(root / "meta.txt").st_gid) == (5, 6)


def test_read_only_mount(area: Area, per_test_mounts: Mounts) -> None:
    area.put("file.txt", b"ro")
    mount = per_test_mounts.mount(area.plain.backend, area.plain.bucket, options=["ro"])
    root = mount.path / area.key
    with open(root / "file.txt", "rb") as f:
        assert f.read() == b"ro"
    for attempt in (
        lambda: os.open(root / "new.txt", os.O_CREAT | os.O_WRONLY, 0o644),
        lambda: os.open(root / "file.txt", os.O_RDWR),
        lambda: os.mkdir(root / "d"),
        lambda: os.unlink(root / "file.txt"),
        lambda: os.chmod(root / "file.txt", 0o600),
    ):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    assert area.keys() == ["file.txt"]

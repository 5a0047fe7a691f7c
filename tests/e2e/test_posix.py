"""POSIX behaviour through a real FUSE mount, for the real s3fs and the bundled backend.

Every test runs against both backends. s3fs 1.90 is the reference: a test is first
proven right against it; where s3fs itself is wrong or limited the case is marked
xfail(strict) for s3fs only (`s3fs_quirk`), and the Python backend must still pass it.

One mount per backend serves the whole module; each test works in a fresh directory
(`d`). Persistence (what survives an unmount) is checked through a second, freshly
started mount of the same bucket: a new process has no cache, exactly like a remount.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import stat
import subprocess
import sys
import time
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
    abort_fuse,
    key_exists,
    list_keys,
    make_bucket,
    object_bytes,
    s3fs_quirk,
    sha256_file,
)

pytestmark = pytest.mark.e2e

MiB = 1 << 20


@dataclass
class FS:
    """One backend's mount of one bucket, with the S3 client to look behind it."""

    backend: str
    bucket: str
    mount: Mount
    s3: Any
    mounts: Mounts

    @property
    def root(self) -> Path:
        return self.mount.path

    def key(self, path: Path) -> str:
        """The object key a path inside the mount maps to."""
        return path.relative_to(self.root).as_posix()

    def obj(self, path: Path) -> bytes:
        return object_bytes(self.s3, self.bucket, self.key(path))

    def head(self, path: Path, directory: bool = False) -> dict[str, Any]:
        key = self.key(path) + ("/" if directory else "")
        return self.s3.head_object(Bucket=self.bucket, Key=key)

    def exists(self, path: Path, directory: bool = False) -> bool:
        return key_exists(self.s3, self.bucket, self.key(path) + ("/" if directory else ""))

    def keys(self, path: Path) -> list[str]:
        return list_keys(self.s3, self.bucket, self.key(path) + "/")

    def fresh_view(self) -> Mount:
        """A new mount of the same bucket by the same backend: what a remount would show."""
        return self.mounts.mount(self.backend, self.bucket, name="view")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def fs(backend: str, module_mounts: Mounts, s3c: Any) -> FS:
    bucket = make_bucket(s3c)
    mount = module_mounts.mount(backend, bucket, name="posix")
    return FS(backend, bucket, mount, s3c, module_mounts)


@pytest.fixture
def d(fs: FS) -> Path:
    """A fresh directory inside the mount for one test."""
    path = fs.root / f"t-{uuid.uuid4().hex[:10]}"
    os.mkdir(path)
    return path


@pytest.fixture
def view(fs: FS) -> Iterator[Mount]:
    """A second, fresh mount of the module's bucket (same backend), stopped after the test."""
    m = fs.fresh_view()
    yield m
    fs.mounts.stop(m)


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def errno_of(fn, *args) -> int:
    """Call fn(*args), which must fail with OSError; return its errno."""
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


# --- getattr -----------------------------------------------------------------------------


def test_stat_file_and_directory(fs: FS, d: Path) -> None:
    before = time.time()
    f = d / "file.bin"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o640)
    os.write(fd, b"x" * 5000)
    os.close(fd)
    os.chmod(f, 0o640)  # the test process's umask must not decide the expected mode
    os.mkdir(d / "sub", 0o750)
    os.chmod(d / "sub", 0o750)

    st = os.stat(f)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_size == 5000
    assert st.st_blocks * 512 >= st.st_size  # du and cp rely on st_blocks
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert before - 2 <= st.st_mtime <= time.time() + 2

    sd = os.stat(d / "sub")
    assert stat.S_ISDIR(sd.st_mode)
    assert stat.S_IMODE(sd.st_mode) == 0o750
    assert before - 2 <= sd.st_mtime <= time.time() + 2

    assert stat.S_ISDIR(os.stat(fs.root).st_mode)
    assert errno_of(os.stat, d / "missing") == errno.ENOENT
    assert errno_of(os.stat, d / "file.bin" / "below") in (errno.ENOTDIR, errno.ENOENT)


def test_size_of_open_file_is_visible_before_close(d: Path) -> None:
    """s3fs's test_open_second_fd: `wc -c < f` while a writer still holds f open."""
    f = d / "open.txt"
    with open(f, "wb") as w:
        w.write(b"foo\n")
        w.flush()
        assert os.stat(f).st_size == 4
        with open(f, "rb") as r:
            assert r.read() == b"foo\n"


# --- readdir ------------------------------------------------------------------------------


def test_readdir_files_and_subdirectories(d: Path) -> None:
    for name in ("a.txt", "b.bin", "c"):
        write(d / name, name.encode())
    for name in ("sub1", "sub2"):
        os.mkdir(d / name)
    write(d / "sub1" / "inner.txt", b"inner")

    assert sorted(os.listdir(d)) == ["a.txt", "b.bin", "c", "sub1", "sub2"]
    kinds = {e.name: e.is_dir() for e in os.scandir(d)}
    assert kinds == {"a.txt": False, "b.bin": False, "c": False, "sub1": True, "sub2": True}
    assert os.listdir(d / "sub1") == ["inner.txt"]
    assert os.listdir(d / "sub2") == []
    assert errno_of(os.listdir, d / "a.txt") == errno.ENOTDIR
    assert errno_of(os.listdir, d / "nope") == errno.ENOENT


def test_readdir_more_than_one_listing_page(fs: FS) -> None:
    """1,500 entries: S3 lists at most 1,000 keys per page, so the backend must page."""
    d = fs.root / f"big-{uuid.uuid4().hex[:10]}"  # never looked at by the mount
    prefix = fs.key(d)
    names = [f"f-{i:04d}.txt" for i in range(1500)]

    def put(name: str) -> None:
        fs.s3.put_object(Bucket=fs.bucket, Key=f"{prefix}/{name}", Body=name.encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, names))

    assert sorted(os.listdir(d)) == names
    for name in (names[0], names[999], names[1000], names[-1]):
        assert os.stat(d / name).st_size == len(name)
        assert read(d / name) == name.encode()


def test_readdir_lists_objects_added_by_other_clients(fs: FS, d: Path) -> None:
    """s3fs lists from S3 on every readdir: an upload by another client shows at once in
    `ls`, even in a directory this mount has just made and listed."""
    os.mkdir(d / "inbox")
    assert os.listdir(d / "inbox") == []
    fs.s3.put_object(Bucket=fs.bucket, Key=f"{fs.key(d)}/inbox/uploaded.txt", Body=b"up")
    fs.s3.put_object(Bucket=fs.bucket, Key=f"{fs.key(d)}/new-sibling/x.txt", Body=b"x")
    assert os.listdir(d / "inbox") == ["uploaded.txt"]
    assert sorted(os.listdir(d)) == ["inbox", "new-sibling"]


# --- open / read ---------------------------------------------------------------------------


def test_partial_reads_and_read_past_eof(d: Path) -> None:
    data = random.Random(1).randbytes(300_000)
    f = d / "data.bin"
    write(f, data)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == data[:100]
        assert os.pread(fd, 1000, 12345) == data[12345:13345]
        assert os.pread(fd, 200, 131072 - 50) == data[131022:131222]  # across a 128 KiB edge
        assert os.pread(fd, 100, len(data) - 10) == data[-10:]  # short read at EOF
        assert os.pread(fd, 100, len(data)) == b""
        assert os.pread(fd, 100, len(data) + 5000) == b""
    finally:
        os.close(fd)
    with open(f, "rb") as r:  # sequential reads in an odd chunk size
        got = b"".join(iter(lambda: r.read(7777), b""))
    assert got == data


def test_create_exclusive_and_visible_at_once(
    fs: FS, d: Path, request: pytest.FixtureRequest
) -> None:
    s3fs_quirk(
        request,
        fs.backend,
        "a created file is missing from readdir until its first flush: the object is only"
        " uploaded then, and readdir lists only what S3 has",
    )
    f = d / "new.txt"
    fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        assert os.stat(f).st_size == 0
        assert "new.txt" in os.listdir(d)
        assert errno_of(os.open, f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644) == errno.EEXIST
        os.write(fd, b"hello")
    finally:
        os.close(fd)
    assert fs.obj(f) == b"hello"


def test_empty_file(fs: FS, d: Path) -> None:
    f = d / "empty"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    assert os.stat(f).st_size == 0
    assert read(f) == b""
    assert fs.obj(f) == b""
    assert fs.head(f)["ContentLength"] == 0


def test_overwrite_with_shorter_content(fs: FS, d: Path) -> None:
    f = d / "shrink.txt"
    write(f, b"0123456789" * 100)
    write(f, b"short")
    assert os.stat(f).st_size == 5
    assert read(f) == b"short"
    assert fs.obj(f) == b"short"


# --- writes, verified byte for byte against a local file -----------------------------------

# A scenario is a list of operations applied identically to a file in the mount and to a
# file on local disk; afterwards the two must be byte-identical (and so must the object).
Op = tuple[Any, ...]


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _random_offset_writes(seed: int) -> list[Op]:
    rnd = random.Random(seed)
    ops: list[Op] = [("open", os.O_RDWR)]
    for i in range(25):
        ops.append(("pwrite", rnd.randrange(0, 400_000), _rand(seed + i, rnd.randrange(1, 20_000))))
    return [*ops, ("close",)]


SCENARIOS: dict[str, list[Op]] = {
    "random-offsets": _random_offset_writes(7),
    "append": [
        ("open", os.O_WRONLY | os.O_APPEND),
        ("write", b"first append\n"),
        ("write", _rand(2, 70_000)),
        ("close",),
        ("open", os.O_WRONLY | os.O_APPEND),
        ("pwrite_append", b"appended again\n"),
        ("close",),
    ],
    "sparse-new-file": [
        ("open", os.O_WRONLY | os.O_TRUNC),
        ("seek", 3 * MiB + 17),
        ("write", _rand(3, 1000)),
        ("pwrite", 100, b"early"),
        ("close",),
    ],
    "sparse-past-end-of-existing": [
        ("open", os.O_RDWR),
        ("pwrite", 600_000, b"tail after a hole"),
        ("close",),
    ],
    "truncate-shrink": [("truncate", 1000)],
    "truncate-grow": [("truncate", 700_000)],
    "truncate-zero-then-write": [("truncate", 0), ("open", os.O_WRONLY), ("write", b"anew")],
    "ftruncate-shrink-then-write-past-end": [
        ("open", os.O_RDWR),
        ("ftruncate", 5000),
        ("pwrite", 10_000, b"after the gap"),
        ("close",),
    ],
    "ftruncate-grow-then-write-middle": [
        ("open", os.O_RDWR),
        ("ftruncate", MiB + 3),
        ("pwrite", 500_000, _rand(4, 3000)),
        ("close",),
    ],
    "o-trunc-rewrite": [("open", os.O_WRONLY | os.O_TRUNC), ("write", b"rewritten"), ("close",)],
    "writes-backwards": [
        ("open", os.O_RDWR),
        ("pwrite", 2 * MiB + 1, b"far"),
        ("pwrite", MiB, b"middle"),
        ("pwrite", 10, b"near"),
        ("close",),
    ],
    "sparse-multipart-backwards": [  # s3fs's test_write_multiple_offsets_backwards
        ("open", os.O_RDWR),
        ("pwrite", 26 * MiB + 1, b"beyond the multipart threshold"),
        ("pwrite", 10 * MiB, _rand(5, 100)),
        ("pwrite", 1024, b"x"),
        ("close",),
    ],
    "overwrite-range-in-place": [
        ("open", os.O_WRONLY),
        ("pwrite", 1024, bytes(1024)),
        ("close",),
    ],
}


def apply(path: Path, ops: list[Op]) -> None:
    fd: int | None = None
    for op, *args in ops:
        if op == "open":
            fd = os.open(path, args[0])
        elif op == "close":
            assert fd is not None
            os.close(fd)
            fd = None
        elif op == "write":
            assert fd is not None
            assert os.write(fd, args[0]) == len(args[0])
        elif op == "pwrite":
            assert fd is not None
            assert os.pwrite(fd, args[1], args[0]) == len(args[1])
        elif op == "pwrite_append":  # O_APPEND: the offset given must be ignored
            assert fd is not None
            os.pwrite(fd, args[0], 0)
        elif op == "seek":
            assert fd is not None
            os.lseek(fd, args[0], os.SEEK_SET)
        elif op == "ftruncate":
            assert fd is not None
            os.ftruncate(fd, args[0])
        elif op == "truncate":
            os.truncate(path, args[0])
        else:
            raise ValueError(op)
    if fd is not None:
        os.close(fd)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_write_patterns_match_local_file(
    fs: FS, d: Path, tmp_path: Path, scenario: str, request: pytest.FixtureRequest
) -> None:
    if scenario in ("truncate-shrink", "truncate-grow"):
        s3fs_quirk(
            request,
            fs.backend,
            "truncate(2) by path on a closed file replaces the bytes it keeps with zeros"
            " (data loss; s3fs_truncate opens the local copy at the new size before loading it)",
        )
        if fs.backend == "s3fs":
            # Once in CI, s3fs 1.90 never answered this truncate (the test sat out pytest's
            # 300 s limit): run it on a mount of its own, in a child with a time limit, so
            # a wedged s3fs fails this (xfail) test only, not the module's shared mount.
            _s3fs_truncate_in_child(fs, scenario)
            return
    initial = _rand(100, 200_000)
    mounted, local = d / "f.bin", tmp_path / "f.bin"
    for p in (mounted, local):
        write(p, initial)
        apply(p, SCENARIOS[scenario])
    expected = read(local)
    assert os.stat(mounted).st_size == len(expected)
    got = read(mounted)
    assert len(got) == len(expected)
    assert got == expected
    assert fs.obj(mounted) == expected


def _s3fs_truncate_in_child(fs: FS, scenario: str) -> None:
    """The truncate scenario against a fresh s3fs mount, driven by a child process; if
    s3fs stops answering, its FUSE connection is aborted (SIGKILL alone cannot free a
    process blocked in a FUSE request) and the case fails within about a minute."""
    m = fs.mounts.mount("s3fs", fs.bucket, name="truncate")
    script = (
        "import os, sys\n"
        "p = sys.argv[1]\n"
        "with open(p, 'wb') as f: f.write(bytes(range(256)) * 800)\n"
        "os.truncate(p, int(sys.argv[2]))\n"
        "with open(p, 'rb') as f: sys.stdout.write(f.read().hex())\n"
    )
    length = dict(SCENARIOS[scenario])["truncate"]
    path = m.path / f"t-{uuid.uuid4().hex[:10]}.bin"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(length)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        abort_fuse(m.path)
        child.kill()
        child.communicate(timeout=10)
        m.kill()
        pytest.fail("s3fs did not answer the truncate within 60 s (its connection was aborted)")
    finally:
        fs.mounts.stop(m)
    assert child.returncode == 0, err[-2000:]
    initial = bytes(range(256)) * 800
    expected = initial[:length] + bytes(max(0, length - len(initial)))
    assert bytes.fromhex(out) == expected


def test_large_file_multipart(fs: FS, d: Path, tmp_path: Path) -> None:
    """Bigger than the multipart threshold (s3fs: 25 MiB); then rewritten in the middle."""
    size = 34 * MiB + 123
    rnd = random.Random(11)
    mounted, local = d / "big.bin", tmp_path / "big.bin"
    with open(mounted, "wb") as m, open(local, "wb") as loc:
        left = size
        while left:
            chunk = rnd.randbytes(min(MiB, left))
            m.write(chunk)
            loc.write(chunk)
            left -= len(chunk)
    assert os.stat(mounted).st_size == size
    head = fs.head(mounted)
    assert head["ContentLength"] == size
    assert "-" in head["ETag"], "a 34 MiB object should have been uploaded in parts"
    assert fs.obj(mounted) == read(local)

    patch = rnd.randbytes(MiB)
    for p in (mounted, local):
        with open(p, "r+b") as f:
            f.seek(20 * MiB + 5)
            f.write(patch)
            f.seek(0, os.SEEK_END)
            f.write(b"tail")
    assert sha256_file(mounted) == sha256_file(local)
    assert fs.obj(mounted) == read(local)

    os.rename(mounted, d / "big-renamed.bin")  # a server-side copy of a multipart object
    assert sha256_file(d / "big-renamed.bin") == sha256_file(local)
    assert not fs.exists(mounted)


def test_concurrent_reads_of_one_file(d: Path) -> None:
    """s3fs's test_concurrent_reads: threads read random ranges, each through its own fd
    and all through one shared fd."""
    data = _rand(21, 5 * MiB + 321)
    f = d / "shared.bin"
    write(f, data)
    rnd = random.Random(22)
    ranges = [(rnd.randrange(0, len(data)), rnd.randrange(1, 300_000)) for _ in range(48)]
    shared = os.open(f, os.O_RDONLY)

    def own_fd(r: tuple[int, int]) -> bytes:
        fd = os.open(f, os.O_RDONLY)
        try:
            return os.pread(fd, r[1], r[0])
        finally:
            os.close(fd)

    try:
        with ThreadPoolExecutor(8) as pool:
            got_own = list(pool.map(own_fd, ranges))
            got_shared = list(pool.map(lambda r: os.pread(shared, r[1], r[0]), ranges))
    finally:
        os.close(shared)
    for (off, n), a, b in zip(ranges, got_own, got_shared, strict=True):
        assert a == data[off : off + n]
        assert b == data[off : off + n]


def test_concurrent_writers_to_one_file(fs: FS, d: Path) -> None:
    """s3fs's test_concurrent_writes: several descriptors write disjoint ranges of one
    existing file at once (no O_TRUNC); every range must survive every close()."""
    size, region = 2 * MiB, 100_000
    base = _rand(31, size)
    f = d / "shared.bin"
    write(f, base)
    offsets = [i * 250_000 for i in range(8)]
    patches = {off: _rand(off, region) for off in offsets}

    def writer(off: int) -> None:
        fd = os.open(f, os.O_WRONLY)
        try:
            for i in range(0, region, 10_000):
                os.pwrite(fd, patches[off][i : i + 10_000], off + i)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, offsets))
    expected = bytearray(base)
    for off, patch in patches.items():
        expected[off : off + region] = patch
    assert read(f) == bytes(expected)
    assert fs.obj(f) == bytes(expected)


# --- durability: what S3 holds when close() / fsync() return --------------------------------


@pytest.mark.parametrize("size", [10, 300_000, 12 * MiB])
def test_data_in_s3_when_close_returns(fs: FS, d: Path, size: int) -> None:
    data = _rand(size, size)
    f = d / f"durable-{size}.bin"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.close(fd)
    assert fs.obj(f) == data  # no sleep: close() must not return before the upload


def test_fsync_uploads_before_close(fs: FS, d: Path) -> None:
    f = d / "synced.txt"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"part one;")
        os.fsync(fd)
        assert fs.obj(f) == b"part one;"
        os.write(fd, b"part two")
    finally:
        os.close(fd)
    assert fs.obj(f) == b"part one;part two"


def test_shared_mmap_write_reaches_s3_on_msync(fs: FS, d: Path) -> None:
    """Writes through a MAP_SHARED mapping arrive after close(fd); msync(MS_SYNC) must
    still get them to S3 (it ends in FUSE write + fsync)."""
    f = d / "mapped.bin"
    write(f, b"a" * 10_000)
    fd = os.open(f, os.O_RDWR)
    mm = mmap.mmap(fd, 10_000)
    os.close(fd)
    try:
        mm[100:105] = b"HELLO"
        mm.flush()  # msync(MS_SYNC)
        assert fs.obj(f)[98:107] == b"aaHELLOaa"
    finally:
        mm.close()
    assert read(f) == b"a" * 100 + b"HELLO" + b"a" * 9895


# --- unlink, mkdir, rmdir ---------------------------------------------------------------------


def test_unlink(fs: FS, d: Path) -> None:
    f = d / "gone.txt"
    write(f, b"bye")
    assert fs.exists(f)
    os.unlink(f)
    assert not f.exists()
    assert "gone.txt" not in os.listdir(d)
    assert not fs.exists(f)
    assert errno_of(os.unlink, f) == errno.ENOENT
    assert errno_of(os.unlink, d) in (errno.EISDIR, errno.EPERM)


def test_unlink_open_file_keeps_data_for_the_open_descriptor(fs: FS, d: Path) -> None:
    f = d / "open-unlinked.txt"
    write(f, b"still here")
    fd = os.open(f, os.O_RDONLY)
    try:
        os.unlink(f)
        assert not f.exists()
        assert os.pread(fd, 100, 0) == b"still here"
    finally:
        os.close(fd)
    assert not f.exists()  # not recreated by the last close
    assert not fs.exists(f)


def test_unlink_file_open_for_writing_is_not_recreated(fs: FS, d: Path) -> None:
    f = d / "writer-unlinked.txt"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"abc")
        os.unlink(f)
        os.write(fd, b"def")
    finally:
        os.close(fd)
    assert not f.exists()
    assert os.listdir(d) == []
    assert not fs.exists(f)


def test_mkdir_and_rmdir(fs: FS, d: Path) -> None:
    sub = d / "sub"
    os.mkdir(sub, 0o755)
    assert os.path.isdir(sub)
    marker = fs.head(sub, directory=True)
    assert marker["ContentLength"] == 0
    assert marker["ContentType"] == "application/x-directory"
    assert errno_of(os.mkdir, sub) == errno.EEXIST
    os.rmdir(sub)
    assert not sub.exists()
    assert not fs.exists(sub, directory=True)
    assert errno_of(os.rmdir, sub) == errno.ENOENT
    write(d / "plain", b"x")
    assert errno_of(os.rmdir, d / "plain") == errno.ENOTDIR
    assert errno_of(os.mkdir, d / "missing-parent" / "child") == errno.ENOENT


def test_rmdir_non_empty_directory(d: Path) -> None:
    os.mkdir(d / "full")
    write(d / "full" / "file", b"x")
    assert errno_of(os.rmdir, d / "full") == errno.ENOTEMPTY
    os.mkdir(d / "nested")
    os.mkdir(d / "nested" / "child")
    assert errno_of(os.rmdir, d / "nested") == errno.ENOTEMPTY
    os.unlink(d / "full" / "file")
    os.rmdir(d / "full")
    assert not (d / "full").exists()


def test_rmdir_refuses_directory_whose_only_child_is_implicit(fs: FS, d: Path) -> None:
    """The child exists only as a key prefix (no marker object): still ENOTEMPTY."""
    os.mkdir(d / "parent")
    fs.s3.put_object(Bucket=fs.bucket, Key=f"{fs.key(d)}/parent/implicit/deep.txt", Body=b"x")
    assert errno_of(os.rmdir, d / "parent") == errno.ENOTEMPTY
    assert fs.exists(d / "parent" / "implicit" / "deep.txt")


# --- rename --------------------------------------------------------------------------------


def test_rename_file(fs: FS, d: Path) -> None:
    write(d / "old.txt", b"content")
    os.chmod(d / "old.txt", 0o600)
    os.mkdir(d / "other")
    os.rename(d / "old.txt", d / "new.txt")
    assert read(d / "new.txt") == b"content"
    assert stat.S_IMODE(os.stat(d / "new.txt").st_mode) == 0o600
    assert not (d / "old.txt").exists()
    assert sorted(os.listdir(d)) == ["new.txt", "other"]
    assert fs.obj(d / "new.txt") == b"content"
    assert not fs.exists(d / "old.txt")
    os.rename(d / "new.txt", d / "other" / "moved.txt")  # into another directory
    assert read(d / "other" / "moved.txt") == b"content"
    assert fs.keys(d) == [f"{fs.key(d)}/", f"{fs.key(d)}/other/", f"{fs.key(d)}/other/moved.txt"]


def test_rename_file_takes_the_new_names_type_and_a_new_ctime(fs: FS, d: Path) -> None:
    """As s3fs's rename_object (and its test_multipart_copy, test_update_time): the copy
    gets the Content-Type of its new name and a new ctime; mode, owner, mtime stay."""
    f = d / "page.html"
    write(f, b"<p>x</p>")
    os.chmod(f, 0o640)
    os.utime(f, (1_300_000_000, 1_300_000_000))
    assert fs.head(f)["ContentType"] == "text/html"
    before = os.stat(f)
    time.sleep(1.1)  # s3fs keeps whole seconds
    os.rename(f, d / "page.txt")
    head = fs.head(d / "page.txt")
    assert head["ContentType"] == "text/plain"
    after = os.stat(d / "page.txt")
    assert after.st_ctime > before.st_ctime
    assert int(head["Metadata"]["ctime"].split(".")[0]) >= int(before.st_ctime) + 1
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert int(after.st_mtime) == 1_300_000_000
    assert read(d / "page.txt") == b"<p>x</p>"


def test_rename_directory_gives_it_a_new_ctime(fs: FS, d: Path) -> None:
    """s3fs's test_update_directory_time: mv changes the directory's ctime (its own, not
    its children's)."""
    os.mkdir(d / "dir")
    os.chmod(d / "dir", 0o751)
    write(d / "dir" / "child", b"c")
    before, child_before = os.stat(d / "dir"), os.stat(d / "dir" / "child")
    time.sleep(1.1)
    os.rename(d / "dir", d / "dir2")
    after = os.stat(d / "dir2")
    assert after.st_ctime > before.st_ctime
    assert stat.S_IMODE(after.st_mode) == 0o751
    assert int(os.stat(d / "dir2" / "child").st_ctime) == int(child_before.st_ctime)
    assert fs.head(d / "dir2", directory=True)["ContentType"] == "application/x-directory"


def test_rename_file_over_existing_file(fs: FS, d: Path) -> None:
    write(d / "a", b"AAAA")
    write(d / "b", b"BBBBBBBB")
    os.rename(d / "a", d / "b")
    assert read(d / "b") == b"AAAA"
    assert os.listdir(d) == ["b"]
    assert fs.obj(d / "b") == b"AAAA"
    assert not fs.exists(d / "a")


def test_rename_directory_with_nested_content(fs: FS, d: Path) -> None:
    tree = {
        "a.txt": b"a",
        "sub/b.txt": b"bb",
        "sub/deeper/c.txt": b"ccc",
    }
    src, dst = d / "src", d / "dst"
    for sub in ("", "sub", "sub/deeper", "emptydir"):
        os.makedirs(src / sub, exist_ok=True)
    for rel, data in tree.items():
        write(src / rel, data)
    os.rename(src, dst)

    assert not src.exists()
    assert sorted(os.listdir(d)) == ["dst"]
    assert sorted(os.listdir(dst)) == ["a.txt", "emptydir", "sub"]
    assert os.listdir(dst / "emptydir") == []
    for rel, data in tree.items():
        assert read(dst / rel) == data
        assert fs.obj(dst / rel) == data
    base = fs.key(d)
    assert fs.keys(src) == []
    assert fs.keys(dst) == sorted(
        f"{base}/dst/{k}"
        for k in ("", "a.txt", "emptydir/", "sub/", "sub/b.txt", "sub/deeper/", "sub/deeper/c.txt")
    )


def test_rename_empty_directory(fs: FS, d: Path) -> None:
    os.mkdir(d / "e1", 0o700)
    os.chmod(d / "e1", 0o700)
    os.rename(d / "e1", d / "e2")
    assert os.listdir(d) == ["e2"]
    assert stat.S_IMODE(os.stat(d / "e2").st_mode) == 0o700
    assert fs.exists(d / "e2", directory=True)
    assert not fs.exists(d / "e1", directory=True)


def test_rename_directory_over_directory(fs: FS, d: Path) -> None:
    os.makedirs(d / "x1" / "inner")
    os.mkdir(d / "x2")
    os.rename(d / "x1", d / "x2")  # over an empty directory: replaced
    assert os.listdir(d) == ["x2"]
    assert os.listdir(d / "x2") == ["inner"]
    assert fs.keys(d / "x1") == []
    os.mkdir(d / "y1")
    os.makedirs(d / "y2" / "child")
    assert errno_of(os.rename, d / "y1", d / "y2") in (errno.ENOTEMPTY, errno.EEXIST)
    assert os.listdir(d / "y2") == ["child"]
    assert os.path.isdir(d / "y1")


def test_rename_before_close(fs: FS, d: Path) -> None:
    """s3fs's test_rename_before_close: data written before and after the rename survives."""
    fd = os.open(d / "before", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"written before rename;")
        os.rename(d / "before", d / "after")
        os.write(fd, b"and after")
    finally:
        os.close(fd)
    assert read(d / "after") == b"written before rename;and after"
    assert fs.obj(d / "after") == b"written before rename;and after"
    assert not (d / "before").exists()
    assert not fs.exists(d / "before")


# --- attributes: chmod, chown, utime; persisted in S3 metadata ------------------------------


def test_chmod_chown_utime_persist(fs: FS, d: Path, view: Mount) -> None:
    f, sub = d / "f.txt", d / "sub"
    write(f, b"meta")
    os.mkdir(sub)
    os.chmod(f, 0o600)
    os.chown(f, 1234, 5678)
    os.utime(f, (1_600_000_000, 1_500_000_000))
    os.chmod(sub, 0o711)
    os.chown(sub, 42, 43)
    os.utime(sub, (1_400_000_100, 1_400_000_000))

    def check(root: Path) -> None:
        base = root / d.name
        st = os.stat(base / "f.txt")
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (1234, 5678)
        assert int(st.st_mtime) == 1_500_000_000
        assert st.st_size == 4
        sd = os.stat(base / "sub")
        assert stat.S_ISDIR(sd.st_mode)
        assert stat.S_IMODE(sd.st_mode) == 0o711
        assert (sd.st_uid, sd.st_gid) == (42, 43)
        assert int(sd.st_mtime) == 1_400_000_000

    check(fs.root)
    check(view.path)
    assert read(view.path / d.name / "f.txt") == b"meta"  # metadata updates keep the content

    meta = fs.head(f)["Metadata"]
    assert int(meta["mode"], 0) == stat.S_IFREG | 0o600
    assert (int(meta["uid"]), int(meta["gid"])) == (1234, 5678)
    assert int(float(meta["mtime"])) == 1_500_000_000
    dmeta = fs.head(sub, directory=True)["Metadata"]
    assert int(dmeta["mode"], 0) & 0o7777 == 0o711


def test_utime_keeps_nanoseconds(
    fs: FS, d: Path, view: Mount, request: pytest.FixtureRequest
) -> None:
    """`touch -d`, `cp -p` and rsync set sub-second mtimes; make and rsync compare them."""
    f = d / "precise"
    write(f, b"x")
    mtime_ns = 1_500_000_000_123_456_789
    os.utime(f, ns=(mtime_ns, mtime_ns))
    assert os.stat(f).st_mtime_ns == mtime_ns
    assert os.stat(view.path / d.name / "precise").st_mtime_ns == mtime_ns


def test_metadata_changes_on_an_open_file_being_written(
    fs: FS, d: Path, view: Mount, request: pytest.FixtureRequest
) -> None:
    """s3fs's test_update_chmod_opened_file, and what `cp -p` does: fchmod, fchown and
    futimens on the destination fd BEFORE close. The final upload must keep both the
    data and the attributes set while the file was open."""
    s3fs_quirk(
        request,
        fs.backend,
        "chmod/chown/utime made while a file is open for writing are lost: the upload at"
        " close writes the metadata the file had when it was opened",
    )
    f = d / "open-meta"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"before;")
        os.chmod(f, 0o600)
        os.write(fd, b"between;")
        os.fchown(fd, 2345, 6789)
        os.utime(fd, ns=(1_200_000_000_000_000_000, 1_200_000_000_000_000_000))
    finally:
        os.close(fd)
    for root in (fs.root, view.path):
        st = os.stat(root / d.name / "open-meta")
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (2345, 6789)
        assert int(st.st_mtime) == 1_200_000_000
        assert read(root / d.name / "open-meta") == b"before;between;"
    assert fs.obj(f) == b"before;between;"


def test_cp_preserve_and_cp_archive(
    fs: FS, d: Path, tmp_path: Path, view: Mount, request: pytest.FixtureRequest
) -> None:
    """Real tools: `cp -a` of a local tree into the mount keeps bytes, modes, mtimes and
    symlinks, and survives a remount."""
    s3fs_quirk(
        request,
        fs.backend,
        "`cp -a` loses modes and mtimes: it sets them on the open destination fd, and the"
        " upload at close writes the metadata the file had when it was opened",
    )
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a" * 1000)
    (src / "sub" / "b.bin").write_bytes(_rand(41, 200_000))
    (src / "sub" / "c.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "sub" / "c.sh", 0o750)
    os.symlink("sub/b.bin", src / "link")
    os.utime(src / "a.txt", ns=(1_111_111_111_222_333_444, 1_111_111_111_222_333_444))
    os.utime(src / "sub", (1_222_222_222, 1_222_222_222))
    done = subprocess.run(["cp", "-a", str(src), str(d / "copy")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for root in (fs.root, view.path):
        copy = root / d.name / "copy"
        for rel in ("a.txt", "sub/b.bin", "sub/c.sh"):
            s_st, c_st = os.stat(src / rel), os.stat(copy / rel)
            assert read(copy / rel) == read(src / rel)
            assert c_st.st_mode == s_st.st_mode, rel
            assert int(c_st.st_mtime) == int(s_st.st_mtime), rel
        assert os.readlink(copy / "link") == "sub/b.bin"
        assert int(os.stat(copy / "sub").st_mtime) == 1_222_222_222


def test_chmod_keeps_content_type_and_body(fs: FS, d: Path) -> None:
    f = d / "page.html"
    write(f, b"<p>hi</p>")
    before = fs.head(f)["ContentType"]
    os.chmod(f, 0o604)
    assert fs.head(f)["ContentType"] == before
    assert fs.obj(f) == b"<p>hi</p>"


def test_mtime_follows_writes(d: Path) -> None:
    f = d / "touched"
    write(f, b"1")
    os.utime(f, (1_000_000_000, 1_000_000_000))
    start = time.time()
    with open(f, "ab") as w:
        w.write(b"2")
    assert os.stat(f).st_mtime >= start - 2


# --- links -----------------------------------------------------------------------------------


def test_symlinks_relative_and_absolute(fs: FS, d: Path, view: Mount) -> None:
    write(d / "target.txt", b"pointed at")
    os.symlink("target.txt", d / "rel")
    os.symlink("/nonexistent/absolute/target", d / "abs")
    os.mkdir(d / "sub")
    os.symlink("../target.txt", d / "sub" / "up")

    for root in (fs.root, view.path):
        base = root / d.name
        assert stat.S_ISLNK(os.lstat(base / "rel").st_mode)
        assert os.readlink(base / "rel") == "target.txt"
        assert os.readlink(base / "abs") == "/nonexistent/absolute/target"
        assert os.readlink(base / "sub" / "up") == "../target.txt"
        assert read(base / "rel") == b"pointed at"
        assert read(base / "sub" / "up") == b"pointed at"
        assert not (base / "abs").exists()  # dangling, followed: ENOENT
        assert os.lstat(base / "abs").st_size == len("/nonexistent/absolute/target")

    assert fs.obj(d / "rel") == b"target.txt"
    assert int(fs.head(d / "rel")["Metadata"]["mode"], 0) == stat.S_IFLNK | 0o777
    os.unlink(d / "rel")
    assert read(d / "target.txt") == b"pointed at"  # removing the link keeps the target


def test_hard_link_is_refused(d: Path) -> None:
    write(d / "src", b"x")
    # ENOTSUP, as s3fs answers ("Operation not supported"; its own suite checks the text)
    assert errno_of(os.link, d / "src", d / "dst") == errno.ENOTSUP
    assert not (d / "dst").exists()


# --- statfs, access --------------------------------------------------------------------------


def test_statvfs_reports_large_free_space(fs: FS) -> None:
    sv = os.statvfs(fs.root)
    assert sv.f_bavail * sv.f_frsize >= 1 << 40  # at least 1 TiB: `df` must not say full
    assert sv.f_blocks >= sv.f_bavail > 0
    assert sv.f_namemax >= 255


def test_access(d: Path) -> None:
    write(d / "f", b"x")
    assert os.access(d / "f", os.F_OK)
    assert os.access(d / "f", os.R_OK | os.W_OK)
    assert os.access(d, os.R_OK | os.W_OK | os.X_OK)
    assert not os.access(d / "missing", os.F_OK)


# --- names -----------------------------------------------------------------------------------

SPECIAL_NAMES = [
    "with space.txt",
    "unicodé-日本語-ü.txt",
    "a+b.txt",
    "100%.txt",
    "%20literal",
    "hash#tag",
    "what?.txt",
    "a&b=c.txt",
    "-leading-dash",
    "semi;colon,comma",
    "tilde~ and 'quotes'",
    "back\\slash",
    "carriage\rreturn",
    "n" * 240,  # long, but leaves room for the "dir " prefix within NAME_MAX
]


@pytest.mark.parametrize("name", SPECIAL_NAMES)
def test_special_names(fs: FS, d: Path, name: str, request: pytest.FixtureRequest) -> None:
    if "\r" in name:
        s3fs_quirk(
            request,
            fs.backend,
            "readdir shows a CR in a name as LF (XML end-of-line normalisation of the"
            " listing; fixed in s3fs 1.92, s3fs-fuse#2136)",
        )
    f = d / name
    write(f, name.encode())
    assert os.listdir(d) == [name]
    assert read(f) == name.encode()
    assert fs.keys(d) == [f"{fs.key(d)}/", f"{fs.key(d)}/{name}"]

    sub = d / f"dir {name}"
    os.mkdir(sub)
    write(sub / name, b"inner")
    assert sorted(os.listdir(d)) == sorted([name, f"dir {name}"])
    assert os.listdir(sub) == [name]
    assert fs.obj(sub / name) == b"inner"
    os.rename(f, sub / "renamed")
    assert read(sub / "renamed") == name.encode()
    os.unlink(sub / name)
    os.unlink(sub / "renamed")
    os.rmdir(sub)
    assert os.listdir(d) == []
    assert fs.keys(d) == [f"{fs.key(d)}/"]


def test_name_lookups_do_not_match_patterns(d: Path) -> None:
    """s3fs's test_special_characters: '?', '*', '~' are literal, never wildcards."""
    write(d / "special", b"x")
    for name in ("special?", "special*", "special~", "specialμ", "spec"):
        assert not (d / name).exists()
    assert (d / "special").exists()


# --- special files: FIFOs, sockets, devices --------------------------------------------------

# (name, type, device number): s3fs's mknod makes each an empty object whose
# x-amz-meta-mode carries the type; the bundled backend adds the device's number.
SPECIAL_FILES = [
    ("fifo", stat.S_IFIFO, 0),
    ("socket", stat.S_IFSOCK, 0),
    ("chardev", stat.S_IFCHR, os.makedev(1, 3)),
    ("blockdev", stat.S_IFBLK, os.makedev(7, 300)),
]


def make_special(path: Path, kind: int, dev: int, perm: int = 0o640) -> None:
    """Make one special file the way programs do: mkfifo, bind(), mknod."""
    old = os.umask(0)
    try:
        if kind == stat.S_IFIFO:
            os.mkfifo(path, perm)
        elif kind == stat.S_IFSOCK:
            import socket

            cwd = os.getcwd()
            os.chdir(path.parent)  # sun_path holds 108 bytes: bind a relative name
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.bind(path.name)
            finally:
                os.chdir(cwd)
            os.chmod(path, perm)
        else:
            os.mknod(path, kind | perm, dev)
    finally:
        os.umask(old)


def _rdev_quirk(request: pytest.FixtureRequest, fs: FS, kind: int) -> None:
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        s3fs_quirk(request, fs.backend, "mknod keeps no device number: st_rdev is 0")


@pytest.mark.parametrize(("name", "kind", "dev"), SPECIAL_FILES, ids=[s[0] for s in SPECIAL_FILES])
def test_special_file_is_made_listed_and_stated(
    fs: FS, d: Path, name: str, kind: int, dev: int, request: pytest.FixtureRequest
) -> None:
    _rdev_quirk(request, fs, kind)
    path = d / name
    before = time.time()
    make_special(path, kind, dev)
    st = os.lstat(path)
    assert (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)) == (kind, 0o640)
    assert st.st_size == 0 and st.st_nlink == 1
    assert before - 2 <= st.st_mtime <= time.time() + 2
    assert os.listdir(d) == [name]
    head = fs.head(path)
    assert head["ContentLength"] == 0
    assert int(head["Metadata"]["mode"], 0) == kind | 0o640  # s3fs's object format
    assert st.st_rdev == dev


@pytest.mark.parametrize(("name", "kind", "dev"), SPECIAL_FILES, ids=[s[0] for s in SPECIAL_FILES])
def test_special_file_chmod_rename_unlink(
    fs: FS, d: Path, name: str, kind: int, dev: int, request: pytest.FixtureRequest
) -> None:
    _rdev_quirk(request, fs, kind)
    path = d / name
    make_special(path, kind, dev)
    mtime = os.lstat(path).st_mtime_ns
    os.chmod(path, 0o604)
    assert os.lstat(path).st_mode == kind | 0o604
    assert int(fs.head(path)["Metadata"]["mode"], 0) == kind | 0o604
    os.rename(path, d / "moved")
    assert os.listdir(d) == ["moved"]
    st = os.lstat(d / "moved")
    assert st.st_mode == kind | 0o604
    assert st.st_mtime_ns // 10**9 == mtime // 10**9
    assert not fs.exists(path)
    assert st.st_rdev == dev
    os.unlink(d / "moved")
    assert os.listdir(d) == []
    assert fs.keys(d) == [f"{fs.key(d)}/"]


def test_special_files_show_after_a_remount(fs: FS, d: Path, view: Mount) -> None:
    for name, kind, dev in SPECIAL_FILES:
        make_special(d / name, kind, dev)
    mine = {n: os.lstat(d / n) for n, _, _ in SPECIAL_FILES}
    there = view.path / d.name
    assert sorted(os.listdir(there)) == sorted(mine)
    for name, st in mine.items():
        other = os.lstat(there / name)
        assert (other.st_mode, other.st_rdev, other.st_uid, other.st_gid) == (
            st.st_mode,
            st.st_rdev,
            st.st_uid,
            st.st_gid,
        )
        assert other.st_mtime_ns // 10**9 == st.st_mtime_ns // 10**9


def test_fifo_carries_data_locally(d: Path) -> None:
    """The kernel serves a FIFO itself: data passes between two opens of the name."""
    path = d / "pipe"
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(path, os.O_WRONLY)
        try:
            os.write(w, b"through the pipe")
        finally:
            os.close(w)
        assert os.read(r, 100) == b"through the pipe"
    finally:
        os.close(r)


def test_mknod_of_an_existing_name_is_eexist(d: Path) -> None:
    write(d / "taken", b"x")
    assert errno_of(os.mkfifo, d / "taken") == errno.EEXIST
    assert errno_of(os.mknod, d / "taken", stat.S_IFCHR | 0o600, os.makedev(1, 3)) == errno.EEXIST
    assert read(d / "taken") == b"x"


# --- name limits: NAME_MAX, PATH_MAX, S3's 1,024-byte keys ------------------------------------

LONG = "n" * 256  # one byte over NAME_MAX (names up to 1,024 bytes reach the filesystem)


def test_a_name_over_name_max_is_enametoolong(
    fs: FS, d: Path, request: pytest.FixtureRequest
) -> None:
    s3fs_quirk(request, fs.backend, "names over 255 bytes are created")
    long = d / LONG
    write(d / "short", b"x")
    os.mkdir(d / "dir")
    makers = {
        "mkdir": lambda: os.mkdir(long),
        "open(O_CREAT)": lambda: os.close(os.open(long, os.O_CREAT | os.O_WRONLY, 0o644)),
        "symlink": lambda: os.symlink("short", long),
        "rename": lambda: os.rename(d / "short", long),
        "rename dir": lambda: os.rename(d / "dir", long),
        "mkfifo": lambda: os.mkfifo(long),
        "mknod": lambda: os.mknod(long, stat.S_IFCHR | 0o600, os.makedev(1, 3)),
    }
    got = {what: errno_of(make) for what, make in makers.items()}
    assert got == dict.fromkeys(makers, errno.ENAMETOOLONG)
    users = {
        "stat": lambda: os.stat(long),
        "chmod": lambda: os.chmod(long, 0o600),
        "chown": lambda: os.chown(long, 1, 1),
        "truncate": lambda: os.truncate(long, 0),
        "unlink": lambda: os.unlink(long),
        "rmdir": lambda: os.rmdir(long),
        "utime": lambda: os.utime(long),
    }
    got = {what: errno_of(use) for what, use in users.items()}
    assert got == dict.fromkeys(users, errno.ENAMETOOLONG)
    assert sorted(os.listdir(d)) == ["dir", "short"]
    assert fs.keys(d) == [f"{fs.key(d)}/", f"{fs.key(d)}/dir/", f"{fs.key(d)}/short"]
    # 255 bytes is fine, in any encoding: 85 three-byte characters.
    for ok in ("m" * 255, "語" * 85):
        write(d / ok, b"ok")
        assert read(d / ok) == b"ok"


def _deep(d: Path, fs: FS, room: int) -> Path:
    """A directory below `d` whose key leaves `room` bytes for a name under it."""
    path = d
    while True:
        left = 1024 - len(fs.key(path).encode()) - 1 - room  # what one more level may use
        if left <= 1:
            return path
        path = path / ("d" * min(200, left - 1))
        os.mkdir(path)


def test_a_key_over_1024_bytes_is_enametoolong_and_nothing_is_made(
    fs: FS, d: Path, request: pytest.FixtureRequest
) -> None:
    s3fs_quirk(request, fs.backend, "a key over S3's limit fails with EIO or is half made")
    deep = _deep(d, fs, room=20)
    room = 1024 - len(fs.key(deep).encode()) - 1
    assert 10 < room <= 40
    before = fs.keys(d)
    fits = deep / ("f" * room)  # its key is exactly 1,024 bytes
    write(fits, b"fits")
    assert read(fits) == b"fits"
    over = deep / ("g" * (room + 1))
    assert errno_of(write, over, b"no") == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, deep / ("h" * room)) == errno.ENAMETOOLONG  # `h…/` is 1,025
    assert errno_of(os.symlink, "x", over) == errno.ENAMETOOLONG
    assert errno_of(os.mkfifo, over) == errno.ENAMETOOLONG
    assert errno_of(os.rename, fits, over) == errno.ENAMETOOLONG
    assert errno_of(os.stat, over) == errno.ENAMETOOLONG
    assert sorted(os.listdir(deep)) == [fits.name]
    assert fs.keys(d) == sorted([*before, fs.key(fits)])


def test_a_directory_rename_that_would_make_a_key_too_long_copies_nothing(
    fs: FS, d: Path, request: pytest.FixtureRequest
) -> None:
    s3fs_quirk(request, fs.backend, "a directory rename copies what fits, then fails")
    deep = _deep(d, fs, room=40)
    room = 1024 - len(fs.key(deep).encode()) - 1
    src = deep / "s"
    os.mkdir(src)
    write(src / "a", b"a")  # short: fits after the rename
    write(src / ("b" * (room - 2)), b"b")  # key 1,024 bytes: one more is too many
    before = fs.keys(d)
    assert errno_of(os.rename, src, deep / "ss") == errno.ENAMETOOLONG
    assert fs.keys(d) == before
    assert sorted(os.listdir(src)) == sorted(["a", "b" * (room - 2)])
    assert not (deep / "ss").exists()


# --- directory times -------------------------------------------------------------------------

ENTRY_CHANGES = {
    "create": lambda d: write(d / "new", b"x"),
    "mkdir": lambda d: os.mkdir(d / "new"),
    "mkfifo": lambda d: os.mkfifo(d / "new"),
    "symlink": lambda d: os.symlink("target", d / "new"),
    "unlink": lambda d: os.unlink(d / "old"),
    "rmdir": lambda d: os.rmdir(d / "olddir"),
    "rename within": lambda d: os.rename(d / "old", d / "new"),
    "rename out": lambda d: os.rename(d / "old", d.parent / f"{d.name}-out"),
    "rename in": lambda d: os.rename(d.parent / f"{d.name}-in", d / "new"),
}


@pytest.mark.parametrize("change", ENTRY_CHANGES)
def test_an_entry_change_advances_the_directory_mtime_and_ctime(
    fs: FS, d: Path, change: str, request: pytest.FixtureRequest
) -> None:
    s3fs_quirk(request, fs.backend, "a directory's times ignore its entries")
    write(d / "old", b"o")
    os.mkdir(d / "olddir")
    write(d.parent / f"{d.name}-in", b"i")
    past = int(time.time()) - 3600
    os.utime(d, (past, past))
    before = os.stat(d)
    assert int(before.st_mtime) == past
    time.sleep(0.01)
    ENTRY_CHANGES[change](d)
    after = os.stat(d)
    assert after.st_mtime > time.time() - 60
    assert after.st_ctime_ns > before.st_ctime_ns


def test_directory_times_are_stored_at_unmount(fs: FS, d: Path) -> None:
    """What README says: the marker gets this mount's time lazily (every
    upload_retry_interval, and at unmount), one copy per directory, not per entry."""
    if fs.backend == "s3fs":
        pytest.skip("s3fs 1.90 does not advance them at all")
    past = int(time.time()) - 3600
    os.utime(d, (past, past))
    writer = fs.fresh_view()
    try:
        for i in range(3):
            write(writer.path / d.name / f"f{i}", b"x")
        shown = os.stat(writer.path / d.name).st_mtime_ns
        assert shown > (past + 60) * 10**9
    finally:
        assert fs.mounts.stop(writer) == 0
    assert int(float(fs.head(d, directory=True)["Metadata"]["mtime"])) == shown // 10**9
    reader = fs.fresh_view()
    try:
        assert os.stat(reader.path / d.name).st_mtime_ns // 10**9 == shown // 10**9
        os.utime(reader.path / d.name, (past - 10, past - 10))  # set explicitly: it shows
        assert int(os.stat(reader.path / d.name).st_mtime) == past - 10
    finally:
        fs.mounts.stop(reader)


# --- link counts -----------------------------------------------------------------------------


def test_directory_link_count_is_2_plus_subdirectories(
    fs: FS, d: Path, request: pytest.FixtureRequest
) -> None:
    s3fs_quirk(request, fs.backend, "every directory shows st_nlink 1")
    assert os.stat(d).st_nlink == 2
    os.mkdir(d / "a")
    os.mkdir(d / "b")
    os.mkdir(d / "a" / "c")
    write(d / "f", b"x")
    assert (os.stat(d).st_nlink, os.stat(d / "a").st_nlink, os.stat(d / "b").st_nlink) == (4, 3, 2)
    assert os.stat(d / "f").st_nlink == 1
    os.rmdir(d / "b")
    assert os.stat(d).st_nlink == 3
    os.rename(d / "a", d / "moved")
    assert (os.stat(d).st_nlink, os.stat(d / "moved").st_nlink) == (3, 3)
    os.rename(d / "moved", d / "moved" / ".." / ".." / f"{d.name}-away")
    assert os.stat(d).st_nlink == 2


def test_directory_link_count_from_a_listing_and_1_while_unknown(
    fs: FS, d: Path, view: Mount
) -> None:
    """A fresh mount knows a directory's subdirectories only once it listed it; until
    then st_nlink is 1, the "not counted" value find and fts do not rely on."""
    if fs.backend == "s3fs":
        pytest.skip("s3fs 1.90 shows 1 for every directory")
    for name in ("a", "b", "c"):
        os.mkdir(d / name)
    there = view.path / d.name
    assert os.stat(there).st_nlink == 1
    assert sorted(os.listdir(there)) == ["a", "b", "c"]
    assert os.stat(there).st_nlink == 5


def test_fstat_of_an_unlinked_open_file(fs: FS, d: Path) -> None:
    f = d / "open"
    write(f, b"content")
    fd = os.open(f, os.O_RDWR)
    try:
        os.unlink(f)
        st = os.fstat(fd)
        assert (st.st_nlink, st.st_size) == (0, 7)
        os.pwrite(fd, b"more", 7)
        assert os.fstat(fd).st_size == 11
        os.fchmod(fd, 0o600)
        if fs.backend == "python":  # s3fs 1.90 shows the mode it had
            assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert os.pread(fd, 100, 0) == b"contentmore"
    finally:
        os.close(fd)
    assert not f.exists()
    assert not fs.exists(f)


def _open_in_a_subdirectory(fs: FS, d: Path, flags: int) -> int:
    """A descriptor of sub/open (holding b"content"), for the unlinked-open-file tests."""
    if fs.backend == "s3fs":
        pytest.skip("s3fs 1.90 copies the file to a .fuse_hidden object in the bucket")
    os.mkdir(d / "sub")
    write(d / "sub" / "open", b"content")
    return os.open(d / "sub" / "open", flags)


def test_an_unlinked_open_file_leaves_no_name_behind(fs: FS, d: Path) -> None:
    """libfuse renames an unlinked open file to a .fuse_hidden name until its last
    close; that name is neither listed nor stored in the bucket, and the directory can
    go while the file is still open, as on a local filesystem (its descriptors still
    read; fstat then answers ESTALE: libfuse has no path for it any more)."""
    fd = _open_in_a_subdirectory(fs, d, os.O_RDONLY)
    sub, f = d / "sub", d / "sub" / "open"
    try:
        os.unlink(f)
        assert os.listdir(sub) == []
        assert fs.keys(sub) == [fs.key(sub) + "/"]
        assert os.fstat(fd).st_nlink == 0
        os.rmdir(sub)
        assert os.pread(fd, 100, 0) == b"content"
    finally:
        os.close(fd)
    assert os.listdir(d) == []
    assert fs.keys(d) == [fs.key(d) + "/"]


def test_an_unlinked_open_file_in_a_removed_directory_is_still_writable(fs: FS, d: Path) -> None:
    """Writes reach the file with no path at all (libfuse passes none once its directory
    is gone), as reads do, and nothing of it reaches the bucket."""
    fd = _open_in_a_subdirectory(fs, d, os.O_RDWR)
    try:
        os.unlink(d / "sub" / "open")
        os.rmdir(d / "sub")
        assert os.pwrite(fd, b"CONTENT and more", 0) == 16
        assert os.pread(fd, 100, 0) == b"CONTENT and more"
    finally:
        os.close(fd)
    assert fs.keys(d) == [fs.key(d) + "/"]


def test_rename_over_an_open_file(fs: FS, d: Path) -> None:
    """The replaced file lives on for its open descriptor (nlink 0); the name shows
    the new content, and nothing else is left in the directory or the bucket."""
    target, new = d / "target", d / "new"
    write(target, b"old content")
    fd = os.open(target, os.O_RDONLY)
    try:
        write(new, b"new")
        os.rename(new, target)
        assert os.pread(fd, 100, 0) == b"old content"
        assert os.fstat(fd).st_nlink == 0
        assert read(target) == b"new"
        if fs.backend == "python":  # s3fs keeps the old one as a .fuse_hidden object
            assert os.listdir(d) == ["target"]
            assert fs.keys(d) == [fs.key(d) + "/", fs.key(target)]
    finally:
        os.close(fd)
    # The kernel sends FUSE's RELEASE after close(2) has returned, and libfuse removes
    # the hidden name only then: give it a moment.
    deadline = time.monotonic() + 5
    while os.listdir(d) != ["target"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.listdir(d) == ["target"]
    assert read(target) == b"new"
    assert fs.obj(target) == b"new"

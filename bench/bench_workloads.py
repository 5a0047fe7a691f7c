"""What the benchmark measures: the bucket it fills, and each workload through a mount and direct.

Every workload returns a dict of figures (see bench_report.FIGURES for names and units).
Mounted workloads only touch the file system (plain os calls, `ls`, `find`) so that each
backend is measured the way an application would use it; the direct ones use the
benchmark's own awscrt client (bench/crt_client.py: parallel ranged GETs, parallel
multipart uploads, many HEADs in flight) on the same server: the ceiling.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from crt_client import CrtClient

MiB = 1 << 20
CHUNK = MiB  # the application's read/write size


@dataclass(frozen=True)
class Sizes:
    read_bytes: int  # sequential read
    big_read_bytes: int  # the bigger sequential read, and the random reads' object
    random_count: int  # 1 MiB reads at scattered offsets of the big object
    write_bytes: int
    big_write_bytes: int
    ls_count: int  # `ls -l`, cold
    big_ls_count: int  # `ls` and `ls -l`
    find_files: int
    find_dirs: int
    big_find_files: int
    big_find_dirs: int
    create_count: int
    create_bytes: int = 4096

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


DEFAULT_SIZES = Sizes(
    read_bytes=64 * MiB, big_read_bytes=256 * MiB, random_count=64,
    write_bytes=32 * MiB, big_write_bytes=128 * MiB,
    ls_count=1000, big_ls_count=20_000,
    find_files=480, find_dirs=40, big_find_files=20_000, big_find_dirs=200,
    create_count=100,
)  # fmt: skip
QUICK_SIZES = Sizes(
    read_bytes=16 * MiB, big_read_bytes=32 * MiB, random_count=16,
    write_bytes=8 * MiB, big_write_bytes=16 * MiB,
    ls_count=200, big_ls_count=2000,
    find_files=120, find_dirs=10, big_find_files=2000, big_find_dirs=20,
    create_count=20,
)  # fmt: skip

# Keys in the bucket. Directories have s3fs-style markers (`dir/`), as if s3fs had made
# them (where the server keeps them: rclone serve s3 has directories, not markers).
READ_KEY = "big/read.bin"
BIG_READ_KEY = "big/read-big.bin"
LS_DIR = "ls"
BIG_LS_DIR = "lsbig"
TREE_DIR = "tree"
BIG_TREE_DIR = "treebig"
WRITE_DIR = "w"
CREATE_DIR = "c"


def _meta(mode: int, now: int) -> list[tuple[str, str]]:
    """The x-amz-meta-* headers s3fs writes on every object."""
    return [
        ("x-amz-meta-mode", str(mode)),
        ("x-amz-meta-uid", "0"),
        ("x-amz-meta-gid", "0"),
        ("x-amz-meta-mtime", str(now)),
    ]


def ls_keys(directory: str, count: int) -> list[str]:
    return [f"{directory}/file-{i:05d}.txt" for i in range(count)]


def tree_keys(directory: str, files: int, dirs: int) -> list[str]:
    per_dir = files // dirs
    return [f"{directory}/d{d:03d}/file-{i:04d}.txt" for d in range(dirs) for i in range(per_dir)]


def tree_dirs(directory: str, dirs: int) -> list[str]:
    return [f"{directory}/d{d:03d}" for d in range(dirs)]


KEEP = ".keep"  # where a server has no markers, this keeps w/ and c/ in existence

# The data sets of 20,000 objects live in buckets of their own: moto scans every key of
# a bucket for each LIST (~0.15 s per LIST with 41,000 keys), which real S3 does not,
# and that would otherwise slow every listing of the small sets too.
BUCKET_SETS = ("main", "lsbig", "treebig")
WORKLOAD_SET = {"ls_big": "lsbig", "ls_l_big": "lsbig", "find_big": "treebig"}


def fill_buckets(
    clients: dict[str, CrtClient],
    sizes: Sizes,
    read_data: bytes,
    big_read_data: bytes,
    markers: bool = True,
) -> dict[str, float]:
    """Create the buckets (one client per BUCKET_SETS name) and every object the
    workloads read; return the seconds it took and how many objects it made.

    Small objects carry s3fs's metadata headers (mode/uid/gid/mtime), so no backend can
    answer `stat` from a listing alone: the realistic case for a bucket s3fs wrote.
    Without `markers` (rclone serve s3: a `dir/` object there breaks the directory it
    names), directories exist through their files, and w/ and c/ through a KEEP file.
    """
    t0 = time.monotonic()
    now = int(time.time())
    body = b"benchmark object\n" * 6  # ~100 bytes, like a small config or log file
    dir_headers = [("content-type", "application/x-directory"), *_meta(0o40755, now)]
    file_headers = [("content-type", "text/plain"), *_meta(0o100644, now)]
    dirs = {
        "main": [
            LS_DIR,
            TREE_DIR,
            WRITE_DIR,
            CREATE_DIR,
            "big",
            *tree_dirs(TREE_DIR, sizes.find_dirs),
        ],
        "lsbig": [BIG_LS_DIR],
        "treebig": [BIG_TREE_DIR, *tree_dirs(BIG_TREE_DIR, sizes.big_find_dirs)],
    }
    small = {
        "main": ls_keys(LS_DIR, sizes.ls_count)
        + tree_keys(TREE_DIR, sizes.find_files, sizes.find_dirs),
        "lsbig": ls_keys(BIG_LS_DIR, sizes.big_ls_count),
        "treebig": tree_keys(BIG_TREE_DIR, sizes.big_find_files, sizes.big_find_dirs),
    }
    if not markers:
        small["main"] += [f"{WRITE_DIR}/{KEEP}", f"{CREATE_DIR}/{KEEP}"]
    made = 2
    for name, client in clients.items():
        client.create_bucket().result()
        if markers:
            client.many(lambda d=d, c=client: c.put(d + "/", b"", dir_headers) for d in dirs[name])
            made += len(dirs[name])
        client.many(lambda k=k, c=client: c.put(k, body, file_headers) for k in small[name])
        made += len(small[name])
    for key, data in ((READ_KEY, read_data), (BIG_READ_KEY, big_read_data)):
        clients["main"].put_multipart(key, data, file_headers, part_size=16 * MiB)
        # rclone serve s3 hashes an object made in parts at its first HEAD or listing
        # (0.4 s for 256 MiB): here, not in the first sample of whichever peer is first.
        clients["main"].head(key).result()
    return {"seconds": time.monotonic() - t0, "objects": made}


def delete_prefix(client: CrtClient, prefix: str) -> int:
    """Delete every object under `prefix/` except the directory marker itself."""
    keys, _ = client.list_all(prefix + "/", delimiter="")
    doomed = [k for k in keys if k not in (prefix + "/", f"{prefix}/{KEEP}")]
    client.delete_many(doomed)
    return len(doomed)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def random_offsets(sizes: Sizes) -> list[int]:
    """Scattered 1 MiB-aligned offsets in the big object, the same in every sample."""
    blocks = sizes.big_read_bytes // MiB
    return [b * MiB for b in random.Random(8).sample(range(blocks), sizes.random_count)]


class WorkloadError(RuntimeError):
    """The workload ran but its result was wrong (short read, missing entries...)."""


# --- through a mount ------------------------------------------------------------------------


def fs_read(mnt: Path, key: str, expect: bytes, prefix: str = "") -> dict[str, float]:
    """Open an object cold, time the first byte, then read it to the end in 1 MiB reads."""
    buf = bytearray(len(expect))
    view = memoryview(buf)
    t0 = time.perf_counter()
    fd = os.open(mnt / key, os.O_RDONLY)
    try:
        got = os.readv(fd, [view[0:1]])
        t_first = time.perf_counter()
        off = got
        while off < len(buf):
            n = os.readv(fd, [view[off : off + CHUNK]])
            if n == 0:
                break
            off += n
        extra = os.read(fd, 1)  # must be EOF
    finally:
        os.close(fd)
    t_end = time.perf_counter()
    if off != len(buf) or extra:
        raise WorkloadError(f"read {off + len(extra)} bytes, expected {len(buf)}")
    if buf != expect:
        raise WorkloadError("read data differs from the object's content")
    return {f"{prefix}read_mbps": mbps(off, t_end - t0), f"{prefix}ttfb_ms": (t_first - t0) * 1e3}


def fs_random(mnt: Path, sizes: Sizes, expect: bytes) -> dict[str, float]:
    """1 MiB preads at scattered offsets of the big object, one after the other."""
    offsets = random_offsets(sizes)
    t0 = time.perf_counter()
    fd = os.open(mnt / BIG_READ_KEY, os.O_RDONLY)
    try:
        for off in offsets:
            data = os.pread(fd, MiB, off)
            if data != expect[off : off + MiB]:
                raise WorkloadError(f"random read at {off}: wrong data ({len(data)} bytes)")
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    return {"random_ms": seconds * 1e3 / len(offsets)}


def fs_write(mnt: Path, name: str, data: bytes, prefix: str = "") -> dict[str, float]:
    """Write a new file in 1 MiB writes; the clock stops when close() returns (for python
    and s3fs the upload is done then; rclone's close() returns before its upload)."""
    view = memoryview(data)
    t0 = time.perf_counter()
    fd = os.open(mnt / WRITE_DIR / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, len(data), CHUNK):
            os.write(fd, view[off : off + CHUNK])
    finally:
        os.close(fd)
    return {f"{prefix}write_mbps": mbps(len(data), time.perf_counter() - t0)}


def _run_listing(argv: list[str], expect_lines: int, timeout: float) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise WorkloadError(f"{argv[0]} exited {done.returncode}: {done.stderr[-300:]!r}")
    lines = done.stdout.count(b"\n")
    if lines != expect_lines:
        raise WorkloadError(f"{' '.join(argv[:2])} printed {lines} lines, expected {expect_lines}")
    return seconds


def fs_ls(mnt: Path, directory: str, count: int, long: bool, timeout: float) -> float:
    """`ls` (names only: a readdir, no stat on GNU ls without colours) or `ls -l`."""
    argv = ["ls", "-l", str(mnt / directory)] if long else ["ls", str(mnt / directory)]
    return _run_listing(argv, count + (1 if long else 0), timeout)  # -l: the "total" line


def fs_find(mnt: Path, directory: str, files: int, dirs: int, timeout: float) -> float:
    expect = (files // dirs) * dirs + dirs + 1
    return _run_listing(["find", str(mnt / directory)], expect, timeout)


def fs_create(mnt: Path, prefix: str, sizes: Sizes) -> dict[str, float]:
    """Create small files one after the other (open, write, close), as an unpacking tool does."""
    body = os.urandom(sizes.create_bytes)
    base = mnt / CREATE_DIR
    t0 = time.perf_counter()
    for i in range(sizes.create_count):
        fd = os.open(base / f"{prefix}-{i:04d}.dat", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
    return {"create_fps": sizes.create_count / (time.perf_counter() - t0)}


# --- the direct client (the ceiling) --------------------------------------------------------

HEADS_IN_FLIGHT = 64


def direct_part(size: int, minimum: int) -> int:
    """A part size that splits `size` into ≥ 8 parts in flight, 8 MiB at most."""
    return max(minimum, min(8 * MiB, size // 8))


def direct_read(c: CrtClient, key: str, expect: bytes, prefix: str = "") -> dict[str, float]:
    """The whole object in parallel ranged GETs (≤ 8 MiB, ≥ 8 of them), and in one GET
    stream: the better of the two is the ceiling (moto copies the whole object for every
    ranged GET, so there many ranges lose to one stream); time to first byte as a file
    open would see it: HEAD, then a GET of the first MiB."""
    buf = bytearray(len(expect))
    t0 = time.perf_counter()
    c.get_parallel(key, buf, part_size=direct_part(len(buf), MiB)).result()
    parallel = mbps(len(buf), time.perf_counter() - t0)
    if buf != expect:
        raise WorkloadError("direct ranged GETs returned other data")
    buf = bytearray(len(expect))
    t0 = time.perf_counter()
    c.get_parallel(key, buf, part_size=len(buf)).result()  # one part: one request
    single = mbps(len(buf), time.perf_counter() - t0)
    if buf != expect:
        raise WorkloadError("direct single GET returned other data")
    t0 = time.perf_counter()
    c.head(key).result()
    c.get_range(key, 0, MiB).result()
    ttfb = time.perf_counter() - t0
    return {
        f"{prefix}read_mbps": max(parallel, single),
        f"{prefix}read_parallel_mbps": parallel,
        f"{prefix}read_single_mbps": single,
        f"{prefix}ttfb_ms": ttfb * 1e3,
    }


def direct_random(c: CrtClient, sizes: Sizes, expect: bytes) -> dict[str, float]:
    """The same 1 MiB ranged GETs, one after the other (the application waits for each)."""
    offsets = random_offsets(sizes)
    t0 = time.perf_counter()
    for off in offsets:
        got = bytes(c.get_range(BIG_READ_KEY, off, MiB).result().body)
        if got != expect[off : off + MiB]:
            raise WorkloadError(f"direct random read at {off}: wrong data")
    return {"random_ms": (time.perf_counter() - t0) * 1e3 / len(offsets)}


def direct_write(c: CrtClient, name: str, data: bytes, prefix: str = "") -> dict[str, float]:
    """A multipart upload, ≤ 8 MiB parts (≥ 5 MiB, S3's minimum), 8 in flight."""
    t0 = time.perf_counter()
    part = direct_part(len(data), 5 * MiB)
    c.put_multipart(f"{WRITE_DIR}/{name}", data, part_size=part, in_flight=8)
    return {f"{prefix}write_mbps": mbps(len(data), time.perf_counter() - t0)}


def direct_ls(c: CrtClient, directory: str, count: int, heads: bool) -> float:
    """ListObjectsV2 pages, and with `heads` a HEAD of every object (64 in flight): the
    least a file system must do to show s3fs's metadata in `ls -l`."""
    t0 = time.perf_counter()
    keys, _ = c.list_all(directory + "/")
    keys = [k for k in keys if k != directory + "/"]
    if len(keys) != count:
        raise WorkloadError(f"listed {len(keys)} keys under {directory}/, expected {count}")
    if heads:
        c.many((lambda k=k: c.head(k)) for k in keys)
    return time.perf_counter() - t0


def direct_find(c: CrtClient, directory: str, files: int) -> float:
    """One recursive listing of the tree (no delimiter)."""
    t0 = time.perf_counter()
    keys, _ = c.list_all(directory + "/", delimiter="")
    if len([k for k in keys if not k.endswith("/")]) < files:
        raise WorkloadError(f"listed {len(keys)} keys under {directory}/, expected {files}")
    return time.perf_counter() - t0


def direct_create(c: CrtClient, prefix: str, sizes: Sizes) -> dict[str, float]:
    """Small PUTs one after the other (a file system's creates arrive one at a time)."""
    body = os.urandom(sizes.create_bytes)
    t0 = time.perf_counter()
    for i in range(sizes.create_count):
        c.put(f"{CREATE_DIR}/{prefix}-{i:04d}.dat", body).result()
    return {"create_fps": sizes.create_count / (time.perf_counter() - t0)}

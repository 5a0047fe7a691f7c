"""What the benchmark measures: the bucket it fills, and each workload through a mount and direct.

Every workload returns a dict of figures (see bench_report.FIGURES for names and units).
Mounted workloads only touch the file system (plain os calls, `ls`, `find`) so that each
backend is measured the way an application would use it; the direct ones use boto3 on the
same server and are the ceiling the server allows.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MiB = 1 << 20
CHUNK = MiB  # the application's read/write size


@dataclass(frozen=True)
class Sizes:
    read_bytes: int
    write_bytes: int
    ls_count: int
    find_files: int
    find_dirs: int
    create_count: int
    create_bytes: int = 4096

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


DEFAULT_SIZES = Sizes(
    read_bytes=256 * MiB, write_bytes=128 * MiB, ls_count=5000, find_files=2000, find_dirs=40,
    create_count=300,
)  # fmt: skip
QUICK_SIZES = Sizes(
    read_bytes=32 * MiB, write_bytes=16 * MiB, ls_count=500, find_files=200, find_dirs=10,
    create_count=50,
)  # fmt: skip

# Keys in the bucket. Directories have s3fs-style markers (`dir/`), as if s3fs had made them.
READ_KEY = "big/read.bin"
LS_DIR = "ls"
TREE_DIR = "tree"
WRITE_DIR = "w"
CREATE_DIR = "c"


def _meta(mode: int, now: int) -> dict[str, str]:
    """The x-amz-meta-* headers s3fs writes on every object (boto3 adds the prefix)."""
    return {"mode": str(mode), "uid": "0", "gid": "0", "mtime": str(now)}


def _put_dir(client: Any, bucket: str, key: str, now: int) -> None:
    client.put_object(
        Bucket=bucket,
        Key=key.rstrip("/") + "/",
        Body=b"",
        ContentType="application/x-directory",
        Metadata=_meta(0o40755, now),
    )


def ls_keys(sizes: Sizes) -> list[str]:
    return [f"{LS_DIR}/file-{i:05d}.txt" for i in range(sizes.ls_count)]


def tree_keys(sizes: Sizes) -> list[str]:
    per_dir = sizes.find_files // sizes.find_dirs
    return [
        f"{TREE_DIR}/d{d:02d}/file-{i:04d}.txt"
        for d in range(sizes.find_dirs)
        for i in range(per_dir)
    ]


def fill_bucket(client: Any, bucket: str, sizes: Sizes, read_data: bytes) -> float:
    """Create the bucket and every object the workloads read; return the seconds it took.

    Small objects carry s3fs's metadata headers (mode/uid/gid/mtime), so neither backend
    can answer `stat` from a listing alone: the realistic case for a bucket s3fs wrote.
    """
    t0 = time.monotonic()
    now = int(time.time())
    client.create_bucket(Bucket=bucket)
    dirs = [LS_DIR, TREE_DIR, WRITE_DIR, CREATE_DIR, "big"]
    dirs += [f"{TREE_DIR}/d{d:02d}" for d in range(sizes.find_dirs)]
    small = ls_keys(sizes) + tree_keys(sizes)
    body = b"benchmark object\n" * 6  # ~100 bytes, like a small config or log file

    def put_small(key: str) -> None:
        meta = _meta(0o100644, now)
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="text/plain",
            Metadata=meta,
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: _put_dir(client, bucket, k, now), dirs))
        list(pool.map(put_small, small))
    _put_multipart(client, bucket, READ_KEY, read_data, Metadata=_meta(0o100644, now))
    return time.monotonic() - t0


def _put_multipart(
    client: Any, bucket: str, key: str, data: bytes, part: int = 16 * MiB, threads: int = 4, **extra
) -> None:
    view = memoryview(data)
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]

    def one(n: int) -> dict[str, Any]:
        body = view[n * part : (n + 1) * part]
        etag = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=n + 1, Body=bytes(body)
        )["ETag"]
        return {"PartNumber": n + 1, "ETag": etag}

    count = max(1, -(-len(data) // part))
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(one, range(count)))
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )


def delete_prefix(client: Any, bucket: str, prefix: str) -> int:
    """Delete every object under `prefix/` except the directory marker itself."""
    doomed = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    for page in pages:
        doomed += [{"Key": o["Key"]} for o in page.get("Contents", []) if o["Key"] != prefix + "/"]
    for i in range(0, len(doomed), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": doomed[i : i + 1000]})
    return len(doomed)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


class WorkloadError(RuntimeError):
    """The workload ran but its result was wrong (short read, missing entries...)."""


# --- through a mount ------------------------------------------------------------------------


def fs_read(mnt: Path, sizes: Sizes, expect: bytes) -> dict[str, float]:
    """Open the big object cold, time the first byte, then read it to the end in 1 MiB reads."""
    buf = bytearray(sizes.read_bytes)
    view = memoryview(buf)
    t0 = time.perf_counter()
    fd = os.open(mnt / READ_KEY, os.O_RDONLY)
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
    return {"read_mbps": mbps(off, t_end - t0), "ttfb_ms": (t_first - t0) * 1000}


def fs_write(mnt: Path, name: str, data: bytes) -> dict[str, float]:
    """Write a new file in 1 MiB writes; the clock stops when close() returns (upload done)."""
    view = memoryview(data)
    t0 = time.perf_counter()
    fd = os.open(mnt / WRITE_DIR / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, len(data), CHUNK):
            os.write(fd, view[off : off + CHUNK])
    finally:
        os.close(fd)
    return {"write_mbps": mbps(len(data), time.perf_counter() - t0)}


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


def fs_ls(mnt: Path, sizes: Sizes, timeout: float) -> dict[str, float]:
    """`ls -l` of the 5,000-object directory: first on the fresh mount, then again."""
    argv = ["ls", "-l", str(mnt / LS_DIR)]
    expect = sizes.ls_count + 1  # the "total" line
    cold = _run_listing(argv, expect, timeout)
    warm = _run_listing(argv, expect, timeout)
    return {"ls_cold_s": cold, "ls_warm_s": warm}


def fs_find(mnt: Path, sizes: Sizes, timeout: float) -> dict[str, float]:
    expect = len(tree_keys(sizes)) + sizes.find_dirs + 1
    return {"find_s": _run_listing(["find", str(mnt / TREE_DIR)], expect, timeout)}


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


def direct_read(client: Any, bucket: str, sizes: Sizes, expect: bytes) -> dict[str, float]:
    """One GET stream, then parallel ranged GETs; the better one is the ceiling."""
    buf = bytearray(sizes.read_bytes)
    view = memoryview(buf)
    t0 = time.perf_counter()
    body = client.get_object(Bucket=bucket, Key=READ_KEY)["Body"]
    off = 0
    while True:
        chunk = body.read(CHUNK)
        if not chunk:
            break
        view[off : off + len(chunk)] = chunk
        off += len(chunk)
    single = mbps(off, time.perf_counter() - t0)
    if buf != expect:
        raise WorkloadError("direct single GET returned other data")

    part = 16 * MiB
    buf2 = bytearray(sizes.read_bytes)
    view2 = memoryview(buf2)

    def one(start: int) -> None:
        end = min(start + part, len(buf2)) - 1
        data = client.get_object(Bucket=bucket, Key=READ_KEY, Range=f"bytes={start}-{end}")
        view2[start : end + 1] = data["Body"].read()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(0, len(buf2), part)))
    ranged = mbps(len(buf2), time.perf_counter() - t0)
    if buf2 != expect:
        raise WorkloadError("direct ranged GETs returned other data")
    # What one small ranged GET of this object costs on this server (moto materialises the
    # whole object for every GET, whatever the range): the price of each request a backend makes.
    costs = []
    for start in (0, len(buf) // 2, len(buf) - MiB):
        t0 = time.perf_counter()
        client.get_object(Bucket=bucket, Key=READ_KEY, Range=f"bytes={start}-{start + MiB - 1}")[
            "Body"
        ].read()
        costs.append((time.perf_counter() - t0) * 1000)
    return {
        "range_get_ms": sorted(costs)[1],
        "read_mbps": max(single, ranged),
        "read_single_mbps": single,
        "read_ranged_mbps": ranged,
        "ttfb_ms": _ttfb(client, bucket),
    }


def _ttfb(client: Any, bucket: str) -> float:
    """Milliseconds from GET to the first byte of the big object (HEAD first, as a file open)."""
    t0 = time.perf_counter()
    client.head_object(Bucket=bucket, Key=READ_KEY)
    body = client.get_object(Bucket=bucket, Key=READ_KEY)["Body"]
    body.read(1)
    seconds = time.perf_counter() - t0
    body.close()
    return seconds * 1000


def direct_write(client: Any, bucket: str, name: str, data: bytes) -> dict[str, float]:
    """One PUT, then a multipart upload (16 MiB parts, 4 in flight); the better is the ceiling."""
    key = f"{WRITE_DIR}/{name}"
    t0 = time.perf_counter()
    client.put_object(Bucket=bucket, Key=key + ".put", Body=data)
    single = mbps(len(data), time.perf_counter() - t0)
    t0 = time.perf_counter()
    _put_multipart(client, bucket, key + ".mpu", data)
    multi = mbps(len(data), time.perf_counter() - t0)
    return {"write_mbps": max(single, multi), "write_single_mbps": single, "write_mpu_mbps": multi}


def direct_list(client: Any, bucket: str, sizes: Sizes) -> dict[str, float]:
    """ListObjectsV2 pages of the 5,000-object directory, of the find tree, and a HEAD of each
    listed object (8 in flight): what a file system must do at least to show s3fs metadata."""
    paginator = client.get_paginator("list_objects_v2")
    t0 = time.perf_counter()
    keys = []
    for page in paginator.paginate(Bucket=bucket, Prefix=LS_DIR + "/", Delimiter="/"):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"] != LS_DIR + "/"]
    list_s = time.perf_counter() - t0
    if len(keys) != sizes.ls_count:
        raise WorkloadError(f"listed {len(keys)} keys, expected {sizes.ls_count}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.head_object(Bucket=bucket, Key=k), keys))
    head_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=TREE_DIR + "/"):
        n += len(page.get("Contents", []))
    tree_s = time.perf_counter() - t0
    return {"list_s": list_s, "list_head_s": list_s + head_s, "tree_list_s": tree_s}


def direct_create(client: Any, bucket: str, prefix: str, sizes: Sizes) -> dict[str, float]:
    """Small PUTs one after the other (a file system's creates arrive one at a time)."""
    body = os.urandom(sizes.create_bytes)
    t0 = time.perf_counter()
    for i in range(sizes.create_count):
        client.put_object(Bucket=bucket, Key=f"{CREATE_DIR}/{prefix}-{i:04d}.dat", Body=body)
    return {"create_fps": sizes.create_count / (time.perf_counter() - t0)}

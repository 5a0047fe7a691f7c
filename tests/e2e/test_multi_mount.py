"""Several mounts of one bucket: what one mount writes, the other sees once caches expire.

Pairs (A, B): python+python and python+s3fs in both directions, and s3fs+s3fs as the
reference. Both mounts run with `stat_cache_expire=1`; a change made through A must be
visible through B after that second plus the kernel's own 1 s attribute/entry timeout,
so tests wait SETTLE seconds and then assert, without polling. Before that, B has never
looked at the test's fresh directory, so its first look needs no wait.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Mount, Mounts, list_keys, make_bucket, object_bytes

pytestmark = pytest.mark.e2e

TTL_OPTIONS = ["stat_cache_expire=1"]
SETTLE = 3.0  # the 1 s stat cache + the kernel's 1 s entry/attr timeout + margin

PAIRS = [("s3fs", "s3fs"), ("python", "python"), ("python", "s3fs"), ("s3fs", "python")]


@dataclass
class Pair:
    bucket: str
    a: Mount
    b: Mount
    s3: Any


@pytest.fixture(scope="module", params=PAIRS, ids=lambda p: f"{p[0]}+{p[1]}")
def pair(request: pytest.FixtureRequest, module_mounts: Mounts, s3c: Any) -> Pair:
    first, second = request.param
    bucket = make_bucket(s3c)
    a = module_mounts.mount(first, bucket, name="A", options=TTL_OPTIONS)
    b = module_mounts.mount(second, bucket, name="B", options=TTL_OPTIONS)
    return Pair(bucket, a, b, s3c)


@pytest.fixture
def rel(pair: Pair) -> str:
    """A fresh directory, made through A; B has never looked at it."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    os.mkdir(pair.a.path / name)
    return name


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_write_on_a_then_read_on_b(pair: Pair, rel: str) -> None:
    a, b = pair.a.path / rel, pair.b.path / rel
    write(a / "same-size.txt", b"version 1")
    write(a / "grows.txt", b"short")
    write(a / "shrinks.txt", b"a rather longer first version")
    assert read(b / "same-size.txt") == b"version 1"  # B now has all three cached
    assert read(b / "grows.txt") == b"short"
    assert read(b / "shrinks.txt") == b"a rather longer first version"
    assert not (b / "late.txt").exists()  # and a negative lookup

    write(a / "same-size.txt", b"version 2")
    write(a / "grows.txt", b"now much longer than before")
    write(a / "shrinks.txt", b"tiny")
    write(a / "late.txt", b"created after B looked")
    time.sleep(SETTLE)
    assert read(b / "same-size.txt") == b"version 2"
    assert read(b / "grows.txt") == b"now much longer than before"
    assert os.stat(b / "shrinks.txt").st_size == 4
    assert read(b / "shrinks.txt") == b"tiny"
    assert read(b / "late.txt") == b"created after B looked"
    assert sorted(os.listdir(b)) == ["grows.txt", "late.txt", "same-size.txt", "shrinks.txt"]


def test_delete_on_a_disappears_on_b(pair: Pair, rel: str) -> None:
    a, b = pair.a.path / rel, pair.b.path / rel
    write(a / "doomed.txt", b"x")
    os.mkdir(a / "doomed-dir")
    assert read(b / "doomed.txt") == b"x"
    assert os.path.isdir(b / "doomed-dir")

    os.unlink(a / "doomed.txt")
    os.rmdir(a / "doomed-dir")
    time.sleep(SETTLE)
    assert not (b / "doomed.txt").exists()
    assert not (b / "doomed-dir").exists()
    assert os.listdir(b) == []
    with pytest.raises(OSError) as info:
        os.open(b / "doomed.txt", os.O_RDONLY)
    assert info.value.errno == errno.ENOENT


def test_concurrent_writers_on_both_mounts(pair: Pair, rel: str) -> None:
    """Threads on both mounts write different files; each is checked from the other side."""
    rnd = random.Random(5)
    jobs: list[tuple[str, str, bytes]] = []  # (writer side, name, data)
    for side in ("a", "b"):
        for i in range(12):
            size = rnd.choice([0, 1, 4096, 100_000, rnd.randrange(1, 3 << 20)])
            jobs.append((side, f"{side}-{i:02d}.bin", rnd.randbytes(size)))

    def run(job: tuple[str, str, bytes]) -> None:
        side, name, data = job
        root = pair.a.path if side == "a" else pair.b.path
        with open(root / rel / name, "wb") as f:
            for off in range(0, len(data), 64 * 1024):  # many writes, interleaving threads
                f.write(data[off : off + 64 * 1024])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, jobs))

    for side, name, data in jobs:
        other = pair.b.path if side == "a" else pair.a.path
        digest = hashlib.sha256(read(other / rel / name)).hexdigest()
        assert digest == hashlib.sha256(data).hexdigest(), f"{name} read back from the other mount"
        assert object_bytes(pair.s3, pair.bucket, f"{rel}/{name}") == data
    expected = sorted(name for _, name, _ in jobs)
    assert sorted(os.listdir(pair.a.path / rel)) == expected
    assert sorted(os.listdir(pair.b.path / rel)) == expected
    assert list_keys(pair.s3, pair.bucket, rel + "/") == [f"{rel}/"] + [
        f"{rel}/{n}" for n in expected
    ]


def test_change_made_through_the_s3_api_is_seen(pair: Pair, rel: str) -> None:
    """s3fs's test_external_modification / test_external_creation, on mount B."""
    b = pair.b.path / rel
    write(pair.a.path / rel / "ext.txt", b"from the mount")
    assert read(b / "ext.txt") == b"from the mount"
    pair.s3.put_object(Bucket=pair.bucket, Key=f"{rel}/ext.txt", Body=b"rewritten by the API")
    pair.s3.put_object(Bucket=pair.bucket, Key=f"{rel}/api-only.txt", Body=b"new")
    time.sleep(SETTLE)
    assert read(b / "ext.txt") == b"rewritten by the API"
    assert read(b / "api-only.txt") == b"new"

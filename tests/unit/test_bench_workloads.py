"""The benchmark's data set and workload arithmetic (bench/bench_workloads.py): no server."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_workloads as wl

MiB = wl.MiB


def test_random_offsets_are_scattered_aligned_distinct_and_the_same_every_sample() -> None:
    sizes = wl.DEFAULT_SIZES
    offsets = wl.random_offsets(sizes)
    assert offsets == wl.random_offsets(sizes)  # every sample reads the same places
    assert len(offsets) == len(set(offsets)) == 64
    assert all(o % MiB == 0 and 0 <= o <= sizes.big_read_bytes - MiB for o in offsets)
    assert offsets != sorted(offsets)  # not a sequential scan in disguise
    span = max(offsets) - min(offsets)
    assert span > sizes.big_read_bytes // 2


def test_the_data_sets_have_the_sizes_the_issue_names() -> None:
    s = wl.DEFAULT_SIZES
    assert (s.read_bytes, s.big_read_bytes, s.write_bytes) == (64 * MiB, 256 * MiB, 32 * MiB)
    assert len(wl.ls_keys(wl.LS_DIR, s.ls_count)) == 1000
    assert len(wl.ls_keys(wl.BIG_LS_DIR, s.big_ls_count)) == 20_000
    big_tree = wl.tree_keys(wl.BIG_TREE_DIR, s.big_find_files, s.big_find_dirs)
    assert len(big_tree) == 20_000
    assert len({k.rsplit("/", 1)[0] for k in big_tree}) == 200
    assert len(wl.tree_keys(wl.TREE_DIR, s.find_files, s.find_dirs)) == 480
    assert s.create_count == 100 and s.create_bytes == 4096


def test_big_sets_have_buckets_of_their_own() -> None:
    assert wl.WORKLOAD_SET == {"ls_big": "lsbig", "ls_l_big": "lsbig", "find_big": "treebig"}
    assert set(wl.WORKLOAD_SET.values()) < set(wl.BUCKET_SETS)


def test_direct_parts_split_into_at_least_eight_and_respect_minimums() -> None:
    assert wl.direct_part(256 * MiB, MiB) == 8 * MiB
    assert wl.direct_part(32 * MiB, 5 * MiB) == 5 * MiB  # S3's smallest part
    assert wl.direct_part(16 * MiB, MiB) == 2 * MiB

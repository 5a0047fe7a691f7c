"""The benchmark's memory figure (bench/bench_mount.held_memory): no server, no mount."""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_mount import held_memory

MiB = 1024 * 1024


def test_an_unmapped_memfd_counts_and_a_mapped_one_counts_once():
    data = os.urandom(16 * MiB)  # before measuring: where glibc keeps it, it stays
    before = held_memory(os.getpid())
    fd = os.memfd_create("bench-test", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)  # its pages are not in this process's RSS
        unmapped = held_memory(os.getpid())
        assert 15 * MiB <= unmapped - before <= 24 * MiB
        with mmap.mmap(fd, 16 * MiB) as view:
            assert sum(view[i] for i in range(0, 16 * MiB, 4096)) >= 0  # touch every page
            mapped = held_memory(os.getpid())
        assert abs(mapped - unmapped) <= 8 * MiB  # not 16 MiB more: counted once
    finally:
        os.close(fd)
    assert held_memory(os.getpid()) - before <= 8 * MiB

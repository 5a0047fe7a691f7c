"""The kernel's read-ahead for this mount.

A FUSE mount's read-ahead is capped at the kernel's default (128 KiB) whatever the file
system asks for at init, so a sequential reader's data arrives in 128 KiB requests: 8
round trips through the kernel, libfuse and Python per MiB. Raised to our max_read
(1 MiB, or twice the 1 MiB less 4 pages that reads are where pipes hold 1 MiB:
fusebuf.read_ahead), a 256 MiB read costs 256 requests instead
of 2,048 and ~45 % less of the backend's CPU. The setting lives in sysfs
(`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`), belongs to this mount only and disappears
with it; it needs root and a writable /sys, and is skipped quietly otherwise.
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger("run_s3fs.fs")

READ_AHEAD_KIB = 1024
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes space, tab, newline, \ as \ooo


def _device(mountpoint: str) -> str | None:
    """MAJOR:MINOR of the file system mounted at `mountpoint`, from /proc/self/mountinfo.
    Nothing here may touch the mountpoint itself (a stat, a realpath through it): that
    would ask this very mount, which does not answer until init returns."""
    absolute = os.path.abspath(mountpoint)
    parent, name = os.path.split(absolute)
    target = os.path.join(os.path.realpath(parent), name) if name else absolute
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 5:
                    continue
                point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
                if point == target:
                    found = fields[2]  # the last one: mounts stack
    except OSError:
        return None
    return found


def raise_readahead(mountpoint: str, kib: int = READ_AHEAD_KIB) -> None:
    device = _device(mountpoint)
    if device is None:
        return
    path = f"/sys/class/bdi/{device}/read_ahead_kb"
    try:
        with open(path, "r+") as f:
            current = int(f.read().strip() or 0)
            if current < kib:
                f.seek(0)
                f.write(str(kib))
        log.debug("read-ahead of %s: %d KiB", mountpoint, max(current, kib))
    except (OSError, ValueError) as e:
        log.debug("read-ahead of %s left as it is: %s", mountpoint, e)

"""Where data being written lives until S3 has it: one private spool directory per
mount, nameless (O_TMPFILE) spool files in it, and `unsaved/` beside it for data whose
upload failed, which must outlive even a kill -9 of the daemon."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from typing import BinaryIO


def make_spool_dir(base: str | None) -> str:
    """A private (0700) per-mount directory under `base` (default $TMPDIR)/run-s3fs-<uid>/."""
    root = os.path.join(base or tempfile.gettempdir(), f"run-s3fs-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise OSError(
            errno.EPERM, f"spool directory {root} must be a directory owned by us, mode 0700"
        )
    _sweep_dead_spools(root)
    return tempfile.mkdtemp(prefix=f"mount-{os.getpid()}-", dir=root)


def _sweep_dead_spools(root: str) -> None:
    """Remove the (empty: spools have no names) directories of mounts whose process is
    gone, so that killed mounts do not pile them up."""
    for entry in os.listdir(root):
        parts = entry.split("-")
        if len(parts) < 3 or parts[0] != "mount" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # alive (or not ours to signal): leave it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(root, entry))  # only if empty


def unsaved_dir(spool_dir: str) -> str:
    """Where data that could not be uploaded is kept: unsaved/ beside the spool directory."""
    return os.path.join(os.path.dirname(spool_dir), "unsaved")


def unsaved_files(spool_dir: str) -> list[str]:
    """What earlier runs could not upload."""
    target_dir = unsaved_dir(spool_dir)
    try:
        return sorted(os.path.join(target_dir, n) for n in os.listdir(target_dir))
    except FileNotFoundError:
        return []


def new_spool(spool_dir: str) -> BinaryIO:
    """A private spool file. Nameless (O_TMPFILE), so nothing is left behind if the
    process dies; without O_EXCL (which TemporaryFile sets), so that a failed upload's
    data can be given a name later (keep)."""
    try:
        fd = os.open(spool_dir, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError:  # a filesystem without O_TMPFILE: unlinked at once instead
        return tempfile.TemporaryFile(dir=spool_dir)
    return os.fdopen(fd, "w+b")


def spool_path(spool: BinaryIO) -> str:
    """A path that opens the (unlinked) spool file, for the uploader's own reads."""
    return f"/proc/self/fd/{spool.fileno()}"


def unsaved_name(spool_dir: str, key: str) -> str:
    """A new path in unsaved/ for the content of `key` (named by time and key)."""
    target_dir = unsaved_dir(spool_dir)
    os.makedirs(target_dir, mode=0o700, exist_ok=True)
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{key.replace('/', '%2F')}"[:250]
    return os.path.join(target_dir, name)


def link(spool: BinaryIO, target: str) -> None:
    """Give the nameless spool the name `target` (a hard link: the same inode, so later
    writes show there too). linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an
    O_TMPFILE file; a dir fd makes os.link use linkat (plain link(2) would not follow)."""
    dir_fd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(
            spool_path(spool), os.path.basename(target), dst_dir_fd=dir_fd, follow_symlinks=True
        )
    finally:
        os.close(dir_fd)

"""The mount point: what is there now, cleaning a dead mount, creating the directory.

The mount table is read from /proc/self/mounts and compared exactly, path for path, after
decoding the kernel's octal escapes (a space is written `\\040`): a substring match would
take /mnt/store2 for /mnt/store.

A FUSE daemon that died leaves its mount behind: any request to it fails with ENOTCONN
("Transport endpoint is not connected"). That is a *stale* mount, which must be lazily
unmounted before anything can mount there again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from run_s3fs.errors import CantCreateError

log = logging.getLogger("run-s3fs")

MOUNTS_FILE = Path("/proc/self/mounts")
# The source name of the read-only tmpfs the launcher may put under a mount as its guard
# (see guard.py): part of the directory, not a mount in the way.
GUARD_SOURCE = "run-s3fs-guard"
# Directories the launcher creates for a mount point: traversable by the users of the mount,
# writable by nobody else, whatever the umask.
DIR_MODE = 0o755
_DEAD = (errno.ENOTCONN, errno.ESTALE, errno.ECONNABORTED)


@dataclass(frozen=True)
class MountEntry:
    source: str
    target: str
    fstype: str
    options: str


@dataclass(frozen=True)
class MountpointState:
    path: Path
    kind: str  # "missing" | "empty" | "nonempty" | "not_directory" | "stale" | "live"
    fstype: str | None = None
    server_pid: int | None = None
    server_name: str | None = None

    def describe(self) -> str:
        """One human phrase for logs and --dry-run."""
        if self.kind == "live":
            by = (
                f" by pid {self.server_pid} ({self.server_name})"
                if self.server_pid is not None
                else " (serving process not found)"
            )
            return f"{self.path} is mounted ({self.fstype}){by}"
        if self.kind == "stale":
            return f"{self.path} holds a dead mount ({self.fstype}, its daemon is gone)"
        return {
            "missing": f"{self.path} does not exist",
            "empty": f"{self.path} is an empty directory",
            "nonempty": f"{self.path} is a directory with files in it",
            "not_directory": f"{self.path} exists and is not a directory",
        }[self.kind]


def unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in mount paths as \\ooo."""
    if "\\" not in field:
        return field
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), os.fsencode(field))
    return os.fsdecode(raw)


def mount_table(mounts_file: Path = MOUNTS_FILE) -> list[MountEntry]:
    entries = []
    with open(mounts_file, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) < 4:
                continue
            entries.append(
                MountEntry(unescape(fields[0]), unescape(fields[1]), fields[2], fields[3])
            )
    return entries


def find_mount(path: Path) -> MountEntry | None:
    """The topmost mount exactly at `path` (or at what it resolves to), if any.

    The launcher's own guard tmpfs does not count: it belongs to the directory."""
    targets = {str(path)}
    with contextlib.suppress(OSError):
        targets.add(os.path.realpath(path))
    found = None
    for entry in mount_table():
        if entry.target in targets and entry.source != GUARD_SOURCE:
            found = entry  # later lines are mounted on top of earlier ones
    return found


def _holds_dev_fuse(pid: int) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"{fd_dir}/{name}") == "/dev/fuse":
                return True
        except OSError:
            continue
    return False


def find_server(path: Path) -> tuple[int, str] | None:
    """The process serving the FUSE mount at `path`: it names the path on its command line
    and holds /dev/fuse open. (psutil is imported only here: a plain launch never needs it.)"""
    import psutil

    wanted = {str(path), os.path.realpath(path)}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd"]):
        info = proc.info
        cmdline = info.get("cmdline") or []
        cwd = info.get("cwd") or "/"
        named = any(
            arg in wanted or os.path.normpath(os.path.join(cwd, arg)) in wanted
            for arg in cmdline[1:]
            if arg and not arg.startswith("-")
        )
        if named and _holds_dev_fuse(info["pid"]):
            name = info.get("name") or "?"
            if "run_s3fs.fs" in cmdline:
                name = f"{name} -m run_s3fs.fs"  # the bundled backend, not just "python3"
            return info["pid"], name
    return None


def inspect(path: Path) -> MountpointState:
    """What is at `path` now. Raises CantCreateError only if it cannot even be looked at."""
    entry = find_mount(path)
    fstype = entry.fstype if entry else None
    try:
        os.stat(path)
    except FileNotFoundError:
        return MountpointState(path, "missing")
    except NotADirectoryError:
        return MountpointState(path, "not_directory")
    except OSError as exc:
        if exc.errno in _DEAD:
            return MountpointState(path, "stale", fstype or "unknown")
        if entry is not None and exc.errno == errno.EACCES:
            # Another user's FUSE mount without allow_other: alive, just not for us.
            return _live(path, fstype)
        raise CantCreateError(f"cannot look at S3FS_MOUNTPOINT {path}: {exc.strerror}") from None
    if entry is not None:
        # stat() of a mount root can be answered from the kernel's attribute cache for a
        # second after the daemon died; statfs() always asks the daemon.
        try:
            os.statvfs(path)
        except OSError as exc:
            if exc.errno in _DEAD:
                return MountpointState(path, "stale", fstype)
        return _live(path, fstype)
    if not os.path.isdir(path):
        return MountpointState(path, "not_directory")
    try:
        with os.scandir(path) as it:
            empty = next(it, None) is None
    except OSError as exc:
        raise CantCreateError(f"cannot list S3FS_MOUNTPOINT {path}: {exc.strerror}") from None
    return MountpointState(path, "empty" if empty else "nonempty")


def _live(path: Path, fstype: str | None) -> MountpointState:
    server = find_server(path)
    if server is None:
        return MountpointState(path, "live", fstype)
    return MountpointState(path, "live", fstype, server[0], server[1])


def lazy_unmount(path: Path) -> None:
    """Detach a (dead) mount: fusermount3 -uz, fusermount -uz, then umount -l."""
    import subprocess

    log.info("unmounting the dead mount at %s (lazy unmount)", path)
    tried = []
    for argv in (
        ["fusermount3", "-uz", str(path)],
        ["fusermount", "-uz", str(path)],
        ["umount", "-l", str(path)],
    ):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tried.append(f"{argv[0]}: {exc}")
            continue
        if done.returncode == 0 and find_mount(path) is None:
            log.info("unmounted %s with %s", path, argv[0])
            return
        tried.append(f"{argv[0]}: {(done.stderr or '').strip() or f'exit {done.returncode}'}")
    if find_mount(path) is None:
        return
    raise CantCreateError(
        f"cannot unmount the dead mount at {path} ({'; '.join(tried)}): "
        f"unmount it by hand (fusermount -uz {path}) or run as root"
    )


def prepare(path: Path) -> None:
    """Create the mount point (with parents) if it is missing, each new directory 0755."""
    if path.exists() and not path.is_dir():
        raise CantCreateError(
            f"S3FS_MOUNTPOINT {path} exists and is not a directory:"
            " remove it or choose another path"
        )
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):  # made meanwhile by someone else
                directory.mkdir(mode=DIR_MODE)
                os.chmod(directory, DIR_MODE)  # mkdir's mode is narrowed by the umask
    except OSError as exc:
        raise CantCreateError(f"cannot create S3FS_MOUNTPOINT {path}: {exc.strerror}") from None

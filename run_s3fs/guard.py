"""The guarded mount point: while nothing is mounted there, writes into it fail.

Without a guard, an application that writes into the mount point while the mount is down
(before the first start, between a crash and the restart, after a stop) writes to the
local disk underneath: files that the next mount hides and the next deploy throws away.
With S3FS_GUARD=on (the default) the launcher guards the directory itself, with the
strongest of these that this machine allows:

  immutable  the directory's immutable flag (chattr +i, FS_IMMUTABLE_FL): nobody, not even
             root, can create anything in it. A FUSE mount on top still works. Needs root
             (CAP_LINUX_IMMUTABLE) and a filesystem with the flag (ext4, xfs, btrfs, tmpfs).
  tmpfs      a read-only, empty tmpfs mounted on the directory, under the FUSE mount:
             writes fail with EROFS. Needs CAP_SYS_ADMIN (e.g. root in a container without
             CAP_LINUX_IMMUTABLE). Gone after a reboot until the next launch.
  mode       the directory is mode 0555 while unmounted (the owner and other users get
             EACCES; root is not stopped). fusermount wants a writable mount point, so the
             mode is lifted for the mount and put back, underneath it, once it is up.

A guard is never a reason to fail a launch: if none can be set, the launch goes on with a
warning. The guard stays after a clean stop and after a crash: that is the point. The
launcher records what it set (an extended attribute on the directory, and the tmpfs's
source name), so S3FS_GUARD=off can take it away again. By hand: `chattr -i DIR`,
`umount DIR` (tmpfs), or `chmod 755 DIR` (mode).
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from run_s3fs import mounts
from run_s3fs.mounts import GUARD_SOURCE

log = logging.getLogger("run-s3fs")

KINDS = ("immutable", "tmpfs", "mode")  # strongest first; S3FS_GUARD takes these, on and off
MARKER = "user.run-s3fs.guard"  # xattr on the directory: what we set ("immutable", "mode 0755")
GUARDED_MODE = 0o555
DEFAULT_MODE = 0o755
REARM_TIMEOUT = 120.0  # how long the mode guard's helper waits for the mount to come up

# <linux/fs.h>: _IOR('f', 1, long) and _IOW('f', 2, long); the kernel reads an int.
_LONG = struct.calcsize("l")
FS_IOC_GETFLAGS = (2 << 30) | (_LONG << 16) | (ord("f") << 8) | 1
FS_IOC_SETFLAGS = (1 << 30) | (_LONG << 16) | (ord("f") << 8) | 2
FS_IMMUTABLE_FL = 0x00000010

CAP_LINUX_IMMUTABLE = 9
CAP_SYS_ADMIN = 21

DESCRIPTION = {
    "immutable": "immutable flag (chattr +i): nobody, not even root, can create files in it",
    "tmpfs": "a read-only empty tmpfs underneath: writes fail with 'Read-only file system'",
    "mode": "mode 0555: the owner and other users cannot write in it (root still can)",
}
HOW_TO_REMOVE = {
    "immutable": "chattr -i {path}",
    "tmpfs": "umount {path}",
    "mode": "chmod 755 {path}",
}


@dataclass(frozen=True)
class Facts:
    """What this process may do, as far as guards go."""

    euid: int
    can_immutable: bool  # CAP_LINUX_IMMUTABLE in the effective set
    can_mount: bool  # CAP_SYS_ADMIN in the effective set


def facts() -> Facts:
    return Facts(os.geteuid(), _has_cap(CAP_LINUX_IMMUTABLE), _has_cap(CAP_SYS_ADMIN))


def _has_cap(cap: int) -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def candidates(requested: str, known: Facts) -> tuple[str, ...]:
    """The guards to try, strongest first, for S3FS_GUARD=`requested` (pure)."""
    if requested == "off":
        return ()
    wanted = KINDS if requested == "on" else (requested,)
    possible = {
        "immutable": known.can_immutable,
        "tmpfs": known.can_mount,
        "mode": True,  # the owner (or root) can always try a chmod
    }
    return tuple(kind for kind in wanted if possible[kind])


def plan_step(requested: str, kinds: tuple[str, ...], path: Path) -> str:
    """The --dry-run line for the guard."""
    if requested == "off":
        return f"S3FS_GUARD=off: remove a guard run-s3fs set on {path}, if any"
    if not kinds:
        return f"cannot guard {path} here (S3FS_GUARD={requested}): warn and mount unguarded"
    return f"guard {path} while unmounted: " + ", else ".join(kinds)


# --- looking ----------------------------------------------------------------------------------


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _get_flags(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
    return buf[0]


def _set_flags(fd: int, flags: int) -> None:
    fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("i", [flags]), True)


def _marker(path: Path) -> str | None:
    try:
        return os.getxattr(path, MARKER).decode()
    except OSError:
        return None


def is_immutable(path: Path) -> bool:
    try:
        fd = _open_dir(path)
    except OSError:
        return False
    try:
        return bool(_get_flags(fd) & FS_IMMUTABLE_FL)
    except OSError:
        return False
    finally:
        os.close(fd)


def flags_supported(path: Path) -> bool:
    """Whether the directory's filesystem has inode flags at all (True if unsure)."""
    try:
        fd = _open_dir(path)
    except OSError:
        return True
    try:
        _get_flags(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def has_guard_mount(path: Path) -> bool:
    targets = {str(path), os.path.realpath(path)}
    return any(e.source == GUARD_SOURCE and e.target in targets for e in mounts.mount_table())


def current(path: Path) -> str | None:
    """The guard on `path` now (look only while nothing else is mounted there)."""
    if has_guard_mount(path):
        return "tmpfs"
    if is_immutable(path):
        return "immutable"
    marker = _marker(path) or ""
    with contextlib.suppress(OSError):
        if marker.startswith("mode ") and stat.S_IMODE(os.stat(path).st_mode) == GUARDED_MODE:
            return "mode"
    return None


# --- setting and removing ---------------------------------------------------------------------


def apply(path: Path, kinds: tuple[str, ...], requested: str) -> str | None:
    """Guard the (unmounted) directory with the first of `kinds` that works; warn if none.

    A guard already in place that is one of `kinds` is kept. Returns the kind in force.
    """
    present = current(path)
    if present in kinds:
        log.info("mount point %s stays guarded: %s", path, DESCRIPTION[present])
        return present
    if present is not None:
        remove(path)  # e.g. a mode guard from before the launcher had CAP_LINUX_IMMUTABLE
    reasons = []
    for kind in kinds:
        try:
            _SETTERS[kind](path)
        except OSError as exc:
            reasons.append(f"{kind}: {exc.strerror or exc}")
            continue
        log.info(
            "guarded the mount point %s: %s (to remove: %s)",
            path,
            DESCRIPTION[kind],
            HOW_TO_REMOVE[kind].format(path=path),
        )
        return kind
    why = "; ".join(reasons) if reasons else "no guard is possible for this user"
    log.warning(
        "could not guard the mount point %s (S3FS_GUARD=%s; %s): while it is unmounted, "
        "files written into it land on the local disk",
        path,
        requested,
        why,
    )
    return None


def _set_immutable(path: Path) -> None:
    fd = _open_dir(path)
    try:
        flags = _get_flags(fd)
        with contextlib.suppress(OSError):  # no user xattrs here: the flag alone tells
            os.setxattr(path, MARKER, b"immutable")
        _set_flags(fd, flags | FS_IMMUTABLE_FL)
    except OSError:
        with contextlib.suppress(OSError):
            os.removexattr(path, MARKER)
        raise
    finally:
        os.close(fd)


def _set_tmpfs(path: Path) -> None:
    with os.scandir(path) as it:
        if next(it, None) is not None:
            # It would hide the files a `nonempty` mount point has on purpose.
            raise OSError(errno.ENOTEMPTY, "the directory is not empty")
    import subprocess

    done = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"ro,nosuid,nodev,noexec,size=4k,mode={GUARDED_MODE:o}",
            GUARD_SOURCE,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0 or not has_guard_mount(path):
        raise OSError(errno.EPERM, (done.stderr or "").strip() or f"mount exit {done.returncode}")


def _set_mode(path: Path) -> None:
    original = stat.S_IMODE(os.stat(path).st_mode)
    if original == GUARDED_MODE and (_marker(path) or "").startswith("mode "):
        return
    with contextlib.suppress(OSError):
        os.setxattr(path, MARKER, f"mode {original:04o}".encode())
    os.chmod(path, GUARDED_MODE)


_SETTERS = {"immutable": _set_immutable, "tmpfs": _set_tmpfs, "mode": _set_mode}


def remove(path: Path) -> str | None:
    """Take away a guard run-s3fs set (S3FS_GUARD=off); return the kind removed."""
    import subprocess

    kind = current(path)
    if kind is None:
        return None
    if kind == "immutable" and _marker(path) not in (None, "immutable"):
        return None
    try:
        if kind == "tmpfs":
            subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=True)
        elif kind == "immutable":
            fd = _open_dir(path)
            try:
                _set_flags(fd, _get_flags(fd) & ~FS_IMMUTABLE_FL)
            finally:
                os.close(fd)
        else:
            os.chmod(path, original_mode(path))
        with contextlib.suppress(OSError):
            os.removexattr(path, MARKER)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning(
            "S3FS_GUARD=off but the %s guard on %s cannot be removed (%s): remove it by hand: %s",
            kind,
            path,
            exc,
            HOW_TO_REMOVE[kind].format(path=path),
        )
        return None
    log.info("removed the %s guard from %s (S3FS_GUARD=off)", kind, path)
    return kind


def original_mode(path: Path) -> int:
    marker = _marker(path) or ""
    if marker.startswith("mode "):
        with contextlib.suppress(ValueError):
            return int(marker[5:], 8) & 0o7777
    return DEFAULT_MODE


# --- the mode guard around the mount ----------------------------------------------------------


def lift_for_mount(path: Path, server_pid: int, env: dict[str, str]) -> None:
    """Make the directory writable for fusermount and leave a helper to put 0555 back.

    The helper holds a descriptor of the directory itself, so once the FUSE mount covers
    the path it can still change the mode underneath. It is double-forked (supervisord and
    the backend never see it as a child) and exec'd afresh with the scrubbed environment,
    so no copy of the launcher's environment, which may hold keys, stays around.
    """
    fd = _open_dir(path)
    try:
        os.fchmod(fd, original_mode(path))
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the forked child
            code = 1
            try:
                os.setsid()
                if os.fork() == 0:
                    os.set_inheritable(fd, True)
                    argv = [sys.executable, "-m", "run_s3fs.guard", str(fd), str(server_pid)]
                    os.execve(sys.executable, [*argv, str(path)], env)
                code = 0
            finally:
                os._exit(code)
        os.waitpid(child, 0)
    finally:
        os.close(fd)


def rearm(fd: int, server_pid: int, path: Path, timeout: float = REARM_TIMEOUT) -> None:
    """Wait until the mount is up (or its server is gone), then put mode 0555 back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mounts.find_mount(path) is not None or not _alive(server_pid):
            break
        time.sleep(0.05)
    os.fchmod(fd, GUARDED_MODE)
    log.info("mount point %s guarded underneath the mount: mode 0555", path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    """`python -m run_s3fs.guard FD SERVER_PID PATH`: the mode guard's helper."""
    from run_s3fs import log as log_setup

    log_setup.setup(os.environ.get("S3FS_LOGLEVEL", "info").lower())
    fd, pid, path = int(argv[0]), int(argv[1]), Path(argv[2])
    try:
        rearm(fd, pid, path)
    except OSError as exc:
        log.warning("could not put the mode guard back on %s: %s", path, exc.strerror)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

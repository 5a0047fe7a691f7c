"""The s3fs passwd file: `ACCESS:SECRET\\n`, mode 0600, written atomically.

The keys reach the backend only through this file: never its command line (world-readable
in /proc/PID/cmdline) nor its environment. The file is created 0600 from its first moment
(os.open with an explicit mode and O_EXCL, whatever the umask), filled, fsync'ed, and
renamed over the old one, so a reader sees either the old file or the whole new one.

Default location (when S3FS_PASSWD_FILE is unset), a directory only its owner can enter:
  root:       /run/run-s3fs/            (tmpfs: the keys never reach the disk)
  other uids: $XDG_RUNTIME_DIR/run-s3fs/ if that is set, else ~/.run-s3fs/
The file is named after the bucket and mountpoint, so two launchers for two mounts never
overwrite each other's keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from run_s3fs.config import Config, Secret
from run_s3fs.errors import CantCreateError


def content(config: Config) -> Secret:
    """The file's text. s3fs reads `ACCESS:SECRET`; one line, no whitespace."""
    assert config.access_key is not None and config.secret_key is not None
    return Secret(f"{config.access_key.reveal()}:{config.secret_key.reveal()}\n")


def redacted_content(config: Config) -> str:
    assert config.access_key is not None and config.secret_key is not None
    return f"{config.access_key.redacted()}:{config.secret_key.redacted()}"


def default_dir(environ: Mapping[str, str], euid: int) -> Path:
    if euid == 0:
        return Path("/run/run-s3fs")
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/") and "," not in runtime:
        return Path(runtime) / "run-s3fs"
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".run-s3fs"


def default_path(config: Config, environ: Mapping[str, str], euid: int) -> Path:
    """Where the passwd file goes when S3FS_PASSWD_FILE is unset (pure: no I/O)."""
    tag = hashlib.sha256(str(config.mountpoint).encode()).hexdigest()[:10]
    return default_dir(environ, euid) / f"{config.bucket}.{tag}.passwd"


def _refuse(path: Path, why: str) -> CantCreateError:
    return CantCreateError(f"cannot write the passwd file {path}: {why}")


def _check_dir(directory: Path, private: bool) -> None:
    """The directory must be ours (or root's) and not writable by others.

    Someone who can write the directory could swap the file for a symlink to theirs
    between our check and s3fs's read. Our own default directory is made 0700 (and put
    back to 0700 if it drifted).
    """
    try:
        # A missing directory is created private, whoever chose it, and so are its missing
        # parents (mkdir(parents=True) would make those 0777 & ~umask: 0777 under umask 0).
        for missing in reversed([d for d in (directory, *directory.parents) if not d.exists()]):
            with contextlib.suppress(FileExistsError):
                missing.mkdir(mode=0o700)
                os.chmod(missing, 0o700)
        st = os.lstat(directory)
    except OSError as exc:
        raise _refuse(directory, f"its directory cannot be created: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(directory, f"{directory} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise _refuse(directory, f"{directory} belongs to uid {st.st_uid}, not to this user")
    if private:
        if st.st_uid != os.geteuid():
            raise _refuse(directory, f"{directory} belongs to uid {st.st_uid}, not to this user")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(directory, 0o700)
    elif st.st_mode & stat.S_IWOTH:
        raise _refuse(
            directory,
            f"its directory {directory} is writable by other users: "
            "set S3FS_PASSWD_FILE to a path in a private directory",
        )


def _unchanged(path: Path, text: bytes) -> bool:
    """True if `path` already is a 0600 regular file of ours holding exactly `text`.

    Refuses a symlink or anything that is not a regular file: s3fs would follow it, and
    writing over it is not ours to decide.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _refuse(path, exc.strerror or "cannot inspect it") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "it is a symbolic link; remove it or set S3FS_PASSWD_FILE elsewhere")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "it exists and is not a regular file")
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o600:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        return f.read(len(text) + 1) == text


def write(path: Path, secret: Secret, private_dir: bool = False) -> bool:
    """Write the passwd file atomically with mode 0600; return False if it was already right.

    `private_dir`: the directory is the launcher's own default one (create it 0700).
    """
    data = secret.reveal().encode()
    _check_dir(path.parent, private_dir)
    if _unchanged(path, data):
        return False
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        # Left by a launcher that died at this very step with our pid: it is ours to remove.
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise _refuse(path, exc.strerror or "cannot create it") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # the umask cannot widen it, but a narrower one could
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _refuse(path, exc.strerror or "cannot write it") from None
    return True

"""Where the credentials come from, as a *source* the engine asks at every signing.

By s3fs's rules: `-o iam_role[=NAME]` (the EC2 instance profile), `-o ecs` (container
credentials), `-o profile=NAME` (the AWS shared files), and run-s3fs's own
`-o credentials=aws` (the whole AWS chain: what S3FS_CREDENTIALS=aws hands over) are
temporary credentials, refreshed ahead of expiry (run_s3fs.awscreds). Otherwise fixed
keys: `-o passwd_file`, the AWS environment variables, then ~/.passwd-s3fs and
/etc/passwd-s3fs. Never the command line.

A source has describe() (one line, no secret), get(), invalidate(creds) (S3 refused
them: True if there are others to try) and close().

Error texts follow s3fs's so that a message found in s3fs's FAQ also fits here; none of
them holds a key.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from typing import Protocol

from run_s3fs.awscreds import Credentials, classify, open_source
from run_s3fs.errors import ConfigError

__all__ = ["Credentials", "Source", "StaticSource", "load", "open_for"]


class Source(Protocol):
    def describe(self) -> str: ...

    def get(self) -> Credentials: ...

    def invalidate(self, creds: object) -> bool: ...

    def close(self) -> None: ...


class StaticSource:
    """Fixed keys: nothing to refresh."""

    def __init__(self, creds: Credentials) -> None:
        self._creds = creds
        self.fixed = creds  # the engine signs with these as they are

    def describe(self) -> str:
        token = " with a session token" if self._creds.session_token else ""
        return f"keys from {self._creds.source}{token}"

    def get(self) -> Credentials:
        return self._creds

    def invalidate(self, creds: object) -> bool:
        return False

    def close(self) -> None:
        pass


def _open_private(path: str) -> int:
    """Open the passwd file for reading, refusing a symlink or anything but a regular file.

    The mode checked is the opened file's own (fstat), so the file cannot be swapped between
    the check and the read; O_NONBLOCK keeps a FIFO from hanging the open.
    """
    if stat.S_ISLNK(os.lstat(path).st_mode):
        raise ConfigError(f"credentials file {path} is a symbolic link; give the file itself.")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:  # became a link since the lstat
            raise ConfigError(
                f"credentials file {path} is a symbolic link; give the file itself."
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"credentials file {path} is not a regular file.")
        _check_permissions(path, st)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_permissions(path: str, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IRWXO:
        raise ConfigError(f"credentials file {path} should not have others permissions.")
    # s3fs lets the system-wide file be group-readable (0640), nothing else.
    if mode & stat.S_IRWXG and not (path == "/etc/passwd-s3fs" and mode & stat.S_IRWXG == 0o040):
        raise ConfigError(f"credentials file {path} should not have group permissions.")
    if mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise ConfigError(f"credentials file {path} should not have executable permissions.")


def read_passwd_file(path: str, bucket: str) -> Credentials:
    """`ACCESS:SECRET` (any bucket) or `BUCKET:ACCESS:SECRET` lines; `#` comments."""
    try:
        with open(_open_private(path), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"could not open passwd file {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"could not open passwd file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"passwd file {path} is not text (UTF-8)") from None
    default: tuple[str, str] | None = None
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        if line[0] == "[":
            raise ConfigError(f"invalid line {number} in passwd file {path}: no sections allowed")
        if any(c.isspace() for c in line):
            raise ConfigError(f"invalid line {number} in passwd file {path}: contains whitespace")
        parts = line.split(":")
        if len(parts) == 2 and all(parts):
            default = default or (parts[0], parts[1])
        elif len(parts) == 3 and all(parts):
            if parts[0] == bucket:
                return Credentials(parts[1], parts[2], source=path)
        else:
            raise ConfigError(
                f"invalid line {number} in passwd file {path}: "
                "expected ACCESS_KEY:SECRET_KEY or BUCKET:ACCESS_KEY:SECRET_KEY"
            )
    if default is None:
        raise ConfigError(f"no credentials for bucket {bucket} in passwd file {path}")
    return Credentials(default[0], default[1], source=path)


def _from_env(env: dict[str, str]) -> Credentials | None:
    access = env.get("AWS_ACCESS_KEY_ID") or env.get("AWSACCESSKEYID")
    secret = env.get("AWS_SECRET_ACCESS_KEY") or env.get("AWSSECRETACCESSKEY")
    if not (access or secret):
        return None
    if not (access and secret):
        raise ConfigError(
            "only one of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY is set; set both or neither"
        )
    token = env.get("AWS_SESSION_TOKEN") or env.get("AWSSESSIONTOKEN") or None
    return Credentials(access, secret, token, source="environment")


def load(passwd_file: str | None, bucket: str, env: dict[str, str] | None = None) -> Credentials:
    """The first source that has keys, in s3fs's order."""
    env = dict(os.environ if env is None else env)
    if passwd_file:
        return read_passwd_file(passwd_file, bucket)
    creds = _from_env(env)
    if creds:
        return creds
    home = env.get("HOME") or os.path.expanduser("~")
    for path in (os.path.join(home, ".passwd-s3fs"), "/etc/passwd-s3fs"):
        if os.path.exists(path):
            return read_passwd_file(path, bucket)
    raise ConfigError(
        "no credentials: give -o passwd_file=FILE (ACCESS_KEY:SECRET_KEY, mode 0600) "
        "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def open_for(
    passwd_file: str | None,
    bucket: str,
    chain: str | None,
    iam_role: str | None,
    profile: str | None,
    env: Mapping[str, str] | None = None,
) -> Source:
    """The source the options ask for, its first credentials in hand.

    `chain`: "aws" (the whole AWS chain) or "ecs" (container credentials); `iam_role`:
    the role name, "auto" or "" for the instance's one; `profile`: a shared-files profile.
    """
    environ = os.environ if env is None else env
    if iam_role is not None:
        found = classify(environ, imds=True, imds_role=iam_role if iam_role != "auto" else None)
    elif chain == "ecs":
        found = classify(environ, container=True)
    elif profile is not None:
        found = classify(environ, profile=profile)
    elif chain == "aws":
        found = classify(environ)
    else:
        return StaticSource(load(passwd_file, bucket, dict(environ)))
    return open_source(found, environ)

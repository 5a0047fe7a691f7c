"""The launcher's exceptions, one class per sysexits code.

Every expected failure is raised as one of these and printed by the CLI as a single
actionable line; anything else is a bug and may show a traceback.
"""

from __future__ import annotations

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_NOPERM = 77
EX_CONFIG = 78


class LauncherError(Exception):
    """Base: an expected failure with its exit code. The message must never hold a secret."""

    exit_code = EX_SOFTWARE


class UsageError(LauncherError):
    """Bad command-line usage."""

    exit_code = EX_USAGE


class UnavailableError(LauncherError):
    """A needed program or facility is missing: no backend, no /dev/fuse, no fusermount."""

    exit_code = EX_UNAVAILABLE


class CantCreateError(LauncherError):
    """The mountpoint or the passwd file cannot be created (or is in the way)."""

    exit_code = EX_CANTCREAT


class PermissionDeniedError(LauncherError):
    """The credentials were rejected, or the bucket is not accessible to them."""

    exit_code = EX_NOPERM


class ConfigError(LauncherError):
    """One or more configuration problems, all reported at once."""

    exit_code = EX_CONFIG

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))

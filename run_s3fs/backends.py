"""Which program will serve the mount: the s3fs binary, or the bundled Python backend.

`auto` prefers s3fs: first one lying next to the launcher (the original run.s3fs used
the binary shipped beside it, in the approot), then one on PATH; failing both, the
bundled backend (`python -m run_s3fs.fs`), if it and its libraries are installed.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from run_s3fs.errors import ConfigError, UnavailableError

_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Backend:
    name: str  # "s3fs" | "python"
    executable: str
    reason: str = ""  # why auto chose it, when it is not the usual choice (logged)

    def command(self) -> list[str]:
        """The argv prefix that starts it (the bucket, mount point and options follow)."""
        if self.name == "python":
            return [self.executable, "-m", "run_s3fs.fs"]
        return [self.executable]


def launcher_dir() -> Path | None:
    """The directory the launcher was started from (sys.argv[0]'s), if it is a file."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or argv0 == "-c":
        return None
    return Path(os.path.abspath(argv0)).parent


def find_s3fs(launcher_dir: Path | None = None) -> str | None:
    if launcher_dir is not None:
        beside = launcher_dir / "s3fs"
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("s3fs")


def python_backend_missing() -> list[str]:
    """What the bundled backend lacks here (empty: it can run). Imports nothing heavy."""
    import importlib.util

    missing = []
    if not (_PACKAGE_DIR / "fs" / "__main__.py").is_file():
        missing.append("the run_s3fs.fs module is not installed with this copy of run-s3fs")
    if importlib.util.find_spec("mfusepy") is None:
        missing.append("the Python package mfusepy (pip install 'run-s3fs[backend]')")
    if not _libfuse3_present():
        missing.append("libfuse3 (Debian: apt-get install fuse3)")
    return missing


def _libfuse3_present() -> bool:
    import ctypes.util

    return ctypes.util.find_library("fuse3") is not None


def resolve(
    choice: str, launcher_dir: Path | None = None, only_bundled: str | None = None
) -> Backend:
    """The backend for S3FS_BACKEND=`choice`; UnavailableError (69) if it cannot run here.

    `only_bundled`: why s3fs cannot serve this mount (a credential source it lacks):
    auto then takes the bundled backend, and S3FS_BACKEND=s3fs is a ConfigError (78).
    """
    if only_bundled and choice == "s3fs":
        raise ConfigError(
            f"S3FS_BACKEND=s3fs cannot mount with {only_bundled}: set S3FS_BACKEND=python"
            " (or auto) for the bundled backend, which can"
        )
    if only_bundled and choice == "auto":
        missing = python_backend_missing()
        if missing:
            raise UnavailableError(
                f"only the bundled backend can mount with {only_bundled}, and it needs "
                + "; ".join(missing)
            )
        return Backend("python", sys.executable, reason=f"s3fs cannot mount with {only_bundled}")
    if choice in ("auto", "s3fs"):
        s3fs = find_s3fs(launcher_dir)
        if s3fs is not None:
            return Backend("s3fs", s3fs)
        if choice == "s3fs":
            raise UnavailableError(
                "S3FS_BACKEND=s3fs but no s3fs program was found on PATH"
                + (f" or in {launcher_dir}" if launcher_dir else "")
                + ": install it (Debian/Ubuntu: apt-get install s3fs) or set S3FS_BACKEND=python"
            )
    missing = python_backend_missing()
    if missing:
        lead = (
            "no backend available: s3fs is not installed (apt-get install s3fs) and the bundled"
            " Python backend needs "
            if choice == "auto"
            else "S3FS_BACKEND=python but the bundled Python backend needs "
        )
        raise UnavailableError(lead + "; ".join(missing))
    return Backend("python", sys.executable)


def version(backend: Backend, timeout: float = 5.0) -> str | None:
    """The backend's version string ("1.90"), or None if it cannot be told quickly."""
    if backend.name == "python":
        from run_s3fs import __version__

        return __version__
    import subprocess

    try:
        done = subprocess.run(
            [backend.executable, "--version"], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    import re

    match = re.search(r"\bV(\d+(?:\.\d+)+)", done.stdout + done.stderr)
    return match.group(1) if match else None

"""The facts about the machine and the software that a benchmark figure depends on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip() or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _deb(package: str) -> str:
    out = _run(["dpkg-query", "-W", "-f", "${Version}", package])
    return out if "no packages" not in out else "not installed"


def _rclone() -> str:
    from bench_servers import rclone_binary

    binary = rclone_binary()
    return _run([binary, "version"]).splitlines()[0] if binary else "not installed"


def describe() -> dict[str, str]:
    s3fs = _run(["s3fs", "--version"]).splitlines()[0]
    commit = _run(["git", "rev-parse", "--short", "HEAD"])
    # Not _run: it answers "unknown" for no output, which would read as "modified".
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "run_s3fs/fs"],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=ROOT,
        check=False,
    )
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "s3fs": s3fs.replace("Amazon Simple Storage Service File System ", ""),
        "libfuse": f"libfuse2 {_deb('libfuse2')} (s3fs), libfuse3 {_deb('libfuse3-3')}",
        "mfusepy": _version("mfusepy"),
        "moto": _version("moto"),
        "rclone": _rclone(),
        "awscrt": _version("awscrt"),
        "boto3": _version("boto3"),
        # The benchmark's own code; the python backend's source is reported separately.
        "repository HEAD": commit + (" (run_s3fs/fs modified locally)" if dirty else ""),
    }


def backend_fingerprint(src: Path = ROOT) -> str:
    """A hash of the Python backend's source as it is now: the benchmark runs the working
    tree, so a change made during a run shows up as two fingerprints in one run."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted((src / "run_s3fs" / "fs").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]

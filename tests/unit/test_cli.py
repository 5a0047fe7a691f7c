"""The CLI end to end without mounting: --dry-run, --version/--help, sources shown,
and the weight of a plain start (no boto3, psutil or mfusepy)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from cli_support import run_cli, sandbox_fixture, snapshot  # noqa: F401 - the `sandbox` fixture

ACCESS = "AKIACLITESTKEY123456"
SECRET = "cLiSeCrEt/0123456789abcdefghijklmnopqrst"
assert len(SECRET) == 40


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp / "home"),
        "S3FS_ENVIRONMENT_JSON": str(tmp / "environment.json"),
        "S3FS_PASSWD_FILE": str(tmp / "private" / "passwd"),
        **extra,
    }


def complete_env(tmp: Path, **extra: str) -> dict[str, str]:
    """env_for with every required variable set (bucket, mount point, keys)."""
    required = {
        "S3FS_BUCKET": "b-bucket",
        "S3FS_MOUNTPOINT": str(tmp / "mnt"),
        "S3FS_ACCESSKEY": ACCESS,
        "S3FS_SECRETKEY": SECRET,
    }
    return env_for(tmp, **{**required, **extra})


def test_dry_run_shows_plan_and_sources_and_changes_nothing(sandbox: Path) -> None:
    (sandbox / "environment.json").write_text(
        json.dumps({"S3FS_BUCKET": "json-bucket", "S3FS_SECRETKEY": SECRET, "PORT": "1"})
    )
    (sandbox / "cwd" / ".env").write_text(
        f"S3FS_MOUNTPOINT={sandbox}/mnt point\nS3FS_URL=http://127.0.0.1:9\n"
    )
    env = env_for(
        sandbox, S3FS_ACCESSKEY=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, S3FS_BACKEND="python"
    )
    before = snapshot(sandbox)
    done = run_cli(sandbox, env, "--dry-run", "--backend", "s3fs")
    if shutil.which("s3fs") is None:
        pytest.skip("s3fs is not installed")

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert SECRET not in out + done.stderr and ACCESS not in out + done.stderr
    assert "S3FS_BUCKET      = json-bucket  [environment.json (" in out
    assert f"S3FS_MOUNTPOINT  = {sandbox}/mnt point  [.env ({sandbox}/cwd/.env)]" in out
    assert "S3FS_ACCESSKEY   = AKIA…(20 chars)  [environment]" in out
    assert "S3FS_BACKEND     = s3fs  [flag]" in out
    command = next(line for line in out.splitlines() if line.startswith("command: "))
    assert (
        f"json-bucket '{sandbox}/mnt point' -f -o passwd_file={sandbox}/private/passwd" in command
    )
    assert "url=http://127.0.0.1:9,use_path_request_style" in command
    assert "passwd file content: AKIA…(20 chars):cLiS…(40 chars)" in out
    handed = next(line for line in out.splitlines() if line.startswith("environment handed"))
    assert "PATH" in handed and "S3FS_ACCESSKEY" not in handed
    assert "AWS_SECRET_ACCESS_KEY" not in handed
    assert snapshot(sandbox) == before


def test_dry_run_refuses_a_nonempty_mountpoint_with_73(sandbox: Path) -> None:
    (sandbox / "mnt").mkdir()
    (sandbox / "mnt" / "keep.txt").write_text("x")
    env = complete_env(sandbox)
    done = run_cli(sandbox, env, "--dry-run")
    assert done.returncode == 73
    assert done.stderr.startswith("run-s3fs: error: S3FS_MOUNTPOINT")
    assert "nonempty" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    ok = run_cli(sandbox, {**env, "S3FS_OPTIONS": "nonempty"}, "--dry-run")
    assert ok.returncode == 0, ok.stderr


def test_key_length_warning_is_logged(sandbox: Path) -> None:
    env = complete_env(sandbox, S3FS_ACCESSKEY="minioadmin", S3FS_SECRETKEY="minioadmin-secret")
    done = run_cli(sandbox, env, "--dry-run")
    assert done.returncode == 0
    warnings = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 2 and all(line.startswith("run-s3fs[") for line in warnings)
    assert "minioadmin" not in done.stderr


def test_version_and_help(sandbox: Path) -> None:
    from run_s3fs import __version__

    version = run_cli(sandbox, env_for(sandbox), "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"run-s3fs {__version__}"
    helped = run_cli(sandbox, env_for(sandbox), "--help")
    assert helped.returncode == 0
    for flag in ("--check", "--json", "--dry-run", "--env-file", "--environment-json", "--backend"):
        assert flag in helped.stdout


def test_console_script_matches_module(sandbox: Path) -> None:
    # The environment's own scripts directory, where `pip install` put it: `make test`
    # runs pytest by the venv's interpreter, with that directory not on PATH.
    exe = shutil.which("run-s3fs", path=sysconfig.get_path("scripts"))
    if exe is None:
        pytest.skip("run-s3fs console script not installed in this environment")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("run-s3fs ")


def test_dry_run_imports_nothing_heavy(sandbox: Path) -> None:
    env = complete_env(sandbox)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "run_s3fs", "--dry-run"],
        env=env,
        cwd=sandbox / "cwd",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    for heavy in ("boto3", "botocore", "psutil", "mfusepy", "run_s3fs.fs", "run_s3fs.check"):
        assert heavy not in imported

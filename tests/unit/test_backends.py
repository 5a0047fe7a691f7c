"""Backend resolution: s3fs beside the launcher or on PATH, the bundled Python backend,
and a clear 69 when the chosen one cannot run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from run_s3fs import backends
from run_s3fs.backends import Backend, resolve
from run_s3fs.errors import UnavailableError


def fake_s3fs(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "s3fs"
    exe.write_text("#!/bin/sh\necho 'Amazon Simple Storage Service File System V9.87 (fake)'\n")
    exe.chmod(0o755)
    return exe


def test_auto_prefers_s3fs_beside_the_launcher(tmp_path: Path, monkeypatch) -> None:
    exe = fake_s3fs(tmp_path / "approot")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    backend = resolve("auto", tmp_path / "approot")
    assert backend == Backend("s3fs", str(exe))
    assert backends.version(backend) == "9.87"


def test_auto_finds_s3fs_on_path(tmp_path: Path, monkeypatch) -> None:
    exe = fake_s3fs(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert resolve("auto", tmp_path / "nowhere").executable == str(exe)
    assert resolve("s3fs").executable == str(exe)


def test_s3fs_missing_is_69_with_install_hint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UnavailableError) as err:
        resolve("s3fs", tmp_path)
    assert err.value.exit_code == 69
    assert "apt-get install s3fs" in str(err.value)


def test_python_backend_reports_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    missing = backends.python_backend_missing()
    if missing:
        with pytest.raises(UnavailableError) as err:
            resolve("python")
        assert err.value.exit_code == 69
        for item in missing:
            assert item in str(err.value)
    else:
        assert resolve("python") == Backend("python", sys.executable)
        assert resolve("python").command() == [sys.executable, "-m", "run_s3fs.fs"]


def test_python_backend_needs_its_module(tmp_path: Path, monkeypatch) -> None:
    """Until run_s3fs/fs/__main__.py exists, choosing python says so (no pretend stub)."""
    monkeypatch.setattr(backends, "_PACKAGE_DIR", tmp_path)
    assert any("run_s3fs.fs" in m for m in backends.python_backend_missing())
    with pytest.raises(UnavailableError, match=r"run_s3fs\.fs"):
        resolve("python")


def test_auto_without_s3fs_falls_back_or_explains(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    if backends.python_backend_missing():
        with pytest.raises(UnavailableError, match="apt-get install s3fs"):
            resolve("auto", tmp_path)
    else:
        assert resolve("auto", tmp_path).name == "python"


@pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs is not installed")
def test_version_of_the_real_s3fs() -> None:
    version = backends.version(resolve("s3fs"))
    assert version is not None and version[0].isdigit()

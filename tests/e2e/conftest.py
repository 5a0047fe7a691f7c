"""Fixtures for the e2e tier: long-lived mounts and helpers shared by the e2e modules.

The function-scoped `mounter` in tests/conftest.py mounts per test. Mounting costs a
second or more per backend, so the POSIX, cross-backend, plain-object and multi-mount
suites share module-scoped mounts built here from the same `start_mount` helper, and
isolate their tests by bucket or by a fresh directory inside the mount instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from run_s3fs.devserver import S3Server


def _load_root_conftest() -> Any:
    """tests/conftest.py as a module of its own name.

    Conftest files outside packages are all imported as `conftest`, and pytest drops the
    previous one from sys.modules before importing the next, so once this file is loaded,
    `from conftest import X` in any e2e module resolves HERE. We therefore load the root
    conftest under a private name and re-export its helpers below; fixtures are not
    re-exported (pytest already has them from the root file).
    """
    name = "_run_s3fs_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parent.parent / "conftest.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _is_fixture(obj: object) -> bool:
    # Re-exporting a fixture would define it a second time for tests/e2e (a second
    # session moto server, for one); pytest marks fixture functions in both ways below.
    return type(obj).__name__ == "FixtureFunctionDefinition" or hasattr(
        obj, "_pytestfixturefunction"
    )


_root = _load_root_conftest()
# Every public helper of the root conftest, so that `from conftest import X` keeps
# working in e2e modules whatever the root file adds later.
for _name, _obj in vars(_root).items():
    if (
        not _name.startswith(("_", "pytest_"))  # pytest_plugins and hooks belong to the root
        and not _is_fixture(_obj)
        and _name not in globals()
    ):
        globals()[_name] = _obj
del _name, _obj  # a leftover fixture object here would be registered as fixture `_obj`

# Named again for readers and linters; these are the root conftest's objects.
ACCESS_KEY: str = _root.ACCESS_KEY
SECRET_KEY: str = _root.SECRET_KEY
Mount = _root.Mount
abort_fuse = _root.abort_fuse
fuse_connection = _root.fuse_connection
fuse_usable = _root.fuse_usable
start_mount = _root.start_mount

BACKENDS = ["s3fs", "python"]

# Mount options the e2e suites use unless a test asks otherwise. Both backends take
# s3fs syntax; the Python backend ignores what does not apply to it.
DEFAULT_OPTIONS: list[str] = []


@pytest.fixture(scope="session")
def fuse_ok(require_fuse: None) -> None:
    """The e2e modules' name for the root conftest's `require_fuse`."""


@pytest.fixture(scope="session")
def session_passwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A passwd file (0600, `ACCESS:SECRET`) usable by mounts of any scope."""
    return _root.write_passwd(tmp_path_factory.mktemp("passwd") / "passwd-s3fs")


@pytest.fixture(scope="session")
def s3c(s3_server: S3Server) -> Any:
    """A boto3 client for the session's server, shareable by module-scoped fixtures."""
    return s3_server.client(ACCESS_KEY, SECRET_KEY)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mounts a tmpfs under the test's directory: `make(name, options)` (mount -o), for
    a spool disk that is small, full or read-only; skips where tmpfs cannot be mounted."""
    mounted: list[Path] = []

    def make(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def make_bucket(client: Any) -> str:
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


class Mounts:
    """Starts mounts under one directory and stops them all on `close()`.

    `mount(backend, bucket_spec, name, options)` returns a live Mount. Mount points are
    made unique per call so that a remount never reuses a directory a dead daemon left.
    """

    def __init__(self, server: S3Server, passwd: Path, base: Path) -> None:
        self.server = server
        self.passwd = passwd
        self.base = base
        self.live: list[Mount] = []

    def mount(
        self,
        backend: str,
        bucket_spec: str,
        name: str = "mnt",
        options: list[str] | None = None,
        **kwargs: Any,
    ) -> Mount:
        point = self.base / f"{name}-{backend}-{uuid.uuid4().hex[:6]}"
        m = start_mount(
            backend,
            self.server,
            bucket_spec,
            point,
            self.passwd,
            [*DEFAULT_OPTIONS, *(options or [])],
            **kwargs,
        )
        self.live.append(m)
        return m

    def stop(self, m: Mount) -> int:
        rc = m.stop()
        if m in self.live:
            self.live.remove(m)
        return rc

    def close(self) -> None:
        while self.live:
            self.live.pop().stop()


@pytest.fixture(scope="module")
def module_mounts(
    s3_server: S3Server,
    session_passwd: Path,
    tmp_path_factory: pytest.TempPathFactory,
    fuse_ok: None,
) -> Iterator[Mounts]:
    """A Mounts factory whose mounts live until the end of the test module."""
    mounts = Mounts(s3_server, session_passwd, tmp_path_factory.mktemp("mounts"))
    yield mounts
    mounts.close()


@pytest.fixture
def per_test_mounts(
    s3_server: S3Server, session_passwd: Path, tmp_path: Path, fuse_ok: None
) -> Iterator[Mounts]:
    """A Mounts factory whose mounts are stopped at the end of the test."""
    mounts = Mounts(s3_server, session_passwd, tmp_path)
    yield mounts
    mounts.close()


# --- helpers ------------------------------------------------------------------------------


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def object_bytes(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def list_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under `prefix`, across listing pages."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def key_exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def s3fs_quirk(request: pytest.FixtureRequest, backend: str, reason: str) -> None:
    """Mark the running test xfail(strict) when it runs against the real s3fs only.

    For behaviour where s3fs 1.90 itself is wrong or limited: the Python backend must
    still pass, and a strict xfail turns into a failure the day s3fs gets it right.
    """
    if backend == "s3fs":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"s3fs 1.90: {reason}"))

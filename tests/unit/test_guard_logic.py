"""The guard's pure parts: which guards to try, the plan's step, S3FS_GUARD validation, and
the mount table ignoring the launcher's own guard tmpfs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from run_s3fs import guard, mounts
from run_s3fs.backends import Backend
from run_s3fs.config import load
from run_s3fs.errors import ConfigError
from run_s3fs.mounts import MountpointState
from run_s3fs.plan import make_plan

ROOT = guard.Facts(euid=0, can_immutable=True, can_mount=True)
CONTAINER_ROOT = guard.Facts(euid=0, can_immutable=False, can_mount=True)
USER = guard.Facts(euid=1000, can_immutable=False, can_mount=False)
MNT = Path("/srv/store")


def cfg(**env: str):
    base = {
        "S3FS_BUCKET": "guard-bucket",
        "S3FS_MOUNTPOINT": str(MNT),
        "S3FS_ACCESSKEY": "AKIAGUARDTESTKEY1234",
        "S3FS_SECRETKEY": "gUaRdSeCrEt/0123456789abcdefghijklmnopq",
        "S3FS_PASSWD_FILE": "/tmp/pw/passwd",
    }
    return load({}, {**base, **env}, None, None)


@pytest.mark.parametrize(
    ("requested", "facts", "expected"),
    [
        ("on", ROOT, ("immutable", "tmpfs", "mode")),
        ("on", CONTAINER_ROOT, ("tmpfs", "mode")),
        ("on", USER, ("mode",)),
        ("off", ROOT, ()),
        ("immutable", USER, ()),
        ("immutable", ROOT, ("immutable",)),
        ("tmpfs", CONTAINER_ROOT, ("tmpfs",)),
        ("mode", ROOT, ("mode",)),
    ],
)
def test_candidates(requested: str, facts: guard.Facts, expected: tuple[str, ...]) -> None:
    assert guard.candidates(requested, facts) == expected


def test_plan_step_wording() -> None:
    assert guard.plan_step("on", ("immutable", "mode"), MNT) == (
        "guard /srv/store while unmounted: immutable, else mode"
    )
    assert "warn and mount unguarded" in guard.plan_step("immutable", (), MNT)
    assert guard.plan_step("off", (), MNT).startswith("S3FS_GUARD=off: remove")


def test_config_default_and_validation() -> None:
    assert cfg().guard == "on"
    assert cfg().sources["S3FS_GUARD"] == "default"
    assert cfg(S3FS_GUARD="OFF").guard == "off"
    assert cfg(S3FS_GUARD="tmpfs").guard == "tmpfs"
    with pytest.raises(ConfigError) as info:
        cfg(S3FS_GUARD="yes")
    assert "S3FS_GUARD" in str(info.value) and "on, off, immutable, tmpfs, mode" in str(info.value)


def test_plan_carries_the_guard_and_says_so() -> None:
    backend = Backend("python", sys.executable)
    plan = make_plan(cfg(), backend, MountpointState(MNT, "missing"), {}, 0, CONTAINER_ROOT)
    assert plan.guard == "on" and plan.guard_kinds == ("tmpfs", "mode")
    assert "create the mount point /srv/store (with parents, mode 0755)" in plan.steps
    assert "guard /srv/store while unmounted: tmpfs, else mode" in plan.steps
    # The guard comes before the exec, after the mount point exists.
    assert plan.steps.index("guard /srv/store while unmounted: tmpfs, else mode") == 1
    off = make_plan(cfg(S3FS_GUARD="off"), backend, MountpointState(MNT, "empty"), {}, 0, ROOT)
    assert off.guard_kinds == () and off.steps[0].startswith("S3FS_GUARD=off")


def test_ioctl_numbers_match_linux() -> None:
    if guard._LONG == 8:
        assert (guard.FS_IOC_GETFLAGS, guard.FS_IOC_SETFLAGS) == (0x80086601, 0x40086602)
    else:
        assert (guard.FS_IOC_GETFLAGS, guard.FS_IOC_SETFLAGS) == (0x80046601, 0x40046602)


def test_find_mount_skips_the_guard_tmpfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "mounts"
    table.write_text(
        "run-s3fs-guard /srv/store tmpfs ro,nosuid 0 0\ns3fs /srv/store fuse.s3fs rw 0 0\n"
    )
    real = mounts.mount_table
    monkeypatch.setattr(mounts, "mount_table", lambda mounts_file=None: real(table))
    assert mounts.find_mount(MNT) is not None and mounts.find_mount(MNT).fstype == "fuse.s3fs"
    table.write_text("run-s3fs-guard /srv/store tmpfs ro,nosuid 0 0\n")
    assert mounts.find_mount(MNT) is None
    assert guard.has_guard_mount(MNT)


def test_original_mode_from_marker(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    assert guard.original_mode(d) == guard.DEFAULT_MODE
    try:
        os.setxattr(d, guard.MARKER, b"mode 0750")
    except OSError:
        pytest.skip("no user xattrs here")
    assert guard.original_mode(d) == 0o750

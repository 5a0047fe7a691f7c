"""make_plan: the argv for each backend, endpoint handling, options, env scrubbing, and
the mount-point policy (live, stale, non-empty)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from run_s3fs.backends import Backend
from run_s3fs.config import load
from run_s3fs.errors import CantCreateError
from run_s3fs.mounts import MountpointState
from run_s3fs.plan import SCRUBBED_ENV, make_plan

ACCESS = "AKIAPLANTESTKEY12345"
SECRET = "pLaNsEcReT/0123456789abcdefghijklmnopqrs"
S3FS = Backend("s3fs", "/usr/bin/s3fs")
PYTHON = Backend("python", sys.executable)
MNT = Path("/srv/store")


def cfg(**env: str):
    base = {
        "S3FS_BUCKET": "plan-bucket",
        "S3FS_MOUNTPOINT": str(MNT),
        "S3FS_ACCESSKEY": ACCESS,
        "S3FS_SECRETKEY": SECRET,
        "S3FS_PASSWD_FILE": "/tmp/pw/passwd",
    }
    return load({}, {**base, **env}, None, None)


def empty(path: Path = MNT) -> MountpointState:
    return MountpointState(path, "empty")


def options_of(argv: tuple[str, ...]) -> list[str]:
    assert argv[-2] == "-o"
    return argv[-1].split(",")


def test_s3fs_argv_for_aws() -> None:
    plan = make_plan(cfg(), S3FS, empty(), {}, euid=0)
    assert plan.argv == (
        "/usr/bin/s3fs",
        "plan-bucket",
        "/srv/store",
        "-f",
        "-o",
        "passwd_file=/tmp/pw/passwd,dbglevel=warn",
    )
    assert plan.passwd_path == Path("/tmp/pw/passwd")
    assert plan.passwd_content.reveal() == f"{ACCESS}:{SECRET}\n"
    assert not plan.passwd_private_dir


def test_python_backend_has_the_same_shape() -> None:
    plan = make_plan(cfg(S3FS_OPTIONS="allow_other"), PYTHON, empty(), {}, euid=0)
    assert plan.argv[:3] == (sys.executable, "-m", "run_s3fs.fs")
    assert plan.argv[3:7] == ("plan-bucket", "/srv/store", "-f", "-o")
    assert options_of(plan.argv) == ["passwd_file=/tmp/pw/passwd", "dbglevel=warn", "allow_other"]


def test_custom_url_gets_path_style_and_region_as_endpoint() -> None:
    c = cfg(S3FS_URL="http://127.0.0.1:9000", S3FS_REGION="garage", S3FS_LOGLEVEL="debug")
    opts = options_of(make_plan(c, S3FS, empty(), {}, euid=0).argv)
    assert opts == [
        "passwd_file=/tmp/pw/passwd",
        "url=http://127.0.0.1:9000",
        "use_path_request_style",
        "endpoint=garage",
        "dbglevel=info",
    ]


def test_aws_url_keeps_virtual_host_style() -> None:
    c = cfg(S3FS_URL="https://s3.eu-west-1.amazonaws.com", S3FS_REGION="eu-west-1")
    opts = options_of(make_plan(c, S3FS, empty(), {}, euid=0).argv)
    assert "url=https://s3.eu-west-1.amazonaws.com" in opts
    assert "use_path_request_style" not in opts
    assert "endpoint=eu-west-1" in opts


def test_prefix_and_user_options_and_dbglevel_override() -> None:
    c = cfg(
        S3FS_BUCKET="s3://plan-bucket/a/b",
        S3FS_OPTIONS="uid=1000,dbglevel=err,use_path_request_style",
        S3FS_URL="http://minio:9000",
    )
    argv = make_plan(c, S3FS, empty(), {}, euid=0).argv
    assert argv[1] == "plan-bucket:/a/b"
    opts = options_of(argv)
    assert opts.count("use_path_request_style") == 1
    assert [o for o in opts if o.startswith("dbglevel")] == ["dbglevel=err"]
    assert "uid=1000" in opts


def test_env_is_scrubbed_and_no_secret_anywhere() -> None:
    environ = {name: "whatever" for name in SCRUBBED_ENV}
    environ |= {
        "S3FS_SECRETKEY": SECRET,
        "S3FS_ACCESSKEY": ACCESS,
        "MY_COPY_OF_THE_SECRET": f"x{SECRET}x",
        "PATH": "/usr/bin",
        "HOME": "/root",
        "S3FS_BUCKET": "plan-bucket",
    }
    plan = make_plan(cfg(S3FS_URL="http://h:1"), S3FS, empty(), environ, euid=0)
    assert set(plan.env) == {"PATH", "HOME", "S3FS_BUCKET"}
    flat = " ".join([*plan.argv, *plan.env, *plan.env.values(), *plan.steps])
    assert SECRET not in flat and ACCESS not in flat
    assert SECRET not in repr(plan)


def test_default_passwd_path_used_when_unset() -> None:
    c = load(
        {},
        {
            "S3FS_BUCKET": "plan-bucket",
            "S3FS_MOUNTPOINT": str(MNT),
            "S3FS_ACCESSKEY": ACCESS,
            "S3FS_SECRETKEY": SECRET,
        },
        None,
        None,
    )
    plan = make_plan(c, S3FS, empty(), {"HOME": "/home/u"}, euid=1000)
    assert plan.passwd_path.parent == Path("/home/u/.run-s3fs")
    assert plan.passwd_private_dir
    assert f"passwd_file={plan.passwd_path}" in options_of(plan.argv)


def test_missing_mountpoint_is_created_and_stale_unmounted() -> None:
    missing = make_plan(cfg(), S3FS, MountpointState(MNT, "missing"), {}, euid=0)
    assert missing.mkdir and not missing.unmount_first
    stale = make_plan(cfg(), S3FS, MountpointState(MNT, "stale", "fuse.s3fs"), {}, euid=0)
    assert stale.unmount_first
    assert "dead mount" in stale.steps[0]
    ready = make_plan(cfg(), S3FS, empty(), {}, euid=0)
    assert not ready.mkdir and not ready.unmount_first


def test_live_mount_refused_naming_the_pid() -> None:
    state = MountpointState(MNT, "live", "fuse.s3fs", 4321, "s3fs")
    with pytest.raises(CantCreateError) as err:
        make_plan(cfg(), S3FS, state, {}, euid=0)
    assert err.value.exit_code == 73
    assert "pid 4321 (s3fs)" in str(err.value) and "fuse.s3fs" in str(err.value)
    assert "S3FS_MOUNTPOINT" in str(err.value)


@pytest.mark.parametrize("kind", ["nonempty", "not_directory"])
def test_unusable_mountpoints_refused(kind: str) -> None:
    with pytest.raises(CantCreateError) as err:
        make_plan(cfg(), S3FS, MountpointState(MNT, kind), {}, euid=0)
    assert "S3FS_MOUNTPOINT" in str(err.value)
    if kind == "nonempty":
        assert "nonempty" in str(err.value) and "S3FS_OPTIONS" in str(err.value)


def test_nonempty_option_allows_it_and_is_dropped_for_fuse3() -> None:
    c = cfg(S3FS_OPTIONS="nonempty")
    state = MountpointState(MNT, "nonempty")
    assert "nonempty" in options_of(make_plan(c, S3FS, state, {}, euid=0).argv)
    py = make_plan(c, PYTHON, state, {}, euid=0)
    assert "nonempty" not in options_of(py.argv)
    assert py.allow_nonempty

"""The backend's s3fs-style command line and credential sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from run_s3fs.errors import ConfigError, UsageError
from run_s3fs.fs import credentials
from run_s3fs.fs.options import MIB, parse_args

BASE = ["bucket", "/mnt/x", "-f"]


def test_minimal():
    o = parse_args(["bucket", "/mnt/x"])
    assert (o.bucket, o.prefix, o.mountpoint) == ("bucket", "", "/mnt/x")
    assert o.fsname == "s3fs" and o.subtype == "s3fs"
    assert o.multipart_size == 10 * MIB and o.ignored == ()


def test_sub_path():
    assert parse_args(["bucket:/a/b/", "/m"]).prefix == "a/b/"
    assert parse_args(["bucket:/", "/m"]).prefix == ""


def test_all_honoured_options_repeated_o():
    o = parse_args(
        [
            *BASE,
            "-o",
            "passwd_file=/p,url=http://127.0.0.1:9000/,use_path_request_style,allow_other",
            "-o",
            "umask=0022,uid=1000,gid=1001,mp_umask=027,stat_cache_expire=30,ro",
            "-omultipart_size=64,parallel_count=3,max_thread_count=20,retries=2",
            "-o",
            "connect_timeout=5,readwrite_timeout=7.5,dbglevel=warn,endpoint=eu-west-1",
            "-o",
            "fsname=mys3,subtype=mine,compat_dir,tmpdir=/var/tmp,nonempty",
        ]
    )
    assert o.passwd_file == "/p"
    assert o.url == "http://127.0.0.1:9000" and o.url_given
    assert o.use_path_request_style and o.allow_other and o.read_only
    assert (o.umask, o.uid, o.gid, o.mp_umask) == (0o022, 1000, 1001, 0o027)
    assert o.stat_cache_expire == 30
    assert o.multipart_size == 64 * MIB
    assert (o.parallel_count, o.max_thread_count, o.retries) == (3, 20, 2)
    assert (o.connect_timeout, o.readwrite_timeout) == (5, 7.5)
    assert o.log_level == "warning" and o.region == "eu-west-1"
    assert (o.fsname, o.subtype, o.compat_dir, o.tmpdir) == ("mys3", "mine", True, "/var/tmp")
    assert o.ignored == ()


def test_ignored_and_unknown_options_are_collected_once():
    o = parse_args([*BASE, "-o", "use_cache=/tmp,sigv2,frobnicate=3,del_cache"])
    assert o.ignored == ("use_cache", "sigv2", "frobnicate (unknown)", "del_cache")


def test_read_memory_and_disk_options():
    o = parse_args(BASE)
    assert (o.readahead_mb, o.read_cache_mb) == (128, 1024)
    o = parse_args([*BASE, "-o", "readahead_mb=32,read_cache_mb=0"])
    assert (o.readahead_mb, o.read_cache_mb) == (32, 0)
    assert o.ensure_diskfree is None and o.ignored == ()
    o = parse_args([*BASE, "-o", "ensure_diskfree=0"])
    assert o.ensure_diskfree == 0 and o.ignored == ()


def test_debug_flag():
    assert parse_args([*BASE, "-d"]).log_level == "debug"


@pytest.mark.parametrize(
    ("opt", "needle"),
    [
        ("umask=xyz", "umask=xyz"),
        ("umask=1777", "0777"),
        ("uid=abc", "uid=abc"),
        ("uid=-5", "at least"),
        ("stat_cache_expire=soon", "seconds"),
        ("multipart_size=1", "at least 5"),
        ("parallel_count=0", "at least 1"),
        ("url=s3.example.com", "http"),
        ("passwd_file", "needs a value"),
        ("dbglevel=loud", "dbglevel"),
        ("read_cache_mb=-1", "at least 0"),
        ("read_cache_mb=lots", "read_cache_mb=lots"),
        ("ensure_diskfree=-1", "at least 0"),
    ],
)
def test_malformed_values(opt, needle):
    with pytest.raises(UsageError) as e:
        parse_args([*BASE, "-o", opt])
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "argv", [[], ["bucket"], ["a", "b", "c"], ["b", "/m", "-x"], ["b", "/m", "-o"]]
)
def test_bad_usage(argv):
    with pytest.raises(UsageError):
        parse_args(argv)


def test_malformed_option_exits_before_mounting(tmp_path: Path):
    r = subprocess.run(
        [sys.executable, "-m", "run_s3fs.fs", "b", str(tmp_path), "-f", "-o", "umask=xyz"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 64
    assert "umask=xyz" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --- credentials ------------------------------------------------------------------------------


def passwd(tmp_path: Path, text: str, mode: int = 0o600, name: str = "pw") -> str:
    p = tmp_path / name
    p.write_text(text)
    p.chmod(mode)
    return str(p)


def test_passwd_default_line(tmp_path):
    c = credentials.load(passwd(tmp_path, "# comment\nAKIA:SECRET\n"), "b", env={})
    assert (c.access_key, c.secret_key) == ("AKIA", "SECRET")


def test_passwd_bucket_line_wins(tmp_path):
    text = "AKIA:SECRET\nother:K1:S1\nmine:K2:S2/+x\n"
    c = credentials.load(passwd(tmp_path, text), "mine", env={})
    assert (c.access_key, c.secret_key) == ("K2", "S2/+x")


def test_passwd_only_other_buckets(tmp_path):
    with pytest.raises(ConfigError, match="no credentials for bucket mine"):
        credentials.load(passwd(tmp_path, "other:K:S\n"), "mine", env={})


@pytest.mark.parametrize(
    ("mode", "needle"),
    [
        (0o604, "others permissions"),
        (0o640, "group permissions"),
        (0o700, "executable permissions"),
    ],
)
def test_passwd_permissions(tmp_path, mode, needle):
    with pytest.raises(ConfigError, match=needle):
        credentials.load(passwd(tmp_path, "AKIA:SECRET\n", mode), "b", env={})


@pytest.mark.parametrize(
    "text", ["AKIA s3cr3tval\n", "[default]\n", "AKIA:\n", "a:AKIA:s3cr3tval:d\n"]
)
def test_passwd_bad_lines(tmp_path, text):
    with pytest.raises(ConfigError) as e:
        credentials.load(passwd(tmp_path, text), "b", env={})
    assert "invalid line 1" in str(e.value)
    assert "s3cr3tval" not in str(e.value)


def test_passwd_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="could not open passwd file"):
        credentials.load(str(tmp_path / "nope"), "b", env={})


def test_env_credentials():
    c = credentials.load(
        None,
        "b",
        env={"AWS_ACCESS_KEY_ID": "K", "AWS_SECRET_ACCESS_KEY": "S", "HOME": "/nonexistent"},
    )
    assert (c.access_key, c.secret_key, c.session_token) == ("K", "S", None)
    c = credentials.load(
        None,
        "b",
        env={"AWSACCESSKEYID": "K2", "AWSSECRETACCESSKEY": "S2", "AWS_SESSION_TOKEN": "T"},
    )
    assert (c.access_key, c.secret_key, c.session_token) == ("K2", "S2", "T")


def test_env_half_set():
    with pytest.raises(ConfigError, match="only one of"):
        credentials.load(None, "b", env={"AWS_ACCESS_KEY_ID": "K"})


def test_home_passwd_file(tmp_path):
    passwd(tmp_path, "K:S\n", name=".passwd-s3fs")
    c = credentials.load(None, "b", env={"HOME": str(tmp_path)})
    assert c.access_key == "K"


def test_no_credentials_anywhere(tmp_path, monkeypatch):
    if os.path.exists("/etc/passwd-s3fs"):
        pytest.skip("/etc/passwd-s3fs exists on this machine")
    with pytest.raises(ConfigError, match="no credentials"):
        credentials.load(None, "b", env={"HOME": str(tmp_path)})


def test_credentials_repr_hides_keys():
    c = credentials.Credentials("AKIAVISIBLE", "SECRETVISIBLE", "TOKENVISIBLE", "env")
    assert "VISIBLE" not in repr(c) and "VISIBLE" not in str(c)


@pytest.mark.parametrize(
    ("opt", "on"),
    [(None, False), ("use_xattr", True), ("use_xattr=1", True), ("use_xattr=0", False)],
)
def test_use_xattr(opt: str | None, on: bool) -> None:
    o = parse_args([*BASE, "-o", opt] if opt else BASE)
    assert o.use_xattr is on and o.ignored == ()


def test_use_xattr_with_another_value_is_an_error() -> None:
    with pytest.raises(UsageError, match="use_xattr=yes"):
        parse_args([*BASE, "-o", "use_xattr=yes"])

"""Bad input, one case per row, through the real CLI in a subprocess.

For each row: the exit code (78 for configuration, 64 for usage), every expected
variable (or flag) named in the message, no secret anywhere in the output, no
traceback, and nothing written anywhere under the test's directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_support import run_cli, sandbox_fixture, snapshot  # noqa: F401 - the `sandbox` fixture

ACCESS = "AKIAMATRIXTEST123456"
SECRET = "mAtRiXsEcReT/0123456789abcdefghijklmnopq"
assert len(ACCESS) == 20 and len(SECRET) == 40

# Bad keys: each has a distinctive tail that must never be printed either.
BAD_ACCESS_SPACE = "AKIA SPACEYKEYVALUE1"
BAD_SECRET_TAB = "tabbed\tSECRETVALUExyz0123456789abcdefghij"
BAD_SECRET_NL = "newline\nSECRETVALUEabc0123456789abcdefghi"
BAD_SECRET_COLON = "colon:SECRETVALUEdef0123456789abcdefghijk"
BAD_ACCESS_COLON = "AKIA:COLONKEYVALUE12"
BAD_ACCESS_HASH = "#AKIAHASHKEYVALUE123"
URL_PASSWORD = "hunter2pAsSwOrD"
PASTED_TOKEN = "FwoGZXIvYXdzEPASTEDtoken/+x"
SECRETS = [
    ACCESS,
    SECRET,
    BAD_ACCESS_SPACE,
    "SPACEYKEYVALUE1",
    "SECRETVALUExyz",
    "SECRETVALUEabc",
    "SECRETVALUEdef",
    "COLONKEYVALUE12",
    "HASHKEYVALUE123",
    URL_PASSWORD,
    PASTED_TOKEN,
]

UNSET = None


@dataclass
class Case:
    id: str
    env: dict[str, str | None] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # must all appear in stderr
    code: int = 78
    files: dict[str, str] = field(default_factory=dict)  # written before the run, relative


C = Case
CASES = [
    # --- the bucket
    C("bucket-missing", {"S3FS_BUCKET": UNSET}, names=("S3FS_BUCKET", "dotcloud env set")),
    C("bucket-empty", {"S3FS_BUCKET": ""}, names=("S3FS_BUCKET",)),
    C("bucket-too-short", {"S3FS_BUCKET": "ab"}, names=("S3FS_BUCKET", "3 to 63")),
    C("bucket-too-long", {"S3FS_BUCKET": "a" * 64}, names=("S3FS_BUCKET", "3 to 63")),
    C("bucket-uppercase", {"S3FS_BUCKET": "MyBucket"}, names=("S3FS_BUCKET", "lowercase")),
    C("bucket-underscore", {"S3FS_BUCKET": "my_bucket"}, names=("S3FS_BUCKET",)),
    C("bucket-leading-dash", {"S3FS_BUCKET": "-bucket"}, names=("S3FS_BUCKET", "start and end")),
    C("bucket-trailing-dot", {"S3FS_BUCKET": "bucket."}, names=("S3FS_BUCKET", "start and end")),
    C("bucket-ip", {"S3FS_BUCKET": "192.168.1.1"}, names=("S3FS_BUCKET", "IP address")),
    C("bucket-dotdot", {"S3FS_BUCKET": "my..bucket"}, names=("S3FS_BUCKET", "'..'")),
    C("bucket-xn", {"S3FS_BUCKET": "xn--bucket"}, names=("S3FS_BUCKET", "xn--")),
    C("bucket-s3alias", {"S3FS_BUCKET": "bucket-s3alias"}, names=("S3FS_BUCKET", "-s3alias")),
    C("bucket-space", {"S3FS_BUCKET": "my bucket"}, names=("S3FS_BUCKET", "whitespace")),
    C("bucket-prefix-dotdot", {"S3FS_BUCKET": "bucket:/a/../b"}, names=("S3FS_BUCKET", "..")),
    C("bucket-only-scheme", {"S3FS_BUCKET": "s3://"}, names=("S3FS_BUCKET",)),
    # --- the mount point
    C("mnt-missing", {"S3FS_MOUNTPOINT": UNSET}, names=("S3FS_MOUNTPOINT", "dotcloud env set")),
    C("mnt-relative", {"S3FS_MOUNTPOINT": "store"}, names=("S3FS_MOUNTPOINT", "absolute")),
    C("mnt-tilde", {"S3FS_MOUNTPOINT": "~/store"}, names=("S3FS_MOUNTPOINT", "'~'")),
    C("mnt-newline", {"S3FS_MOUNTPOINT": "/tmp/a\nb"}, names=("S3FS_MOUNTPOINT", "control")),
    C("mnt-root", {"S3FS_MOUNTPOINT": "/"}, names=("S3FS_MOUNTPOINT", "root")),
    C("mnt-dotdot", {"S3FS_MOUNTPOINT": "/tmp/../etc"}, names=("S3FS_MOUNTPOINT", "..")),
    C("mnt-space-edge", {"S3FS_MOUNTPOINT": "/tmp/store "}, names=("S3FS_MOUNTPOINT",)),
    # --- the keys
    C("access-missing", {"S3FS_ACCESSKEY": UNSET}, names=("S3FS_ACCESSKEY", "S3FS_ACCESSKEY_FILE")),
    C("secret-missing", {"S3FS_SECRETKEY": UNSET}, names=("S3FS_SECRETKEY",)),
    C("access-empty", {"S3FS_ACCESSKEY": ""}, names=("S3FS_ACCESSKEY", "empty")),
    C("access-space", {"S3FS_ACCESSKEY": BAD_ACCESS_SPACE}, names=("S3FS_ACCESSKEY", "position 5")),
    C("secret-tab", {"S3FS_SECRETKEY": BAD_SECRET_TAB}, names=("S3FS_SECRETKEY", "position 7")),
    C("secret-newline", {"S3FS_SECRETKEY": BAD_SECRET_NL}, names=("S3FS_SECRETKEY", "position 8")),
    C("access-colon", {"S3FS_ACCESSKEY": BAD_ACCESS_COLON}, names=("S3FS_ACCESSKEY", "':'")),
    C("secret-colon", {"S3FS_SECRETKEY": BAD_SECRET_COLON}, names=("S3FS_SECRETKEY", "':'")),
    C("access-hash", {"S3FS_ACCESSKEY": BAD_ACCESS_HASH}, names=("S3FS_ACCESSKEY", "comment")),
    C(
        "secret-and-file",
        {"S3FS_SECRETKEY_FILE": "{tmp}/secret.txt"},
        names=("S3FS_SECRETKEY", "S3FS_SECRETKEY_FILE", "both set"),
        files={"secret.txt": SECRET + "\n"},
    ),
    C(
        "secret-file-missing",
        {"S3FS_SECRETKEY": UNSET, "S3FS_SECRETKEY_FILE": "{tmp}/nope.txt"},
        names=("S3FS_SECRETKEY_FILE", "cannot be read"),
    ),
    C(
        "secret-file-empty",
        {"S3FS_SECRETKEY": UNSET, "S3FS_SECRETKEY_FILE": "{tmp}/empty.txt"},
        names=("S3FS_SECRETKEY_FILE", "empty"),
        files={"empty.txt": "\n"},
    ),
    C(
        "access-file-is-dir",
        {"S3FS_ACCESSKEY": UNSET, "S3FS_ACCESSKEY_FILE": "{tmp}"},
        names=("S3FS_ACCESSKEY_FILE",),
    ),
    C(
        "secret-file-bad-content",
        {"S3FS_SECRETKEY": UNSET, "S3FS_SECRETKEY_FILE": "{tmp}/s.txt"},
        names=("S3FS_SECRETKEY", "S3FS_SECRETKEY_FILE", "whitespace"),
        files={"s.txt": "colon SECRETVALUEdef0123\n"},
    ),
    # --- the optional variables
    C("url-ftp", {"S3FS_URL": "ftp://s3.example.com"}, names=("S3FS_URL", "http")),
    C("url-no-host", {"S3FS_URL": "http://"}, names=("S3FS_URL", "host")),
    C(
        "url-userinfo",
        {"S3FS_URL": f"http://user:{URL_PASSWORD}@s3.example.com"},
        names=("S3FS_URL", "user:password@"),
    ),
    C("url-query", {"S3FS_URL": "https://s3.example.com/?x=1"}, names=("S3FS_URL", "query")),
    C("url-bad-port", {"S3FS_URL": "http://s3.example.com:99999"}, names=("S3FS_URL",)),
    C("url-space", {"S3FS_URL": "http://s3 .example.com"}, names=("S3FS_URL", "whitespace")),
    C("region-space", {"S3FS_REGION": "eu west 1"}, names=("S3FS_REGION",)),
    C("backend-env-bogus", {"S3FS_BACKEND": "goofys"}, names=("S3FS_BACKEND", "auto, s3fs")),
    C("loglevel-bogus", {"S3FS_LOGLEVEL": "loud"}, names=("S3FS_LOGLEVEL", "debug, info")),
    C(
        "options-passwd-file",
        {"S3FS_OPTIONS": "allow_other,passwd_file=/etc/passwd-s3fs"},
        names=("S3FS_OPTIONS", "passwd_file", "S3FS_PASSWD_FILE"),
    ),
    C("options-url", {"S3FS_OPTIONS": "url=http://x"}, names=("S3FS_OPTIONS", "S3FS_URL")),
    C(
        "options-endpoint-disagrees",
        {"S3FS_OPTIONS": "endpoint=eu-west-1", "S3FS_REGION": "us-east-1"},
        names=("S3FS_OPTIONS", "S3FS_REGION"),
    ),
    C("options-region", {"S3FS_OPTIONS": "region=eu"}, names=("S3FS_OPTIONS", "S3FS_REGION")),
    C(
        "options-secret",
        {"S3FS_OPTIONS": f"allow_other,x={SECRET}"},
        names=("S3FS_OPTIONS", "contains a key"),
    ),
    C("options-control", {"S3FS_OPTIONS": "uid=1\x01"}, names=("S3FS_OPTIONS", "control")),
    C(
        "options-pasted-token",
        {"S3FS_OPTIONS": f"allow_other,{PASTED_TOKEN}"},
        names=("S3FS_OPTIONS", "option 2"),
    ),
    C("options-space", {"S3FS_OPTIONS": "uid=1 000"}, names=("S3FS_OPTIONS", "whitespace")),
    C("passwd-relative", {"S3FS_PASSWD_FILE": "passwd"}, names=("S3FS_PASSWD_FILE", "absolute")),
    C("passwd-comma", {"S3FS_PASSWD_FILE": "/tmp/a,b"}, names=("S3FS_PASSWD_FILE", "comma")),
    C("passwd-dir", {"S3FS_PASSWD_FILE": "/tmp/dir/"}, names=("S3FS_PASSWD_FILE",)),
    # --- the files
    C(
        "envjson-malformed",
        {"S3FS_ENVIRONMENT_JSON": "{tmp}/bad.json"},
        names=("environment.json", "bad.json", "not valid JSON"),
        files={"bad.json": '{"S3FS_BUCKET": "x", "S3FS_SECRETKEY": "' + SECRET + '",'},
    ),
    C(
        "envjson-list",
        {"S3FS_ENVIRONMENT_JSON": "{tmp}/list.json"},
        names=("list.json", "JSON object"),
        files={"list.json": "[1, 2]"},
    ),
    C(
        "envjson-number",
        {"S3FS_ENVIRONMENT_JSON": "{tmp}/num.json", "S3FS_BUCKET": UNSET},
        names=("S3FS_BUCKET", "num.json", "not a string"),
        files={"num.json": '{"S3FS_BUCKET": 12345}'},
    ),
    C(
        "envjson-missing",
        {"S3FS_ENVIRONMENT_JSON": "{tmp}/absent.json"},
        names=("absent.json", "S3FS_ENVIRONMENT_JSON"),
    ),
    C(
        "dotenv-bad-line",
        {},
        names=(".env", "line 2"),
        files={"cwd/.env": f"S3FS_URL=http://127.0.0.1:1\nthis is not {SECRET}\n"},
    ),
    C(
        "dotenv-overrides-to-invalid",
        {"S3FS_BUCKET": UNSET},
        names=("S3FS_BUCKET", ".env"),
        files={"cwd/.env": "S3FS_BUCKET=Not_Valid\n"},
    ),
    C(
        "all-required-missing",
        {n: UNSET for n in ("S3FS_BUCKET", "S3FS_MOUNTPOINT", "S3FS_ACCESSKEY", "S3FS_SECRETKEY")},
        # the keys are one problem: "set them, or S3FS_CREDENTIALS=aws"
        names=(
            "S3FS_BUCKET",
            "S3FS_MOUNTPOINT",
            "S3FS_ACCESSKEY",
            "S3FS_SECRETKEY",
            "S3FS_CREDENTIALS=aws",
            "3 config",
        ),
    ),
    # --- usage (64)
    C("flag-unknown", args=("--bogus",), names=("--bogus",), code=64),
    C("flag-backend-bogus", args=("--backend", "goofys"), names=("--backend",), code=64),
    C("flag-env-file-missing", args=("--env-file", "nope.env"), names=("--env-file",), code=64),
    C("flag-json-alone", args=("--json",), names=("--json", "--check"), code=64),
    C("flag-check-and-dry-run", args=("--check", "--dry-run"), names=("--check",), code=64),
    C(
        "flag-environment-json-missing",
        args=("--environment-json", "/nonexistent/env.json"),
        names=("--environment-json",),
        code=64,
    ),
    C("flag-positional", args=("mybucket",), names=("unexpected",), code=64),
]


def base_env(tmp: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp / "home"),
        "LANG": "C.UTF-8",
        "S3FS_BUCKET": "matrix-bucket",
        "S3FS_MOUNTPOINT": str(tmp / "mnt"),
        "S3FS_ACCESSKEY": ACCESS,
        "S3FS_SECRETKEY": SECRET,
        "S3FS_PASSWD_FILE": str(tmp / "private" / "passwd"),
        "S3FS_ENVIRONMENT_JSON": str(tmp / "environment.json"),
    }


def test_matrix_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, sandbox: Path) -> None:
    env = base_env(sandbox)
    for name, value in case.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value.replace("{tmp}", str(sandbox))
    for rel, text in case.files.items():
        (sandbox / rel).write_text(text)
    before = snapshot(sandbox)

    done = run_cli(sandbox, env, *case.args)

    out = done.stdout + done.stderr
    assert done.returncode == case.code, out
    for name in case.names:
        assert name in done.stderr, f"{name!r} not named in: {done.stderr}"
    for secret in SECRETS:
        assert secret not in out
    assert "Traceback" not in out
    assert done.stderr.startswith("run-s3fs: error: "), done.stderr
    assert snapshot(sandbox) == before


def test_every_problem_reported_once_each(sandbox: Path) -> None:
    """Several independent mistakes: one run lists all of them, one line each."""
    env = base_env(sandbox)
    env.update(
        S3FS_BUCKET="Bad_Bucket",
        S3FS_MOUNTPOINT="relative",
        S3FS_URL="gopher://x",
        S3FS_LOGLEVEL="chatty",
        S3FS_SECRETKEY=BAD_SECRET_TAB,
    )
    done = run_cli(sandbox, env)
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    for name in ("S3FS_BUCKET", "S3FS_MOUNTPOINT", "S3FS_URL", "S3FS_LOGLEVEL", "S3FS_SECRETKEY"):
        assert sum(name in line for line in lines) == 1, done.stderr
    assert lines[-1] == "run-s3fs: error: 5 configuration problems; nothing was changed"
    assert all(line.startswith("run-s3fs: error: ") for line in lines)


def test_environment_json_problem_names_file_without_content(sandbox: Path) -> None:
    bad = sandbox / "environment.json"
    bad.write_text(json.dumps({"S3FS_SECRETKEY": SECRET})[:-1])  # truncated
    done = run_cli(sandbox, base_env(sandbox))
    assert done.returncode == 78
    assert str(bad) in done.stderr
    assert SECRET not in done.stderr

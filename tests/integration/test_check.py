"""`run-s3fs --check` against real S3 servers (moto): what it reports and how it exits.

Credential cases need a server that checks signatures: a second moto server is started
with IAM authentication switched on after the setup (an IAM user, its policy and access
key, the buckets) has been created through moto's own API.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, AuthMoto, auth_moto, is_mounted

from run_s3fs.devserver import S3Server, free_port

pytestmark = pytest.mark.integration

ALLOWED_BUCKET = "check-allowed"
OTHER_BUCKET = "check-other"  # exists, but the IAM user's policy does not cover it


@dataclass
class Checked:
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> dict:
        return json.loads(self.out)

    def items(self) -> dict[str, dict]:
        return {i["name"]: i for i in self.json()["items"]}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    """A moto server that validates credentials against IAM users it knows; its user
    may use ALLOWED_BUCKET only."""
    with auth_moto(
        tmp_path_factory.mktemp("moto-auth"),
        {ALLOWED_BUCKET: {"reports/2024/q1.csv": b"a,b\n"}, OTHER_BUCKET: {}},
        allowed_bucket=ALLOWED_BUCKET,
    ) as auth:
        yield auth


def _clean_environ() -> dict[str, str]:
    """This process's environment without anything that would configure the check."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("S3FS_", "AWS_"))}


def run_check(
    variables: dict[str, str], cwd: Path, *flags: str, secrets: tuple[str, ...] = ()
) -> Checked:
    """`python -m run_s3fs --check [flags]` with exactly `variables`; asserts no secret leaks."""
    env = {**_clean_environ(), **variables}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "run_s3fs", "--check", *flags],
        env=env,
        cwd=cwd,  # no stray .env file is picked up
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - started
    for secret in (*secrets, variables.get("S3FS_SECRETKEY"), variables.get("S3FS_ACCESSKEY")):
        if secret:
            assert secret not in proc.stdout and secret not in proc.stderr, "a key leaked"
    assert "Traceback" not in proc.stderr, proc.stderr
    return Checked(proc.returncode, proc.stdout, proc.stderr, seconds)


def variables(
    server: S3Server, bucket: str, tmp_path: Path, access_key: str, secret_key: str
) -> dict[str, str]:
    return {
        "S3FS_BUCKET": bucket,
        "S3FS_MOUNTPOINT": str(tmp_path / "mnt"),
        "S3FS_ACCESSKEY": access_key,
        "S3FS_SECRETKEY": secret_key,
        "S3FS_URL": server.url,
        "S3FS_PASSWD_FILE": str(tmp_path / "passwd-s3fs"),
    }


def failed(result: Checked) -> dict[str, dict]:
    return {name: i for name, i in result.items().items() if i["status"] == "FAIL"}


# --- credentials (IAM-checking server) -----------------------------------------------------


def test_good_credentials_every_item_ok(auth_server: AuthMoto, tmp_path: Path) -> None:
    a = auth_server
    env = variables(a.server, ALLOWED_BUCKET, tmp_path, a.access_key, a.secret_key)
    result = run_check(env, tmp_path, "--json", secrets=(a.secret_key,))
    assert result.code == 0, result.out
    doc = result.json()
    assert doc["exit_code"] == 0
    not_ok = [i for i in doc["items"] if i["status"] != "ok"]
    assert not not_ok, not_ok
    names = {i["name"] for i in doc["items"]}
    assert {"S3FS_BUCKET", "S3FS_MOUNTPOINT", "S3FS_ACCESSKEY", "S3FS_SECRETKEY"} <= names
    assert {"backend", "/dev/fuse", "mountpoint", "endpoint", "bucket", "listing"} <= names
    # The keys are shown redacted: the first four characters and the length only.
    shown = result.items()["S3FS_SECRETKEY"]["value"]
    assert shown.startswith(a.secret_key[:4]) and str(len(a.secret_key)) in shown
    assert result.items()["S3FS_BUCKET"]["source"] == "environment"

    text = run_check(env, tmp_path, secrets=(a.secret_key,))
    assert text.code == 0
    assert "a mount would work" in text.out


def test_unknown_access_key(auth_server: AuthMoto, tmp_path: Path) -> None:
    a = auth_server
    env = variables(a.server, ALLOWED_BUCKET, tmp_path, "AKIANOSUCHKEY0000000", a.secret_key)
    result = run_check(env, tmp_path, secrets=(a.secret_key,))
    assert result.code == 77, result.out
    assert "InvalidAccessKeyId" in result.out
    assert "S3FS_ACCESSKEY" in result.out  # the advice names what to fix


def test_wrong_secret_key(auth_server: AuthMoto, tmp_path: Path) -> None:
    a = auth_server
    wrong = "x" * 40
    env = variables(a.server, ALLOWED_BUCKET, tmp_path, a.access_key, wrong)
    result = run_check(env, tmp_path, "--json", secrets=(a.secret_key,))
    assert result.code == 77, result.out
    bad = failed(result)
    assert list(bad) == ["bucket"], bad
    assert "SignatureDoesNotMatch" in bad["bucket"]["value"]
    assert "S3FS_SECRETKEY" in bad["bucket"]["advice"]


def test_key_without_permission_on_bucket(auth_server: AuthMoto, tmp_path: Path) -> None:
    a = auth_server
    env = variables(a.server, OTHER_BUCKET, tmp_path, a.access_key, a.secret_key)
    result = run_check(env, tmp_path, secrets=(a.secret_key,))
    assert result.code == 77, result.out
    assert "AccessDenied" in result.out
    assert f"arn:aws:s3:::{OTHER_BUCKET}" in result.out  # says what to grant


# --- the endpoint and the bucket (plain server) ---------------------------------------------


def test_missing_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    name = f"no-such-{uuid.uuid4().hex[:8]}"
    env = variables(s3_server, name, tmp_path, ACCESS_KEY, SECRET_KEY)
    result = run_check(env, tmp_path, "--json")
    assert result.code == 77, result.out
    bad = failed(result)
    assert list(bad) == ["bucket"]
    assert "NoSuchBucket" in bad["bucket"]["value"]
    assert name in bad["bucket"]["advice"] and "S3FS_BUCKET" in bad["bucket"]["advice"]


def test_wrong_region_names_the_right_one(s3_server: S3Server, s3, tmp_path: Path) -> None:
    name = f"eu-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    env = variables(s3_server, name, tmp_path, ACCESS_KEY, SECRET_KEY)
    result = run_check({**env, "S3FS_REGION": "us-west-2"}, tmp_path)
    assert result.code == 78, result.out
    assert "S3FS_REGION=eu-west-1" in result.out

    right = run_check({**env, "S3FS_REGION": "eu-west-1"}, tmp_path)
    assert right.code == 0, right.out


def test_unreachable_endpoint_is_69_and_quick(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it once the probe socket is closed
    result = run_check(endpoint_only(f"http://127.0.0.1:{port}", tmp_path), tmp_path, "--json")
    assert result.code == 69, result.out
    assert result.seconds < 20
    bad = failed(result)
    assert list(bad) == ["endpoint"]
    assert "refused" in bad["endpoint"]["value"]
    assert "S3FS_URL" in bad["endpoint"]["advice"]


def endpoint_only(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "S3FS_BUCKET": "anything",
        "S3FS_MOUNTPOINT": str(tmp_path / "mnt"),
        "S3FS_ACCESSKEY": ACCESS_KEY,
        "S3FS_SECRETKEY": SECRET_KEY,
        "S3FS_URL": url,
    }


def test_https_to_a_plain_http_server(s3_server: S3Server, tmp_path: Path) -> None:
    result = run_check(endpoint_only(f"https://127.0.0.1:{s3_server.port}", tmp_path), tmp_path)
    assert result.code == 69, result.out
    assert "TLS handshake failed" in result.out and "http://" in result.out


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[int]:
    """An HTTPS server whose certificate nobody trusts; yields its port."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_untrusted_certificate(self_signed_server: int, tmp_path: Path) -> None:
    result = run_check(endpoint_only(f"https://127.0.0.1:{self_signed_server}", tmp_path), tmp_path)
    assert result.code == 69, result.out
    assert "TLS certificate not trusted" in result.out


def test_silent_endpoint_times_out_within_the_bound(tmp_path: Path) -> None:
    # Accepts connections (the kernel's backlog does) and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run_check(endpoint_only(url, tmp_path), tmp_path, "--json")
    assert result.code == 69, result.out
    assert result.seconds < 20
    assert "timed out" in failed(result)["endpoint"]["value"]


def test_prefix_that_has_nothing_yet_warns(s3_server: S3Server, bucket: str, tmp_path: Path):
    env = variables(s3_server, f"{bucket}:/not/there", tmp_path, ACCESS_KEY, SECRET_KEY)
    result = run_check(env, tmp_path, "--json")
    assert result.code == 0, result.out
    assert result.items()["listing"]["status"] == "warn"


# --- configuration ------------------------------------------------------------------------------


def test_config_errors_are_78_and_name_the_variables(s3_server: S3Server, tmp_path: Path):
    env = {
        "S3FS_BUKET": "a-typo",
        "S3FS_MOUNTPOINT": "relative/path",
        "S3FS_ACCESSKEY": ACCESS_KEY,
        "S3FS_SECRETKEY": SECRET_KEY,
        "S3FS_URL": s3_server.url,
    }
    result = run_check(env, tmp_path, "--json")
    assert result.code == 78, result.out
    bad = failed(result)
    assert {"S3FS_BUCKET", "S3FS_MOUNTPOINT"} <= set(bad), bad
    assert all(i["advice"] for i in bad.values())
    typo = result.items()["S3FS_BUKET"]
    assert typo["status"] == "warn" and "S3FS_BUCKET" in typo["advice"]
    # Nothing is probed with a broken configuration.
    assert result.items()["S3 bucket"]["status"] == "skip"

    text = run_check(env, tmp_path)
    assert text.code == 78
    for name in ("S3FS_BUCKET", "S3FS_MOUNTPOINT"):
        line = next(x for x in text.out.splitlines() if name in x)
        assert "FAIL" in line


def test_config_error_outranks_an_unreachable_endpoint(tmp_path: Path) -> None:
    env = {
        "S3FS_MOUNTPOINT": str(tmp_path / "mnt"),
        "S3FS_ACCESSKEY": ACCESS_KEY,
        "S3FS_SECRETKEY": SECRET_KEY,
        "S3FS_URL": f"http://127.0.0.1:{free_port()}",
    }
    assert run_check(env, tmp_path).code == 78


def test_secret_from_file_names_the_file(s3_server: S3Server, bucket: str, tmp_path: Path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET_KEY + "\n")
    env = variables(s3_server, bucket, tmp_path, ACCESS_KEY, SECRET_KEY)
    del env["S3FS_SECRETKEY"]
    env["S3FS_SECRETKEY_FILE"] = str(secret_file)
    result = run_check(env, tmp_path, "--json", secrets=(SECRET_KEY,))
    assert result.code == 0, result.out
    assert str(secret_file) in result.items()["S3FS_SECRETKEY"]["source"]


def test_dotenv_source_is_reported(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    env = variables(s3_server, bucket, tmp_path, ACCESS_KEY, SECRET_KEY)
    dotenv = tmp_path / "s3fs.env"
    dotenv.write_text(f"S3FS_BUCKET={bucket}\n")
    del env["S3FS_BUCKET"]
    result = run_check(env, tmp_path, "--json", "--env-file", str(dotenv))
    assert result.code == 0, result.out
    assert str(dotenv) in result.items()["S3FS_BUCKET"]["source"]


def test_environment_json_source_is_reported(s3_server: S3Server, bucket: str, tmp_path: Path):
    env = variables(s3_server, bucket, tmp_path, ACCESS_KEY, SECRET_KEY)
    dotcloud = tmp_path / "environment.json"
    dotcloud.write_text(json.dumps({"S3FS_BUCKET": bucket, "DOTCLOUD_SERVICE_NAME": "www"}))
    del env["S3FS_BUCKET"]
    result = run_check(env, tmp_path, "--json", "--environment-json", str(dotcloud))
    assert result.code == 0, result.out
    assert result.items()["S3FS_BUCKET"]["source"] == f"environment.json ({dotcloud})"


# --- the mountpoint -----------------------------------------------------------------------------


def test_mountpoint_that_is_a_file_is_73(s3_server: S3Server, bucket: str, tmp_path: Path):
    env = variables(s3_server, bucket, tmp_path, ACCESS_KEY, SECRET_KEY)
    Path(env["S3FS_MOUNTPOINT"]).write_text("in the way")
    result = run_check(env, tmp_path, "--json")
    assert result.code == 73, result.out
    assert list(failed(result)) == ["mountpoint"]


def test_nonempty_mountpoint_is_73_unless_nonempty_is_asked_for(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    env = variables(s3_server, bucket, tmp_path, ACCESS_KEY, SECRET_KEY)
    Path(env["S3FS_MOUNTPOINT"]).mkdir()
    (Path(env["S3FS_MOUNTPOINT"]) / "local.txt").write_text("would be hidden")
    refused = run_check(env, tmp_path, "--json")
    assert refused.code == 73, refused.out
    assert "nonempty" in failed(refused)["mountpoint"]["advice"]

    allowed = run_check({**env, "S3FS_OPTIONS": "nonempty"}, tmp_path, "--json")
    assert allowed.code == 0, allowed.out
    assert allowed.items()["mountpoint"]["status"] == "warn"


def test_stale_mount_is_a_warning_it_will_be_cleaned(
    s3_server: S3Server, bucket: str, tmp_path: Path, mounter
) -> None:
    mount = mounter("s3fs", bucket)
    mount.process.kill()  # a crash: the mount stays, "Transport endpoint is not connected"
    mount.process.wait()
    assert is_mounted(mount.path)
    env = variables(s3_server, bucket, tmp_path, ACCESS_KEY, SECRET_KEY)
    env["S3FS_MOUNTPOINT"] = str(mount.path)
    result = run_check(env, tmp_path, "--json")
    assert result.code == 0, result.out
    item = result.items()["mountpoint"]
    assert item["status"] == "warn" and "unmount" in item["advice"]


def test_live_mount_is_73_and_names_the_pid(
    s3_server: S3Server, bucket: str, tmp_path: Path, mounter
) -> None:
    mount = mounter("s3fs", bucket)
    assert is_mounted(mount.path)
    env = variables(s3_server, bucket, tmp_path, ACCESS_KEY, SECRET_KEY)
    env["S3FS_MOUNTPOINT"] = str(mount.path)
    result = run_check(env, tmp_path, "--json")
    assert result.code == 73, result.out
    item = result.items()["mountpoint"]
    assert item["status"] == "FAIL" and str(mount.process.pid) in item["value"]


# --- output formats -----------------------------------------------------------------------------


def test_json_and_text_report_the_same_items(s3_server: S3Server, tmp_path: Path) -> None:
    env = variables(s3_server, "no-such-bucket-here", tmp_path, ACCESS_KEY, SECRET_KEY)
    as_json = run_check(env, tmp_path, "--json")
    as_text = run_check(env, tmp_path)
    assert as_json.code == as_text.code == as_json.json()["exit_code"] == 77
    lines = as_text.out.splitlines()
    for item in as_json.json()["items"]:
        assert set(item) == {"name", "status", "value", "source", "advice"}
        line = next(x for x in lines if item["name"] in x and item["status"] in x)
        assert item["value"].split(" ")[0] in line
        if item["status"] != "ok" and item["advice"]:
            assert item["advice"] in as_text.out

"""Temporary credentials over their real wire protocols on loopback: IMDS (v2, v1), the
container endpoint, STS (moto) for web identity and assume-role profiles; refresh ahead
of expiry; an authenticating moto that refuses wrong and revoked keys for real."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from credservers import Issuer, MotoIssuer, iam_moto, start_container, start_imds

from run_s3fs import awscreds
from run_s3fs.awscreds import CredentialError, classify, open_source
from run_s3fs.devserver import free_port
from run_s3fs.fs import credentials
from run_s3fs.fs.engine import EngineSettings, S3Error, open_engine

ACCESS = "AKIATEMPTEMPTEMP1234"
SECRET = "tEmPsEcReT/0123456789abcdefghijklmnopqr"
ROLE = "arn:aws:iam::123456789012:role/app"


def secrets_absent(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


@pytest.fixture
def imds():
    servers = []

    def start(issuer: Issuer | None = None, **kwargs):
        server = start_imds(issuer or Issuer(ACCESS, SECRET), **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# --- IMDS -------------------------------------------------------------------------------


def test_imds_v2_token_then_role_then_credentials(imds) -> None:
    server = imds()
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url}
    source = open_source(classify(env, imds=True), env)
    creds = source.get()
    assert (creds.access_key, creds.secret_key) == (ACCESS, SECRET)
    assert creds.session_token and creds.expiry and creds.expiry > time.time() + 3000
    assert server.requests[:3] == [
        "PUT /latest/api/token",
        "GET /latest/meta-data/iam/security-credentials/",
        "GET /latest/meta-data/iam/security-credentials/app-role",
    ]
    text = source.describe()
    assert text.startswith(f"instance profile: IMDS {server.url}")
    assert "credentials expire in 60 min" in text
    secrets_absent(text, SECRET, creds.session_token)


def test_imds_named_role_and_v1_fallback(imds) -> None:
    server = imds(v1_only=True)
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url}
    source = open_source(classify(env, imds=True, imds_role="app-role"), env)
    assert source.get().access_key == ACCESS
    # no role listing: the name was given; the GET went without a token
    assert server.requests == [
        "PUT /latest/api/token",
        "GET /latest/meta-data/iam/security-credentials/app-role",
    ]


def test_imds_wrong_role_name(imds) -> None:
    server = imds()
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url}
    with pytest.raises(CredentialError, match="no IAM role named other"):
        open_source(classify(env, imds=True, imds_role="other"), env)


def test_imds_unreachable_advises_the_hop_limit() -> None:
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(CredentialError) as caught:
        open_source(classify(env), env)
    assert "no answer from IMDS" in caught.value.reason
    assert "hop limit" in caught.value.advice
    assert caught.value.exit_code == 69


# --- container --------------------------------------------------------------------------


def test_container_full_uri_with_token_file(tmp_path: Path) -> None:
    server = start_container(Issuer(ACCESS, SECRET), token="pod-identity-token-secret")
    try:
        token_file = tmp_path / "token"
        token_file.write_text("pod-identity-token-secret\n")
        env = {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": server.url + server.path,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
        }
        found = classify(env)
        assert found.kind == "container" and not found.s3fs_can
        source = open_source(found, env)
        assert source.get().secret_key == SECRET
        text = source.describe()
        assert f"token file {token_file}" in text
        secrets_absent(text, "pod-identity-token-secret", SECRET)

        token_file.write_text("wrong")
        with pytest.raises(CredentialError, match="authorization token was refused"):
            awscreds.fetch_container(env)
        token_file.unlink()
        with pytest.raises(CredentialError, match=r"token file .* cannot be read") as caught:
            awscreds.fetch_container(env)
        assert "pod-identity-token-secret" not in str(caught.value)
    finally:
        server.close()


def test_relative_uri_without_token_is_what_s3fs_can_do() -> None:
    env = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"}
    found = classify(env)
    assert found.kind == "container" and found.s3fs_can
    assert found.detail == "http://169.254.170.2/v2/credentials/x"


# --- STS: web identity and assume-role profiles (moto) -----------------------------------


def test_web_identity_through_moto_sts(s3_server, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("eyJ.web-identity-token.secret")
    env = {
        "AWS_ROLE_ARN": ROLE,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ENDPOINT_URL_STS": s3_server.url,
    }
    found = classify(env)
    assert found.kind == "web identity" and not found.s3fs_can
    source = open_source(found, env)
    creds = source.get()
    assert creds.access_key.startswith("ASIA") and creds.session_token
    text = source.describe()
    assert text == (
        f"web identity: role {ROLE}, token file {token_file}, credentials expire in 60 min"
    )
    secrets_absent(text, "web-identity-token", creds.secret_key, creds.session_token)
    # and they work against S3
    client = s3_server.client(creds.access_key, creds.secret_key)
    client.list_buckets()


def test_web_identity_token_file_missing(tmp_path: Path) -> None:
    env = {"AWS_ROLE_ARN": ROLE, "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "nope")}
    with pytest.raises(CredentialError) as caught:
        open_source(classify(env), env)
    assert "cannot be read" in caught.value.reason and caught.value.exit_code == 78


def write_aws_files(home: Path, config: str, credentials_text: str = "") -> None:
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    (home / ".aws" / "config").write_text(config)
    (home / ".aws" / "credentials").write_text(credentials_text)


def test_assume_role_profile_through_moto_sts(s3_server, tmp_path, monkeypatch) -> None:
    write_aws_files(
        tmp_path,
        f"[profile app]\nrole_arn = {ROLE}\nsource_profile = base\nregion = us-east-1\n",
        f"[base]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n",
    )
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_PROFILE", "app")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_server.url)
    found = classify(os.environ)
    assert found.kind == "profile" and found.profile == "app"
    assert found.detail == f"app (assumes role {ROLE}, source base)"
    source = open_source(found, os.environ)
    creds = source.get()
    assert creds.access_key.startswith("ASIA") and creds.expiry
    assert "credentials expire in 60 min" in source.describe()


def test_credential_process_profile(tmp_path, monkeypatch) -> None:
    script = tmp_path / "issue.py"
    script.write_text(
        "import json\n"
        f"print(json.dumps({{'Version': 1, 'AccessKeyId': '{ACCESS}', "
        f"'SecretAccessKey': '{SECRET}', 'SessionToken': 'proc-token', "
        "'Expiration': '2099-01-01T00:00:00Z'}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    write_aws_files(tmp_path, f"[default]\ncredential_process = {sys.executable} {script}\n")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    source = open_source(classify(os.environ), os.environ)
    creds = source.get()
    assert (creds.access_key, creds.session_token) == (ACCESS, "proc-token")


def test_profile_not_found(tmp_path) -> None:
    write_aws_files(tmp_path, "[default]\nregion = eu-west-1\n")
    env = {"HOME": str(tmp_path), "AWS_PROFILE": "missing"}
    with pytest.raises(CredentialError, match="profile missing not found") as caught:
        classify(env)
    assert caught.value.exit_code == 78


# --- refresh ------------------------------------------------------------------------------


def test_refreshed_ahead_of_expiry_without_waiting(imds) -> None:
    server = imds(Issuer(ACCESS, SECRET, lifetime=4), delay=0.4)  # a slow IMDS
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url}
    source = open_source(classify(env, imds=True), env)
    tokens, slowest = set(), 0.0
    deadline = time.time() + 7
    while time.time() < deadline:
        t = time.monotonic()
        creds = source.get()
        slowest = max(slowest, time.monotonic() - t)
        assert creds.expiry and creds.expiry > time.time()  # never handed out expired
        tokens.add(creds.session_token)
        time.sleep(0.01)
    # 4 s credentials, refreshed at half-life: at least 3 in 7 s, fetched in the background
    # (a fetch takes 0.4 s: no get() waited for one)
    assert server.credential_fetches() >= 3 and len(tokens) >= 3
    assert slowest < 0.2


def test_invalidate_fetches_new_ones_once(imds) -> None:
    server = imds()
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url}
    source = open_source(classify(env, imds=True), env)
    first = source.get()
    assert not source.invalidate(first)  # just fetched: not about their age
    time.sleep(awscreds._RECENT + 0.1)
    assert source.invalidate(first)
    second = source.get()
    assert second.session_token != first.session_token
    assert source.invalidate(first)  # already replaced: no new fetch
    assert server.credential_fetches() == 2


# --- for real: an authenticating server -----------------------------------------------------


@pytest.fixture(scope="module")
def authmoto(tmp_path_factory):
    with iam_moto(tmp_path_factory.mktemp("iam-moto")) as server:
        yield server


def engine_for(authmoto, source):
    settings = EngineSettings(
        bucket=authmoto.bucket,
        url=authmoto.server.url,
        region="us-east-1",
        path_style=True,
        retries=1,
        connect_timeout=3,
        readwrite_timeout=10,
    )
    return open_engine(settings, source)


def test_wrong_keys_are_refused(authmoto) -> None:
    wrong = credentials.StaticSource(credentials.Credentials(ACCESS, SECRET, source="test"))
    engine = engine_for(authmoto, wrong)
    try:
        with pytest.raises(S3Error) as caught:
            engine.list_page("", max_keys=1)
        assert caught.value.errno == errno.EACCES and caught.value.code == "InvalidAccessKeyId"
    finally:
        engine.close()


def test_revoked_credentials_are_refused_then_replaced(authmoto, imds) -> None:
    """The issued key is deleted 3 s into a 60 s life: S3 refuses it for real; the engine
    asks the source for new credentials and the request succeeds."""
    issuer = MotoIssuer(authmoto.server, authmoto.client("iam"), lifetime=60, revoke_after=3)
    server = imds(issuer)
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url}
    source = open_source(classify(env, imds=True), env)
    engine = engine_for(authmoto, source)
    try:
        engine.put("k", b"data", {}, "text/plain")
        first = source.get()
        assert _wait(lambda: first.access_key in issuer.revoked, 10)
        # still "valid" by its expiry, but refused: one retry with fresh ones
        assert engine.get_range("k", 0, 4) == b"data"
        assert engine.head("k") is not None
        assert source.get().access_key != first.access_key
        assert server.credential_fetches() >= 2
        # a revoked key alone, with nothing to refresh, is refused for real
        stale = credentials.StaticSource(first)
        other = engine_for(authmoto, stale)
        try:
            with pytest.raises(S3Error) as caught:
                other.list_page("", max_keys=1)
            assert caught.value.errno == errno.EACCES
        finally:
            other.close()
    finally:
        engine.close()


def _wait(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_wrong_session_token_is_refused(authmoto) -> None:
    """moto's STS credentials carry a session token that moto checks for real."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    authmoto.client("iam").create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(trust))
    sts = authmoto.client("sts")
    issued = sts.assume_role(RoleArn=ROLE, RoleSessionName="test")["Credentials"]
    good = credentials.Credentials(
        issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"], "sts"
    )
    engine = engine_for(authmoto, credentials.StaticSource(good))
    try:
        with pytest.raises(S3Error) as caught:  # the role may do nothing
            engine.list_page("", max_keys=1)
        assert caught.value.code == "AccessDenied"
    finally:
        engine.close()
    bad = credentials.Credentials(good.access_key, good.secret_key, "forged-token", "sts")
    engine = engine_for(authmoto, credentials.StaticSource(bad))
    try:
        with pytest.raises(S3Error) as caught:
            engine.list_page("", max_keys=1)
        assert caught.value.errno == errno.EACCES and caught.value.code == "InvalidToken"
    finally:
        engine.close()


def test_a_failed_refresh_keeps_the_current_credentials_until_they_expire(imds, caplog) -> None:
    """IMDS goes away after the first fetch: get() goes on handing out the credentials it
    has (they are still valid), warns, and tries again later; only once they have expired
    does it raise."""
    # (Long enough that the refresh, due at half of it, fails well before the deadline
    # below on a busy machine too.)
    server = imds(Issuer(ACCESS, SECRET, lifetime=5))
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url}
    source = open_source(classify(env, imds=True), env)
    first = source.get()
    server.close()
    deadline = first.expiry - 0.5
    while time.time() < deadline:
        assert source.get() is first
        time.sleep(0.05)
    assert "refreshing the credentials failed" in caplog.text
    time.sleep(max(0.0, first.expiry - time.time()) + 0.1)
    with pytest.raises(CredentialError, match="no answer from IMDS"):
        source.get()


def test_no_credentials_to_be_had_is_an_eio_with_the_reason(imds, s3_server, bucket) -> None:
    server = imds(Issuer(ACCESS, SECRET, lifetime=1.5))
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url}
    source = open_source(classify(env, imds=True), env)
    server.close()
    time.sleep(1.6)
    settings = EngineSettings(bucket=bucket, url=s3_server.url, region="us-east-1", path_style=True)
    engine = open_engine(settings, source)
    try:
        with pytest.raises(S3Error) as caught:
            engine.list_page("", max_keys=1)
        assert caught.value.errno == errno.EIO
        assert "no valid credentials" in str(caught.value) and "IMDS" in str(caught.value)
    finally:
        engine.close()

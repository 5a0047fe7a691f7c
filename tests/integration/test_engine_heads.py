"""The engine's HEAD lane (run_s3fs/fs/engine/heads.py) against real servers: signatures
a checking server accepts, keep-alive connections, https with certificate checks, and
the answers it leaves to the CRT path."""

from __future__ import annotations

import errno
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import AuthMoto, auth_moto
from engine_support import make_engine
from faultproxy import FaultProxy, FaultRates

from run_s3fs.fs.credentials import Credentials
from run_s3fs.fs.engine import EngineSettings, S3Error, open_engine

BUCKET = "lane-bucket"
# Keys whose request paths need percent-encoding, each a way to get a signature wrong.
ODD_KEYS = ["a b/ü+%#?&=.txt", "日本/語~!$'()*,;@.bin", "trailing space ", "x" * 900]


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    objects = {key: b"abc" for key in [*ODD_KEYS, "plain"]}
    with auth_moto(
        tmp_path_factory.mktemp("moto-auth"), {BUCKET: objects}, allowed_bucket=BUCKET
    ) as server:
        yield server


def _engine(url: str, access: str, secret: str, **overrides):
    settings = dict(
        bucket=BUCKET, url=url, region="us-east-1", path_style=True, retries=1,
        connect_timeout=3, readwrite_timeout=10,
    )  # fmt: skip
    settings.update(overrides)
    return open_engine(EngineSettings(**settings), Credentials(access, secret))


def test_a_checking_server_accepts_the_lanes_signatures(auth: AuthMoto) -> None:
    engine = _engine(auth.server.url, auth.access_key, auth.secret_key)
    try:
        for key in [*ODD_KEYS, "plain"]:
            info = engine.head(key)
            assert info is not None and info.size == 3, key
        assert engine.head("missing") is None
        # Answered on the lane itself, not by the CRT path after a refusal.
        assert engine._lane.stats["sent"] == len(ODD_KEYS) + 2
        assert engine._lane.stats["handed_back"] == 0
    finally:
        engine.close()


def test_signed_request_headers_are_accepted(auth: AuthMoto) -> None:
    engine = _engine(
        auth.server.url,
        auth.access_key,
        auth.secret_key,
        request_headers=(("x-amz-request-payer", "requester"),),
    )
    try:
        assert engine.head("plain").size == 3
        assert engine._lane.stats["handed_back"] == 0
    finally:
        engine.close()


def test_a_refused_signature_is_eacces_and_tells_no_secret(auth: AuthMoto) -> None:
    secret = "wrongsecretwrongsecretwrongsecret0123456"
    engine = _engine(auth.server.url, auth.access_key, secret)
    try:
        with pytest.raises(S3Error) as e:
            engine.head("plain")
        assert e.value.errno == errno.EACCES
        assert secret not in str(e.value)
        assert engine._lane.stats["handed_back"] == 1  # the CRT path's rules decided
    finally:
        engine.close()


def test_heads_share_kept_alive_connections(s3_server, s3, bucket) -> None:
    for i in range(50):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x" * i, Metadata={"mode": "33188"})
    proxy = FaultProxy(s3_server.url).start()  # HTTP/1.1 with keep-alive, as S3 is
    engine = make_engine(proxy.url, bucket)
    try:
        for _ in range(3):
            futures = [engine.head_async(f"k{i}") for i in range(50)]
            infos = [f.result(timeout=20) for f in futures]
            assert [i.size for i in infos] == list(range(50))
            assert all(i.metadata == {"mode": "33188"} for i in infos)
        stats = engine._lane.stats
        assert stats["sent"] == 150 and stats["handed_back"] == 0
        assert stats["connections"] <= 50  # the second and third rounds made none
    finally:
        engine.close()
        proxy.stop()


def test_resets_are_retried_within_retries(s3_server, s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"payload")
    proxy = FaultProxy(s3_server.url, FaultRates(reset=1.0)).start()
    engine = make_engine(proxy.url, bucket, retries=2)
    try:
        with pytest.raises(S3Error) as e:
            engine.head("f")
        assert e.value.errno == errno.EIO
        assert proxy.stats.reset == 3  # the first try and two retries, nothing more
        proxy.set_rates(FaultRates())
        assert engine.head("f").size == 7
    finally:
        engine.close()
        proxy.stop()


def test_a_head_first_follows_the_buckets_region(s3_server, s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"payload")
    proxy = FaultProxy(s3_server.url, region="eu-west-3").start()
    engine = make_engine(proxy.url, bucket, region="us-east-1")
    try:
        assert engine.head("f").size == 7
        assert engine.get_range("f", 0, 7) == b"payload"
        assert proxy.stats.wrong_region == 1
        assert engine._lane.stats["handed_back"] == 0
    finally:
        engine.close()
        proxy.stop()


@pytest.fixture
def tls_proxy(s3_server, tmp_path: Path) -> Iterator[tuple[FaultProxy, str, Path]]:
    """The fault proxy (no faults) serving https with a self-signed certificate for
    127.0.0.1; yields it, its https URL and the certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy = FaultProxy(s3_server.url)
    proxy._server.socket = context.wrap_socket(proxy._server.socket, server_side=True)
    proxy.start()
    yield proxy, proxy.url.replace("http://", "https://"), cert
    proxy.stop()


def test_https_with_the_mounts_certificate_checks(tls_proxy, s3, bucket) -> None:
    _proxy, url, cert = tls_proxy
    s3.put_object(Bucket=bucket, Key="f", Body=b"payload")
    trusting = make_engine(url, bucket, ca_file=str(cert))
    unchecked = make_engine(url, bucket, verify_tls=False)
    default = make_engine(url, bucket, retries=0)
    try:
        assert trusting.head("f").size == 7
        assert trusting.head("missing") is None
        assert unchecked.head("f").size == 7
        assert trusting._lane.stats["handed_back"] == unchecked._lane.stats["handed_back"] == 0
        with pytest.raises(S3Error) as e:  # a certificate nobody said to trust
            default.head("f")
        assert e.value.errno == errno.EIO and "certificate" in str(e.value).lower()
    finally:
        for engine in (trusting, unchecked, default):
            engine.close()

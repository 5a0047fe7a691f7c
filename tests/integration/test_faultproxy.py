"""The fault-injecting proxy itself: it forwards faithfully and injects what it is told."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from conftest import ACCESS_KEY, SECRET_KEY
from faultproxy import FaultProxy, FaultRates


@pytest.fixture
def proxy(s3_server):
    p = FaultProxy(s3_server.url, seed=1).start()
    yield p
    p.stop()


def client(url: str, attempts: int = 1):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=2,
            read_timeout=5,
        ),
    )


def test_forwards_requests_faithfully(proxy, bucket, s3) -> None:
    c = client(proxy.url)
    body = bytes(range(256)) * 1000
    c.put_object(Bucket=bucket, Key="a b/ü+%.bin", Body=body, Metadata={"mode": "33188"})
    assert s3.get_object(Bucket=bucket, Key="a b/ü+%.bin")["Body"].read() == body
    head = c.head_object(Bucket=bucket, Key="a b/ü+%.bin")
    assert head["ContentLength"] == len(body)
    assert head["Metadata"] == {"mode": "33188"}
    got = c.get_object(Bucket=bucket, Key="a b/ü+%.bin", Range="bytes=10-19")["Body"].read()
    assert got == body[10:20]
    assert proxy.stats.forwarded == proxy.stats.requests == 3


@pytest.mark.parametrize(
    ("rates", "code"),
    [(FaultRates(error500=1.0), "InternalError"), (FaultRates(slowdown503=1.0), "SlowDown")],
)
def test_injects_error_responses(proxy, bucket, rates, code) -> None:
    proxy.set_rates(rates)
    with pytest.raises(ClientError) as err:
        client(proxy.url).put_object(Bucket=bucket, Key="k", Body=b"x")
    assert err.value.response["Error"]["Code"] == code
    assert proxy.stats.forwarded == 0


def test_injects_resets_and_down(proxy, bucket) -> None:
    proxy.set_rates(FaultRates(reset=1.0))
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        client(proxy.url).list_objects_v2(Bucket=bucket)
    proxy.set_rates(FaultRates())
    proxy.down()
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        client(proxy.url).list_objects_v2(Bucket=bucket)
    proxy.up()
    assert client(proxy.url).list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    # urllib3 may re-send once on a reset connection, so at least one of each.
    assert proxy.stats.reset >= 1 and proxy.stats.refused >= 1


def test_retrying_client_succeeds_through_ten_percent_faults(proxy, bucket, s3) -> None:
    proxy.set_rates(FaultRates(error500=0.04, slowdown503=0.03, reset=0.03))
    c = client(proxy.url, attempts=8)
    for i in range(60):
        c.put_object(Bucket=bucket, Key=f"f{i}", Body=str(i).encode())
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"f{i}" for i in range(60)}
    injected = proxy.stats.error500 + proxy.stats.slowdown503 + proxy.stats.reset
    assert injected > 0

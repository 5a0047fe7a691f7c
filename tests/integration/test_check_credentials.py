"""`run-s3fs --check` with S3FS_CREDENTIALS=aws: it names the source it found (never a
secret), fetches its credentials over the real protocol, probes the bucket with them,
and gives one line of advice per failure."""

from __future__ import annotations

from pathlib import Path

import pytest
from credservers import Issuer, MotoIssuer, iam_moto, start_imds
from test_check import failed, run_check

from run_s3fs.devserver import free_port

pytestmark = pytest.mark.integration
ROLE = "arn:aws:iam::123456789012:role/app"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.web-identity-secret.signature"


def base(server_url: str, bucket: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(tmp_path),
        "S3FS_BUCKET": bucket,
        "S3FS_MOUNTPOINT": str(tmp_path / "mnt"),
        "S3FS_URL": server_url,
        "S3FS_CREDENTIALS": "aws",
        "S3FS_BACKEND": "python",
        **extra,
    }


def test_web_identity_is_named_fetched_and_probed(s3_server, s3, bucket, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    env = base(
        s3_server.url,
        bucket,
        tmp_path,
        AWS_ROLE_ARN=ROLE,
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
        AWS_ENDPOINT_URL_STS=s3_server.url,
    )
    result = run_check(env, tmp_path, "--json", secrets=(TOKEN,))
    items = result.items()
    assert result.code == 0, result.out
    assert items["S3FS_CREDENTIALS"]["value"] == "aws"
    assert "S3FS_ACCESSKEY" not in items and "passwd file" not in items
    assert items["credentials"]["value"] == (
        f"web identity: role {ROLE}, token file {token_file}, credentials expire in 60 min"
    )
    assert items["listing"]["status"] == "ok"
    text = run_check(env, tmp_path, secrets=(TOKEN,))
    assert "credentials" in text.out and "web identity: role" in text.out


def test_imds_unreachable_advises_the_hop_limit(tmp_path) -> None:
    env = base(
        "http://127.0.0.1:9",
        "some-bucket",
        tmp_path,
        AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{free_port()}",
    )
    result = run_check(env, tmp_path, "--json")
    item = failed(result)["credentials"]
    assert "no answer from IMDS" in item["value"] and "hop limit" in item["advice"]
    assert result.code == 69


def test_token_file_missing_and_profile_not_found(tmp_path) -> None:
    env = base(
        "http://127.0.0.1:9",
        "some-bucket",
        tmp_path,
        AWS_ROLE_ARN=ROLE,
        AWS_WEB_IDENTITY_TOKEN_FILE=str(tmp_path / "missing"),
    )
    result = run_check(env, tmp_path, "--json")
    item = failed(result)["credentials"]
    assert "cannot be read" in item["value"] and "projected service account" in item["advice"]
    assert result.code == 78

    env = base("http://127.0.0.1:9", "some-bucket", tmp_path, AWS_PROFILE="nope")
    result = run_check(env, tmp_path, "--json")
    item = failed(result)["credentials"]
    assert "profile nope not found" in item["value"]
    assert result.code == 78


def test_role_not_assumable(tmp_path, tmp_path_factory) -> None:
    """An assume-role profile whose source identity may not assume roles: moto (with IAM
    auth) refuses AssumeRole, AccessDenied. (moto does not check the role's trust policy
    on this path, so the refusal comes from the identity's own policy.)"""
    import json

    with iam_moto(tmp_path_factory.mktemp("iam-moto")) as auth:
        deny = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sts:*"}],
        }
        iam = auth.client("iam")
        iam.create_role(RoleName="locked", AssumeRolePolicyDocument=json.dumps(deny))
        iam.create_user(UserName="s3-only")
        s3_only = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="s3-only", PolicyName="s3", PolicyDocument=json.dumps(s3_only))
        key = iam.create_access_key(UserName="s3-only")["AccessKey"]
        (tmp_path / ".aws").mkdir()
        (tmp_path / ".aws" / "config").write_text(
            "[profile app]\nrole_arn = arn:aws:iam::123456789012:role/locked\n"
            "source_profile = base\nregion = us-east-1\n"
        )
        (tmp_path / ".aws" / "credentials").write_text(
            f"[base]\naws_access_key_id = {key['AccessKeyId']}\n"
            f"aws_secret_access_key = {key['SecretAccessKey']}\n"
        )
        env = base(
            auth.server.url,
            auth.bucket,
            tmp_path,
            AWS_PROFILE="app",
            AWS_ENDPOINT_URL_STS=auth.server.url,
        )
        result = run_check(env, tmp_path, "--json", secrets=(key["SecretAccessKey"],))
        item = failed(result)["credentials"]
        assert "STS refused (AccessDenied)" in item["value"]
        assert "trust policy" in item["advice"]
        assert result.code == 77


def test_keys_and_aws_together_fail_the_configuration(tmp_path) -> None:
    env = base(
        "http://127.0.0.1:9",
        "some-bucket",
        tmp_path,
        S3FS_ACCESSKEY="AKIAXXXXXXXXXXXXXXXX",
        S3FS_SECRETKEY="y" * 40,
    )
    result = run_check(env, tmp_path, "--json")
    assert result.code == 78
    assert any("are both set" in i["advice"] for i in failed(result).values())


def test_expired_credentials_are_refused_for_real(tmp_path, tmp_path_factory) -> None:
    """IMDS hands out a key that the server has already deleted (it "expired"): the probe
    is refused with InvalidAccessKeyId and the advice speaks of the source's key."""
    with iam_moto(tmp_path_factory.mktemp("iam-moto")) as auth:
        issuer = MotoIssuer(auth.server, auth.client("iam"), lifetime=3600, revoke_after=0)
        imds = start_imds(issuer)
        try:
            env = base(
                auth.server.url,
                auth.bucket,
                tmp_path,
                AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url,
            )
            result = run_check(env, tmp_path, "--json")
            items = result.items()
            assert items["credentials"]["status"] == "ok"
            assert items["credentials"]["value"].startswith("instance profile: IMDS")
            bad = failed(result)
            assert result.code == 77, result.out
            assert any("InvalidAccessKeyId" in i["value"] for i in bad.values())
            for issued in issuer.issued:
                assert issued.secret_key not in result.out
        finally:
            imds.close()


def test_good_imds_credentials_pass(s3_server, bucket, tmp_path) -> None:
    imds = start_imds(Issuer("AKIAIMDSIMDSIMDS1234", "s" * 40))
    try:
        env = base(s3_server.url, bucket, tmp_path, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)
        result = run_check(env, tmp_path, "--json", secrets=("s" * 40,))
        assert result.code == 0, result.out
        assert result.items()["credentials"]["value"].endswith("credentials expire in 60 min")
    finally:
        imds.close()

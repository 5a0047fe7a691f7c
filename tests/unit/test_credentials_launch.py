"""S3FS_CREDENTIALS and the AWS chain on the launcher's side: validation, which source
applies (no network), which backend can serve it, what the backend is handed (options,
environment), the bundled backend's credential options, endpoint= as the region."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from cli_support import run_cli, sandbox_fixture  # noqa: F401 - the sandbox fixture
from test_cli import ACCESS, SECRET, env_for

from run_s3fs import awscreds, backends, plan
from run_s3fs.awscreds import CredentialError, classify
from run_s3fs.backends import Backend
from run_s3fs.config import Sourced, validate
from run_s3fs.errors import ConfigError, UsageError
from run_s3fs.fs.options import parse_args
from run_s3fs.mounts import MountpointState

BASE = {"S3FS_BUCKET": "my-bucket", "S3FS_MOUNTPOINT": "/srv/store"}
KEYS = {"S3FS_ACCESSKEY": ACCESS, "S3FS_SECRETKEY": SECRET}
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLEsessiontoken0123456789"
ROLE = "arn:aws:iam::123456789012:role/app"
PYTHON = Backend("python", sys.executable)
S3FS = Backend("s3fs", "/usr/bin/s3fs")


def config(**values: str):
    return validate({k: Sourced(v, "environment") for k, v in {**BASE, **values}.items()})


def problems(**values: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(**values)
    return caught.value.problems


# --- validation ---------------------------------------------------------------------------


def test_keys_are_the_default() -> None:
    cfg = config(**KEYS)
    assert cfg.credentials == "keys" and cfg.access_key is not None
    assert config(**KEYS, S3FS_CREDENTIALS="keys").credentials == "keys"


def test_neither_keys_nor_credentials_names_both_ways() -> None:
    (problem,) = problems()
    assert "S3FS_ACCESSKEY and S3FS_SECRETKEY are not set" in problem
    assert "S3FS_CREDENTIALS=aws" in problem and "S3FS_ACCESSKEY_FILE" in problem


def test_aws_needs_no_keys() -> None:
    cfg = config(S3FS_CREDENTIALS="aws")
    assert cfg.credentials == "aws" and cfg.access_key is None and cfg.secrets() == ()


def test_keys_and_aws_together_are_refused() -> None:
    (problem,) = problems(**KEYS, S3FS_CREDENTIALS="AWS")
    assert "S3FS_CREDENTIALS=aws (from environment) and S3FS_ACCESSKEY" in problem
    assert ACCESS not in problem and SECRET not in problem


def test_a_key_file_alone_with_aws_is_refused_too(tmp_path: Path) -> None:
    (problem,) = problems(S3FS_ACCESSKEY_FILE=str(tmp_path / "k"), S3FS_CREDENTIALS="aws")
    assert "S3FS_ACCESSKEY_FILE" in problem


def test_explicit_keys_mode_asks_for_each_missing_key() -> None:
    found = problems(S3FS_CREDENTIALS="keys")
    assert any(p.startswith("S3FS_ACCESSKEY is not set") for p in found)
    assert any(p.startswith("S3FS_SECRETKEY is not set") for p in found)


def test_unknown_credentials_value() -> None:
    (problem,) = problems(S3FS_CREDENTIALS="iam")
    assert "S3FS_CREDENTIALS" in problem and "keys, aws" in problem


def test_credential_options_want_the_aws_chain() -> None:
    (problem,) = problems(**KEYS, S3FS_OPTIONS="iam_role=app")
    assert "iam_role" in problem and "S3FS_CREDENTIALS=aws" in problem
    (problem,) = problems(S3FS_CREDENTIALS="aws", S3FS_OPTIONS="iam_role,ecs")
    assert "keep one" in problem
    (problem,) = problems(S3FS_CREDENTIALS="aws", S3FS_OPTIONS="profile")
    assert "profile=NAME" in problem
    assert config(S3FS_CREDENTIALS="aws", S3FS_OPTIONS="ecs").option("ecs") == ""


def test_endpoint_option_is_the_region_unless_s3fs_region_disagrees() -> None:
    cfg = config(**KEYS, S3FS_OPTIONS="allow_other,endpoint=eu-west-1")
    assert cfg.region == "eu-west-1" and cfg.options == ("allow_other",)
    assert cfg.sources["S3FS_REGION"] == "S3FS_OPTIONS endpoint="
    same = config(**KEYS, S3FS_REGION="eu-west-1", S3FS_OPTIONS="endpoint=eu-west-1")
    assert same.region == "eu-west-1" and same.options == ()
    (problem,) = problems(**KEYS, S3FS_REGION="us-east-1", S3FS_OPTIONS="endpoint=eu-west-1")
    assert "endpoint=eu-west-1" in problem and "S3FS_REGION" in problem


def test_netdev_is_passed_through_and_accepted_silently_by_the_backend() -> None:
    assert config(**KEYS, S3FS_OPTIONS="_netdev").options == ("_netdev",)
    assert parse_args(["b", "/mnt", "-o", "_netdev"]).ignored == ()


# --- which source ---------------------------------------------------------------------------


def test_chain_order(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert classify(home).kind == awscreds.INSTANCE
    web = {**home, "AWS_ROLE_ARN": ROLE, "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/t"}
    found = classify(web)
    assert found.kind == awscreds.WEB_IDENTITY and not found.s3fs_can
    assert found.describe() == f"web identity: role {ROLE}, token file /var/run/t"
    keys = {**web, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    assert classify(keys).kind == awscreds.ENVIRONMENT and classify(keys).s3fs_can
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text(f"[default]\nrole_arn = {ROLE}\n")
    assert classify(web).kind == awscreds.PROFILE  # a role-assuming profile comes first
    (tmp_path / ".aws" / "config").write_text("[default]\nregion = eu-west-1\n")
    assert classify(web).kind == awscreds.WEB_IDENTITY  # settings alone are no source
    container = {**home, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/x"}
    assert classify(container).kind == awscreds.CONTAINER


def test_partial_environment_keys_and_disabled_imds(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="only one of AWS_ACCESS_KEY_ID"):
        classify({"HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": ACCESS})
    with pytest.raises(CredentialError, match="AWS_EC2_METADATA_DISABLED"):
        classify({"HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"})


def test_what_s3fs_can_serve() -> None:
    assert classify({}, imds=True).s3fs_can
    assert not classify({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://x"}, imds=True).s3fs_can
    relative = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/x"}
    assert classify(relative, container=True).s3fs_can
    token = {**relative, "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN}
    found = classify(token, container=True)
    assert not found.s3fs_can and TOKEN not in found.describe()
    full = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/creds"}
    assert not classify(full, container=True).s3fs_can


# --- backend, options, environment ----------------------------------------------------------


def test_s3fs_forced_for_a_source_it_lacks_is_one_line_naming_the_backend_that_can() -> None:
    with pytest.raises(ConfigError) as caught:
        backends.resolve("s3fs", None, "web identity credentials (no IRSA in s3fs 1.90)")
    (line,) = caught.value.problems
    assert "S3FS_BACKEND=s3fs cannot mount with web identity" in line
    assert "S3FS_BACKEND=python" in line


def test_auto_takes_the_bundled_backend_and_says_why() -> None:
    if backends.python_backend_missing():
        pytest.skip("the bundled backend cannot run here")
    backend = backends.resolve("auto", None, "web identity credentials (x)")
    assert backend.name == "python" and "web identity" in backend.reason


def make(cfg, backend: Backend, environ: dict[str, str]):
    found = plan.credential_source(cfg, environ)
    state = MountpointState(path=cfg.mountpoint, kind="empty")
    return plan.make_plan(cfg, backend, state, environ, euid=1000, found=found)


def opts_of(the_plan) -> list[str]:
    return the_plan.argv[the_plan.argv.index("-o") + 1].split(",")


def test_plan_with_aws_has_no_passwd_file_and_tells_the_backend() -> None:
    cfg = config(S3FS_CREDENTIALS="aws")
    environ = {"HOME": "/nonexistent", "AWS_ROLE_ARN": ROLE, "AWS_WEB_IDENTITY_TOKEN_FILE": "/t"}
    p = make(cfg, PYTHON, environ)
    assert p.passwd_path is None and p.passwd_content is None
    assert "credentials=aws" in opts_of(p) and not any("passwd" in o for o in opts_of(p))
    assert p.credentials.startswith("web identity: role")
    assert any("no passwd file" in step for step in p.steps)


def test_plan_for_s3fs_uses_its_own_options() -> None:
    cfg = config(S3FS_CREDENTIALS="aws")
    assert "iam_role" in opts_of(make(cfg, S3FS, {"HOME": "/nonexistent"}))
    relative = {"HOME": "/nonexistent", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/x"}
    assert "ecs" in opts_of(make(cfg, S3FS, relative))
    named = config(S3FS_CREDENTIALS="aws", S3FS_OPTIONS="iam_role=app")
    assert opts_of(make(named, S3FS, {"HOME": "/x"})).count("iam_role=app") == 1
    assert "iam_role" not in opts_of(make(named, S3FS, {"HOME": "/x"}))


def test_environment_handed_over_holds_only_the_secrets_the_source_needs() -> None:
    cfg = config(S3FS_CREDENTIALS="aws")
    env_keys = {
        "HOME": "/x",
        "AWS_ACCESS_KEY_ID": ACCESS,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_REGION": "eu-west-1",
    }
    for backend in (S3FS, PYTHON):
        handed = make(cfg, backend, env_keys).env
        assert handed["AWS_SESSION_TOKEN"] == TOKEN  # s3fs reads them from there
    container = {
        "HOME": "/x",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/c",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN,
        "AWS_SECURITY_TOKEN": "legacy",
    }
    handed = make(cfg, PYTHON, container).env
    assert handed["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == TOKEN  # its source needs it
    assert "AWS_SECURITY_TOKEN" not in handed
    relative = {
        "HOME": "/x",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/x",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN,
    }
    # (s3fs cannot send it, so a launch would not pick s3fs; if forced, it gets none)
    assert "AWS_CONTAINER_AUTHORIZATION_TOKEN" not in make(cfg, S3FS, relative).env
    keys = make(config(**KEYS), S3FS, {**env_keys, "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN})
    assert not {"AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN"} & set(keys.env)


# --- the bundled backend's options ------------------------------------------------------------


def test_backend_credential_options() -> None:
    assert parse_args(["b", "/m", "-o", "iam_role"]).iam_role == "auto"
    assert parse_args(["b", "/m", "-o", "iam_role=app"]).iam_role == "app"
    assert parse_args(["b", "/m", "-o", "ecs"]).chain == "ecs"
    assert parse_args(["b", "/m", "-o", "credentials=aws"]).chain == "aws"
    assert parse_args(["b", "/m", "-o", "profile=dev"]).profile == "dev"
    with pytest.raises(UsageError, match="give only one"):
        parse_args(["b", "/m", "-o", "passwd_file=/p,iam_role"])
    with pytest.raises(UsageError, match="only value is aws"):
        parse_args(["b", "/m", "-o", "credentials=keys"])
    with pytest.raises(UsageError, match="disagrees"):
        parse_args(["b", "/m", "-o", "endpoint=eu-west-1,region=us-east-1"])


# --- the CLI, as a user runs it ---------------------------------------------------------------


def test_dry_run_with_web_identity_picks_the_bundled_backend(sandbox: Path) -> None:
    if backends.python_backend_missing():
        pytest.skip("the bundled backend cannot run here")
    env = env_for(
        sandbox,
        S3FS_BUCKET="b-bucket",
        S3FS_MOUNTPOINT=str(sandbox / "mnt"),
        S3FS_CREDENTIALS="aws",
        AWS_ROLE_ARN=ROLE,
        AWS_WEB_IDENTITY_TOKEN_FILE=str(sandbox / "token"),
        AWS_SESSION_TOKEN=TOKEN,  # stray, and no use to web identity: withheld
    )
    del env["S3FS_PASSWD_FILE"]
    done = run_cli(sandbox, env, "--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"S3FS_CREDENTIALS +=  ?aws  \[environment\]", out), out
    assert f"credentials: web identity: role {ROLE}" in out
    assert "backend: python" in out and "auto chose it: s3fs cannot mount with web" in out
    assert "credentials=aws" in out and "passwd_file" not in out.split("command: ")[1]
    assert TOKEN not in out + done.stderr
    withheld = next(line for line in out.splitlines() if line.startswith("environment withheld"))
    assert "AWS_SESSION_TOKEN" in withheld


def test_cli_refuses_s3fs_for_web_identity_with_78(sandbox: Path) -> None:
    if shutil.which("s3fs") is None:
        pytest.skip("s3fs is not installed")
    env = env_for(
        sandbox,
        S3FS_BUCKET="b-bucket",
        S3FS_MOUNTPOINT=str(sandbox / "mnt"),
        S3FS_CREDENTIALS="aws",
        S3FS_BACKEND="s3fs",
        AWS_ROLE_ARN=ROLE,
        AWS_WEB_IDENTITY_TOKEN_FILE="/t",
    )
    done = run_cli(sandbox, env, "--dry-run")
    assert done.returncode == 78
    assert "S3FS_BACKEND=s3fs cannot mount with web identity" in done.stderr


def test_help_names_both_ways(sandbox: Path) -> None:
    done = run_cli(sandbox, env_for(sandbox), "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "S3FS_CREDENTIALS=aws" in text and "S3FS_ACCESSKEY" in text

"""Config: sources and their precedence, *_FILE keys, normalisation of good values."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from run_s3fs import config
from run_s3fs.config import Sourced, gather, load, resolve_files, validate
from run_s3fs.errors import ConfigError

ACCESS = "AKIACONFIGTEST123456"
SECRET = "cOnFiGsEcReT/0123456789abcdefghijklmnopq"
GOOD = {
    "S3FS_BUCKET": "my-bucket",
    "S3FS_MOUNTPOINT": "/srv/store",
    "S3FS_ACCESSKEY": ACCESS,
    "S3FS_SECRETKEY": SECRET,
}


def env(**overrides: str) -> dict[str, str]:
    return {**GOOD, **overrides}


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- precedence ---------------------------------------------------------------------------------


def test_flag_beats_environment_beats_dotenv_beats_environment_json(tmp_path: Path) -> None:
    ej = write_json(
        tmp_path / "environment.json",
        {**GOOD, "S3FS_BACKEND": "auto", "S3FS_LOGLEVEL": "error", "S3FS_URL": "http://j:1"},
    )
    dotenv = tmp_path / ".env"
    dotenv.write_text("S3FS_BACKEND=python\nS3FS_LOGLEVEL=warning\nS3FS_REGION=eu-west-1\n")
    environ = {"S3FS_BACKEND": "python", "S3FS_LOGLEVEL": "debug"}
    flags = {"S3FS_BACKEND": "s3fs"}

    raw = gather(flags, environ, dotenv, ej)
    cfg = validate(raw)

    assert cfg.backend == "s3fs" and cfg.sources["S3FS_BACKEND"] == "flag"
    assert cfg.loglevel == "debug" and cfg.sources["S3FS_LOGLEVEL"] == "environment"
    assert cfg.region == "eu-west-1" and cfg.sources["S3FS_REGION"] == f".env ({dotenv})"
    assert cfg.url == "http://j:1" and cfg.sources["S3FS_URL"] == f"environment.json ({ej})"
    assert cfg.bucket == "my-bucket"
    assert cfg.sources["S3FS_SECRETKEY"] == f"environment.json ({ej})"


def test_environment_json_alone_is_enough(tmp_path: Path) -> None:
    """The original run.s3fs read only dotCloud's environment.json."""
    ej = write_json(tmp_path / "environment.json", {**GOOD, "PORT_WWW": "8080", "OTHER": "x"})
    cfg = load({}, {}, None, ej)
    assert cfg.bucket == "my-bucket"
    assert cfg.mountpoint == Path("/srv/store")
    assert cfg.access_key.reveal() == ACCESS
    assert cfg.sources["S3FS_MOUNTPOINT"].startswith("environment.json")


def test_dotenv_does_not_touch_os_environ(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"S3FS_BUCKET=from-dotenv\nS3FS_TEST_ONLY_MARKER=1\nS3FS_SECRETKEY={SECRET}\n"
    )
    before = dict(os.environ)
    raw = gather({}, {}, dotenv, None)
    assert raw["S3FS_BUCKET"] == Sourced("from-dotenv", f".env ({dotenv})")
    assert dict(os.environ) == before


def test_dotenv_values_are_literal_and_quotes_are_honoured(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment\n"
        "export S3FS_BUCKET=quoted-bucket\n"
        "S3FS_SECRETKEY='abc${HOME}def/0123456789abcdefghijklmnopq'\n"
        'S3FS_OPTIONS="allow_other, umask=0022"\n'
    )
    raw = gather({}, {}, dotenv, None)
    assert raw["S3FS_BUCKET"].value == "quoted-bucket"
    assert raw["S3FS_SECRETKEY"].value == "abc${HOME}def/0123456789abcdefghijklmnopq"
    cfg = validate(
        {**raw, **{k: Sourced(v, "environment") for k, v in GOOD.items() if k not in raw}}
    )
    assert cfg.options == ("allow_other", "umask=0022")


def test_empty_optional_value_means_default() -> None:
    cfg = load({}, env(S3FS_URL="", S3FS_BACKEND="", S3FS_LOGLEVEL=""), None, None)
    assert cfg.url is None and cfg.backend == "auto" and cfg.loglevel == "info"
    assert cfg.sources["S3FS_BACKEND"] == "default"


def test_unknown_s3fs_variable_is_a_warning_with_suggestion() -> None:
    cfg = load({}, env(S3FS_MOUNTPIONT="/x"), None, None)
    assert any("S3FS_MOUNTPIONT" in w and "S3FS_MOUNTPOINT" in w for w in cfg.warnings)


def test_resolve_files_defaults(tmp_path: Path) -> None:
    default = config.DEFAULT_ENVIRONMENT_JSON
    assert resolve_files({}, tmp_path) == (None, default if default.is_file() else None)
    (tmp_path / ".env").write_text("")
    ej = tmp_path / "e.json"
    env_file, env_json = resolve_files({"S3FS_ENVIRONMENT_JSON": str(ej)}, tmp_path)
    assert env_file == tmp_path / ".env"
    assert env_json == ej  # named explicitly: kept even though missing, gather reports it
    flagged = tmp_path / "other.env"
    assert resolve_files({}, tmp_path, flagged, tmp_path / "f.json")[0] == flagged


def test_missing_explicit_environment_json_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load({}, GOOD, None, tmp_path / "absent.json")
    assert any("absent.json" in p for p in err.value.problems)


# --- *_FILE ---------------------------------------------------------------------------------------


def test_key_files_strip_one_newline(tmp_path: Path) -> None:
    (tmp_path / "a").write_text(ACCESS + "\n")
    (tmp_path / "s").write_text(SECRET + "\r\n")
    environ = {k: v for k, v in GOOD.items() if "KEY" not in k}
    environ |= {
        "S3FS_ACCESSKEY_FILE": str(tmp_path / "a"),
        "S3FS_SECRETKEY_FILE": str(tmp_path / "s"),
    }
    cfg = load({}, environ, None, None)
    assert cfg.access_key.reveal() == ACCESS
    assert cfg.secret_key.reveal() == SECRET
    assert cfg.sources["S3FS_SECRETKEY"] == f"S3FS_SECRETKEY_FILE ({tmp_path / 's'})"


def test_key_file_with_two_trailing_newlines_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "s").write_text(SECRET + "\n\n")
    environ = {**GOOD, "S3FS_SECRETKEY_FILE": str(tmp_path / "s")}
    del environ["S3FS_SECRETKEY"]
    with pytest.raises(ConfigError) as err:
        load({}, environ, None, None)
    assert "S3FS_SECRETKEY" in str(err.value) and "control character" in str(err.value)
    assert SECRET not in str(err.value)


def test_key_file_unreadable_names_variable(tmp_path: Path) -> None:
    secret_file = tmp_path / "s"
    secret_file.write_text(SECRET)
    secret_file.chmod(0)
    environ = {**GOOD, "S3FS_SECRETKEY_FILE": str(secret_file)}
    del environ["S3FS_SECRETKEY"]
    if os.geteuid() == 0:  # root reads anything: use a path that is not a file instead
        environ["S3FS_SECRETKEY_FILE"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as err:
        load({}, environ, None, None)
    assert err.value.problems[0].startswith("S3FS_SECRETKEY_FILE")


def test_file_and_variable_from_different_sources_conflict(tmp_path: Path) -> None:
    (tmp_path / "s").write_text(SECRET)
    ej = write_json(tmp_path / "e.json", GOOD)
    with pytest.raises(ConfigError) as err:
        load({}, {"S3FS_SECRETKEY_FILE": str(tmp_path / "s")}, None, ej)
    (problem,) = err.value.problems
    assert "S3FS_SECRETKEY" in problem and "S3FS_SECRETKEY_FILE" in problem
    assert "environment.json" in problem and "both set" in problem


# --- normalisation and accepted forms ------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "bucket", "prefix"),
    [
        ("my-bucket", "my-bucket", ""),
        ("s3://my-bucket", "my-bucket", ""),
        ("S3://my-bucket/", "my-bucket", ""),
        ("my.bucket.example", "my.bucket.example", ""),
        ("my-bucket:/sub/path", "my-bucket", "sub/path"),
        ("my-bucket:/sub//path/", "my-bucket", "sub/path"),
        ("my-bucket:/", "my-bucket", ""),
        ("s3://my-bucket/sub/path", "my-bucket", "sub/path"),
        ("abc", "abc", ""),
        ("a" * 63, "a" * 63, ""),
    ],
)
def test_bucket_forms(given: str, bucket: str, prefix: str) -> None:
    cfg = load({}, env(S3FS_BUCKET=given), None, None)
    assert (cfg.bucket, cfg.prefix) == (bucket, prefix)
    assert cfg.bucket_spec == (f"{bucket}:/{prefix}" if prefix else bucket)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("/srv/store/", "/srv/store"), ("//srv//store", "/srv/store"), ("/a b/c", "/a b/c")],
)
def test_mountpoint_normalised(given: str, expected: str) -> None:
    assert load({}, env(S3FS_MOUNTPOINT=given), None, None).mountpoint == Path(expected)


def test_optional_values() -> None:
    cfg = load(
        {},
        env(
            S3FS_URL="https://s3.example.com:8443/",
            S3FS_REGION="eu-west-1",
            S3FS_BACKEND="PYTHON",
            S3FS_LOGLEVEL="Warning",
            S3FS_OPTIONS=" allow_other,,umask=0022 , nonempty,",
            S3FS_PASSWD_FILE="/etc/run-s3fs//passwd",
        ),
        None,
        None,
    )
    assert cfg.url == "https://s3.example.com:8443"
    assert cfg.region == "eu-west-1"
    assert cfg.backend == "python"
    assert cfg.loglevel == "warning"
    assert cfg.options == ("allow_other", "umask=0022", "nonempty")
    assert cfg.option_names() == {"allow_other", "umask", "nonempty"}
    assert cfg.passwd_file == Path("/etc/run-s3fs/passwd")
    assert cfg.warnings == ()


def test_unusual_key_lengths_warn_without_failing_or_leaking() -> None:
    cfg = load({}, env(S3FS_ACCESSKEY="minioadmin", S3FS_SECRETKEY="minioadmin-secret"), None, None)
    assert len(cfg.warnings) == 2
    assert "S3FS_ACCESSKEY is 10 characters" in cfg.warnings[0]
    assert "S3FS_SECRETKEY is 17 characters" in cfg.warnings[1]
    assert not any("minioadmin" in w for w in cfg.warnings)


def test_config_repr_hides_keys() -> None:
    cfg = load({}, GOOD, None, None)
    assert ACCESS not in repr(cfg) and SECRET not in repr(cfg)
    assert SECRET not in f"{cfg.secret_key}" and SECRET not in str(cfg.secret_key)


def test_problems_never_echo_a_bad_secret() -> None:
    bad = "sEcReTvAlUe with space/0123456789abcdefghi"
    with pytest.raises(ConfigError) as err:
        load({}, env(S3FS_SECRETKEY=bad, S3FS_ACCESSKEY=bad), None, None)
    text = str(err.value)
    assert "position 12" in text and "sEcReT" not in text and "space/" not in text

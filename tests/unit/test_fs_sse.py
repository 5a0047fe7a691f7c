"""use_sse, load_sse_c, storage_class, use_rrs and requester_pays: parsed as s3fs parses
them, turned into s3fs's headers, and refused at startup with one line (no key in it)."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from run_s3fs.errors import EX_CONFIG, EX_USAGE, ConfigError, UsageError
from run_s3fs.fs import sse
from run_s3fs.fs.__main__ import engine_settings, main
from run_s3fs.fs.engine.sse import CustomerKey, CustomerKeys
from run_s3fs.fs.options import parse_args

BASE = ["bucket", "/mnt/x", "-f"]
RAW = b"0123456789abcdef0123456789abcdef"  # 32 characters: a raw key
OTHER = bytes(range(32))
OTHER_B64 = base64.b64encode(OTHER).decode()


def fields(option: str, environ: dict | None = None, aws: bool = False) -> dict:
    return sse.engine_fields(parse_args([*BASE, "-o", option]), environ or {}, aws)


def key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "keys"
    path.write_text(text)
    path.chmod(mode)
    return path


def md5(raw: bytes) -> str:
    return base64.b64encode(hashlib.md5(raw).digest()).decode()


@pytest.mark.parametrize("option", ["use_sse", "use_sse=1"])
def test_sse_s3(option):
    f = fields(option)
    assert f["write_headers"] == (("x-amz-server-side-encryption", "AES256"),)
    assert f["request_headers"] == () and f["customer_keys"] is None


@pytest.mark.parametrize("form", ["kmsid:", "k:"])
def test_sse_kms_with_key_id(form):
    key_id = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab"
    assert fields(f"use_sse={form}{key_id}")["write_headers"] == (
        ("x-amz-server-side-encryption", "aws:kms"),
        ("x-amz-server-side-encryption-aws-kms-key-id", key_id),
    )


@pytest.mark.parametrize("option", ["use_sse=kmsid", "use_sse=k"])
def test_sse_kms_id_from_the_environment(option):
    f = fields(option, {"AWSSSEKMSID": "alias/mine"})
    assert ("x-amz-server-side-encryption-aws-kms-key-id", "alias/mine") in f["write_headers"]
    with pytest.raises(ConfigError, match="AWSSSEKMSID"):
        fields(option)


def test_sse_kms_over_plain_http_refused_on_aws_only():
    opts = "use_sse=kmsid:k1,url=http://s3.amazonaws.com"
    with pytest.raises(ConfigError, match="https"):
        fields(opts, aws=True)
    assert fields("use_sse=kmsid:k1,url=http://127.0.0.1:9000", aws=False)["write_headers"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("standard_ia", "STANDARD_IA"),
        ("GLACIER_IR", "GLACIER_IR"),
        ("Deep_Archive", "DEEP_ARCHIVE"),
    ],
)
def test_storage_class(value, expected):
    assert fields(f"storage_class={value}")["write_headers"] == (("x-amz-storage-class", expected),)


def test_standard_storage_class_sends_no_header():
    assert fields("storage_class=standard")["write_headers"] == ()


@pytest.mark.parametrize("option, expected", [("use_rrs", "REDUCED_REDUNDANCY"),
                                              ("use_rrs=1", "REDUCED_REDUNDANCY"),
                                              ("use_rrs=0", "STANDARD")])  # fmt: skip
def test_use_rrs_is_the_old_storage_class(option, expected):
    assert parse_args([*BASE, "-o", option]).storage_class == expected


@pytest.mark.parametrize(
    "option, message",
    [
        ("storage_class=cold", "use one of standard, standard_ia"),
        ("storage_class", "needs a value"),
        ("use_rrs=2", "use_rrs=2"),
        ("use_sse=2", "use_sse, use_sse=kmsid:KEY_ID"),
        ("use_sse=kmsid:", "KMS key id"),
        ("use_sse=custom:", "key file"),
        ("use_sse=kmsid:a,use_sse", "conflicts with an earlier use_sse"),
        ("use_sse,use_sse=custom:/k", "conflicts"),
        ("use_sse,use_rrs", "REDUCED_REDUNDANCY"),
        ("requester_pays=yes", "requester_pays"),
    ],
)
def test_malformed_options_are_usage_errors(option, message):
    with pytest.raises(UsageError, match=message):
        parse_args([*BASE, "-o", option])


def test_requester_pays_on_every_request():
    f = fields("requester_pays")
    assert f["request_headers"] == (("x-amz-request-payer", "requester"),)
    assert f["write_headers"] == ()


def test_none_of_them_is_reported_as_ignored():
    opts = parse_args([*BASE, "-o", "use_sse,storage_class=onezone_ia,requester_pays"])
    assert opts.ignored == ()


@pytest.mark.parametrize("form", ["custom:", "c:", ""])
def test_sse_c_key_file(tmp_path, form):
    path = key_file(tmp_path, f"# current key first\n\n  {OTHER_B64}  \n{RAW.decode()}\n")
    keys = fields(f"use_sse={form}{path}")["customer_keys"]
    assert keys == CustomerKeys((CustomerKey(OTHER), CustomerKey(RAW)), encrypt=True)
    assert keys.write_key.md5 == md5(OTHER)
    assert dict(keys.write_key.headers()) == {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": OTHER_B64,
        "x-amz-server-side-encryption-customer-key-md5": md5(OTHER),
    }
    assert dict(keys.keys[1].headers(copy_source=True)) == {
        "x-amz-copy-source-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-copy-source-server-side-encryption-customer-key": base64.b64encode(RAW).decode(),
        "x-amz-copy-source-server-side-encryption-customer-key-md5": md5(RAW),
    }


def test_load_sse_c_reads_with_the_keys_and_writes_without(tmp_path):
    path = key_file(tmp_path, RAW.decode())
    keys = fields(f"load_sse_c={path}")["customer_keys"]
    assert keys.keys == (CustomerKey(RAW),) and not keys.encrypt and keys.write_key is None
    assert fields(f"load_sse_c={path}")["write_headers"] == ()


def test_read_order_tries_the_likeliest_first():
    a, b = CustomerKey(RAW), CustomerKey(OTHER)
    encrypting = CustomerKeys((a, b), encrypt=True)
    assert encrypting.read_order(None) == [a.md5, "", b.md5]
    assert encrypting.read_order(b.md5) == [b.md5, a.md5, ""]
    assert CustomerKeys((a, b), encrypt=False).read_order(None) == ["", a.md5, b.md5]


def test_keys_from_awsssec_keys(tmp_path):
    keys = fields("use_sse=custom", {"AWSSSECKEYS": f"{OTHER_B64}:{RAW.decode()}"})
    assert [k.raw for k in keys["customer_keys"].keys] == [OTHER, RAW]
    # a key file wins over the environment (s3fs reads the environment first)
    path = key_file(tmp_path, RAW.decode())
    keys = fields(f"use_sse=custom:{path}", {"AWSSSECKEYS": OTHER_B64})
    assert [k.raw for k in keys["customer_keys"].keys] == [RAW]


def test_sse_c_needs_keys():
    with pytest.raises(ConfigError, match="use_sse=custom needs SSE-C keys"):
        fields("use_sse=custom")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o700, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = key_file(tmp_path, RAW.decode(), mode)
    with pytest.raises(ConfigError, match="should be 0600 permissions") as e:
        fields(f"use_sse=custom:{path}")
    assert RAW.decode() not in str(e.value)


def test_owner_read_only_key_file_is_fine(tmp_path):
    assert fields(f"use_sse=c:{key_file(tmp_path, RAW.decode(), 0o400)}")["customer_keys"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("short-key\n", "line 1 is not an AES-256 key"),
        (f"{RAW.decode()}\n{'x' * 44}\n", "line 2 is not an AES-256 key"),  # not base64
        (base64.b64encode(b"k" * 27).decode() + "\n", "line 1"),  # 27 bytes
        ("# only a comment\n\n", "holds no key"),
    ],
)
def test_bad_keys_are_named_by_line_never_shown(tmp_path, text, message):
    path = key_file(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as e:
        fields(f"use_sse=custom:{path}")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert line not in str(e.value)


def test_missing_key_file(tmp_path):
    with pytest.raises(ConfigError, match=r"could not open SSE-C key file .*No such file"):
        fields(f"use_sse=custom:{tmp_path / 'nope'}")


def test_customer_key_repr_hides_the_key():
    text = repr(CustomerKeys((CustomerKey(OTHER),), encrypt=True))
    assert OTHER_B64 not in text and repr(OTHER) not in text and md5(OTHER) in text


def test_engine_settings_carry_them(tmp_path):
    path = key_file(tmp_path, RAW.decode())
    opts = parse_args([*BASE, "-o", f"use_sse=c:{path},storage_class=glacier,requester_pays"])
    settings = engine_settings(opts)
    assert settings.write_headers == (("x-amz-storage-class", "GLACIER"),)
    assert settings.request_headers == (("x-amz-request-payer", "requester"),)
    assert settings.customer_keys.write_key == CustomerKey(RAW)
    assert base64.b64encode(RAW).decode() not in repr(settings)


def test_startup_refuses_with_one_line_and_exit_78(tmp_path, capsys):
    passwd = tmp_path / "passwd"
    passwd.write_text("AKIDEXAMPLE:secretsecret\n")
    passwd.chmod(0o600)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    keys = key_file(tmp_path, RAW.decode(), 0o644)
    argv = ["bucket", str(mnt), "-f", "-o", f"passwd_file={passwd},use_sse=custom:{keys}"]
    assert main(argv) == EX_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "should be 0600 permissions" in err
    assert RAW.decode() not in err and "Traceback" not in err
    assert main([*argv[:-1], f"passwd_file={passwd},storage_class=cold"]) == EX_USAGE
    assert "storage_class=cold" in capsys.readouterr().err
    assert os.listdir(mnt) == []


def test_the_launcher_passes_them_through():
    from run_s3fs import config

    options = (
        "use_sse=kmsid:arn:aws:kms:eu-west-1:123456789012:key/ab-12,storage_class=standard_ia,"
        "requester_pays,load_sse_c=/etc/s3fs/sse-c.keys,use_rrs=0"
    )
    environ = {
        "S3FS_BUCKET": "bucket",
        "S3FS_MOUNTPOINT": "/mnt/b",
        "S3FS_ACCESSKEY": "AKIATESTTESTTEST1234",
        "S3FS_SECRETKEY": "tEsTsEcReT/0123456789abcdefghijklmnopqrs",
        "S3FS_OPTIONS": options,
    }
    cfg = config.load({}, environ, None, None)
    assert cfg.options == tuple(options.split(","))
    opts = parse_args([*BASE, "-o", ",".join(cfg.options)])
    assert (opts.sse, opts.storage_class, opts.requester_pays) == ("kms", "STANDARD", True)
    assert opts.sse_c_file == "/etc/s3fs/sse-c.keys" and opts.ignored == ()

"""The s3fs object format (run_s3fs.fs.layout): keys, headers, fallbacks, type detection."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from run_s3fs.fs import layout
from run_s3fs.fs.layout import Attr, Overrides

LM = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
LM_NS = int(LM.timestamp()) * 10**9
NS = 10**9


def decode(key="f.txt", meta=None, ctype="text/plain", size=3, lm=LM, uid=1000, gid=1000):
    return layout.decode_attr(key, meta or {}, ctype, size, lm, uid, gid)


# --- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "key"),
    [
        ("/a/b.txt", "", "a/b.txt"),
        ("/a/b.txt", "sub/", "sub/a/b.txt"),
        ("/", "", ""),
        ("/", "sub/", "sub/"),
        ("/with space/ü+%#?.txt", "", "with space/ü+%#?.txt"),
    ],
)
def test_path_to_key(path, prefix, key):
    assert layout.path_to_key(path, prefix) == key


@pytest.mark.parametrize(
    ("path", "prefix", "key"),
    [("/", "", ""), ("/", "p/", "p/"), ("/d", "", "d/"), ("/d/e", "p/q/", "p/q/d/e/")],
)
def test_dir_key(path, prefix, key):
    assert layout.dir_key(path, prefix) == key


@pytest.mark.parametrize(
    ("given", "expected"), [("", ""), ("/", ""), ("/sub/path/", "sub/path/"), ("a", "a/")]
)
def test_normalize_prefix(given, expected):
    assert layout.normalize_prefix(given) == expected


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("d/x.txt", "x.txt"),
        ("d/sub/", "sub"),
        ("d/", None),  # the directory's own marker
        ("d//", None),  # `d//x` style keys: no empty names
        ("d/./", None),
        ("d/../", None),
    ],
)
def test_child_name(key, name):
    assert layout.child_name(key, "d/") == name


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1500000000", 1_500_000_000 * 10**9),
        ("1500000000.000000001", 1_500_000_000 * 10**9 + 1),
        ("1500000000.250000000", 1_500_000_000 * 10**9 + 250_000_000),
        # s3fs reads the part after the dot as a nanosecond count, not a fraction
        ("1500000000.25", 1_500_000_000 * 10**9 + 25),
        ("", None),
        ("abc", None),
        (None, None),
    ],
)
def test_parse_time(text, ns):
    assert layout.parse_time(text) == ns


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_700_000_000_123_456_789])
def test_time_round_trip_always_nine_digits(ns):
    text = layout.format_time(ns)
    assert len(text.split(".")[1]) == 9
    assert layout.parse_time(text) == ns


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("33188", 33188),
        ("0644", 0o644),
        ("0100644", 0o100644),
        ("0", 0),
        (" 420 ", 420),
        ("x", None),
    ],
)
def test_parse_int_base_0(text, value):
    assert layout.parse_int(text) == value


# --- headers ----------------------------------------------------------------------------------


def test_encode_meta_is_what_s3fs_writes():
    meta = layout.encode_meta(0o100644, 1000, 1001, 5 * 10**9 + 7, 6 * 10**9, 7 * 10**9)
    assert meta == {
        "mode": "33188",
        "uid": "1000",
        "gid": "1001",
        "mtime": "5.000000007",
        "ctime": "6.000000000",
        "atime": "7.000000000",
    }


@pytest.mark.parametrize(
    "mode", [stat.S_IFREG | 0o644, stat.S_IFREG | 0o4755, stat.S_IFDIR | 0o700, layout.SYMLINK_MODE]
)
def test_headers_round_trip(mode):
    meta = layout.encode_meta(mode, 12, 34, 10**18 + 5, 10**18 + 6, 10**18 + 7)
    key = "d/" if stat.S_ISDIR(mode) else "f"
    attr = decode(key=key, meta=meta, size=0 if stat.S_ISDIR(mode) else 3)
    assert (attr.mode, attr.uid, attr.gid) == (mode, 12, 34)
    assert (attr.mtime_ns, attr.ctime_ns, attr.atime_ns) == (10**18 + 5, 10**18 + 6, 10**18 + 7)


def test_integer_second_mtime_from_s3fs_190():
    attr = decode(meta={"mode": "33188", "mtime": "1600000000"})
    assert attr.mtime_ns == 1_600_000_000 * 10**9


def test_no_metadata_defaults():
    attr = decode(meta={}, uid=55, gid=66)
    assert attr.mode == stat.S_IFREG | 0o640
    assert (attr.uid, attr.gid) == (55, 66)
    assert attr.mtime_ns == attr.ctime_ns == attr.atime_ns == LM_NS
    assert attr.size == 3


def test_directory_marker_without_metadata():
    attr = decode(key="d/", meta={}, ctype="application/x-directory", size=0)
    assert attr.mode == stat.S_IFDIR | 0o750


def test_mkdir_mode_without_type_bits_is_a_directory_by_its_key():
    # s3fs 1.90's mkdir writes 493 (0755, no S_IFDIR)
    attr = decode(key="d/", meta={"mode": "493"}, ctype="application/x-directory", size=0)
    assert attr.mode == stat.S_IFDIR | 0o755


@pytest.mark.parametrize("ctype", ["application/x-directory", "httpd/unix-directory; x=y"])
def test_directory_content_types(ctype):
    assert decode(key="olddir", meta={"mode": "493"}, ctype=ctype, size=0).is_dir


def test_slash_key_of_size_zero_is_a_directory():
    assert decode(key="d/", meta={}, ctype="binary/octet-stream", size=0).is_dir


def test_symlink_mode():
    attr = decode(meta={"mode": "41471"}, ctype="application/octet-stream", size=5)
    assert attr.is_symlink and attr.size == 5


@pytest.mark.parametrize(
    ("meta", "mode"),
    [
        ({"permissions": "33188"}, stat.S_IFREG | 0o644),
        ({"goog-reserved-posix-mode": "604"}, stat.S_IFREG | 0o604),
        ({"goog-reserved-posix-mode": "0604"}, stat.S_IFREG | 0o604),
        ({"mode": "0100604"}, stat.S_IFREG | 0o604),
        ({"mode": "33152", "permissions": "33279"}, stat.S_IFREG | 0o600),
    ],
)
def test_mode_fallbacks(meta, mode):
    assert decode(meta=meta).mode == mode


@pytest.mark.parametrize(
    ("meta", "owner"),
    [
        ({"owner": "1001", "group": "1002"}, (1001, 1002)),
        ({"goog-reserved-posix-uid": "1003", "goog-reserved-posix-gid": "1004"}, (1003, 1004)),
        ({"uid": "7", "gid": "8", "owner": "1", "group": "2"}, (7, 8)),
    ],
)
def test_owner_fallbacks(meta, owner):
    attr = decode(meta=meta)
    assert (attr.uid, attr.gid) == owner


def test_mtime_fallbacks():
    assert decode(meta={"goog-reserved-file-mtime": "1400000000"}).mtime_ns == 1_400_000_000 * 10**9
    # s3fs ignores a time whose seconds are not positive
    assert decode(meta={"mtime": "0"}).mtime_ns == LM_NS
    assert decode(meta={"mtime": "garbage"}).mtime_ns == LM_NS


def test_header_names_are_case_insensitive():
    assert decode(meta={"Mode": "33261"}).mode == stat.S_IFREG | 0o755


def test_overrides():
    attr = Attr(stat.S_IFREG | 0o4640, 1, 5, 6, 0, 0, 0)
    shown = Overrides(uid=1, gid=2, umask=0o022).apply(attr)
    assert (shown.uid, shown.gid) == (1, 2)
    assert shown.mode == stat.S_IFREG | 0o4755  # 0777 & ~umask, special bits kept
    assert Overrides().apply(attr) is attr


def test_implicit_dir():
    attr = layout.implicit_dir_attr(3, 4)
    assert attr.mode == stat.S_IFDIR | 0o750 and (attr.uid, attr.gid) == (3, 4)


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("a.txt", "text/plain"),
        ("dir/b.html", "text/html"),
        ("photo.JPG", "image/jpeg"),
        ("x.tar.gz", "application/gzip"),
        ("noext", "application/octet-stream"),
        (".hidden", "application/octet-stream"),
        ("weird.zzzunknown", "application/octet-stream"),
    ],
)
def test_content_type_for(name, ctype):
    assert layout.content_type_for(name) == ctype


def test_to_fuse():
    st = Attr(stat.S_IFDIR | 0o755, 0, 1, 2, 3, 4, 5, nlink=3).to_fuse()
    assert st["st_nlink"] == 3 and st["st_mtime"] == 3 and st["st_mode"] == stat.S_IFDIR | 0o755
    assert st["st_rdev"] == 0
    assert Attr(stat.S_IFCHR | 0o600, 0, 1, 2, 3, 4, 5, rdev=0x0103).to_fuse()["st_rdev"] == 259


# --- special files ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK])
def test_special_file_modes_as_s3fs_writes_them(kind):
    """s3fs's mknod: an empty object, x-amz-meta-mode the decimal mode with its type."""
    meta = {"mode": str(kind | 0o640), "uid": "0", "gid": "0", "mtime": "1700000000"}
    attr = decode("fifo", meta, "application/octet-stream", 0)
    assert (stat.S_IFMT(attr.mode), stat.S_IMODE(attr.mode), attr.size) == (kind, 0o640, 0)
    assert attr.rdev == 0 and not attr.is_dir


def test_device_number_round_trips_in_x_amz_meta_rdev():
    dev = os.makedev(8, 300)
    meta = layout.encode_meta(stat.S_IFBLK | 0o600, 0, 0, NS, NS, NS, dev)
    assert meta["rdev"] == str(dev)
    attr = decode("disk", meta, "application/octet-stream", 0)
    assert attr.rdev == dev
    assert layout.object_meta(attr)["rdev"] == str(dev)  # kept by chmod, utime, xattr
    # No header for anything but a device; a stray one on a FIFO means nothing.
    assert "rdev" not in layout.encode_meta(stat.S_IFIFO | 0o600, 0, 0, NS, NS, NS)
    assert decode("p", {"mode": str(stat.S_IFIFO | 0o600), "rdev": "5"}, size=0).rdev == 0


# --- name limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "too_long"),
    [
        ("/" + "n" * 255, "", False),
        ("/" + "n" * 256, "", True),
        ("/" + "é" * 127, "", False),  # 254 bytes
        ("/" + "é" * 128, "", True),  # 256 bytes in 128 characters
        ("/a/" + "n" * 256 + "/b", "", True),
        ("/" + "/".join(["d" * 200] * 5) + "/" + "f" * 19, "", False),  # key 1,024 bytes
        ("/" + "/".join(["d" * 200] * 5) + "/" + "f" * 20, "", True),  # key 1,025 bytes
        ("/" + "/".join(["d" * 200] * 5), "p" * 19 + "/", False),  # key 1,024 bytes
        ("/" + "/".join(["d" * 200] * 5), "p" * 30 + "/", True),  # the prefix counts
    ],
)
def test_name_too_long(path, prefix, too_long):
    assert layout.name_too_long(path, layout.path_to_key(path, prefix)) is too_long


def test_name_too_long_counts_the_whole_path_and_undecodable_bytes():
    deep = "/" + "/".join(["d"] * 2048)  # 4,096 bytes: PATH_MAX with its NUL exceeded
    assert layout.name_too_long(deep, "k")
    assert not layout.name_too_long(deep[:-2], "k")
    raw = "/" + (b"\xff" * 256).decode("utf-8", "surrogateescape")
    assert layout.name_too_long(raw, "k")


# --- other tools' metadata ------------------------------------------------------------------


def test_foreign_metadata_round_trips_and_ours_wins() -> None:
    meta = {"Mode": "33188", "uid": "7", "xattr": "%7B%7D", "App-Tag": "blue", "mtime": "5"}
    attr = layout.decode_attr("k", meta, "text/plain", 3, None, 0, 0)
    assert attr.extra == (("app-tag", "blue"), ("xattr", "%7B%7D"))
    written = layout.object_meta(replace(attr, mode=0o100600))
    assert written["app-tag"] == "blue" and written["xattr"] == "%7B%7D"
    assert written["mode"] == str(0o100600)
    again = layout.decode_attr("k", written, "text/plain", 3, None, 0, 0)
    assert again.extra == attr.extra
    assert (again.mode, again.uid, again.mtime_ns) == (0o100600, 7, 5 * layout.NS)


def test_renamed_meta_keeps_everything_but_the_ctime() -> None:
    meta = {"mode": "33188", "ctime": "100", "xattr": "x", "Other": "o"}
    out = layout.renamed_meta(meta, 200 * layout.NS + 5)
    assert out == {"mode": "33188", "ctime": "200.000000005", "xattr": "x", "other": "o"}


# --- extended attributes (use_xattr) --------------------------------------------------------


def test_xattr_header_matches_s3fs_byte_for_byte() -> None:
    # {"user.k":"dg=="} URL-encoded as s3fs's urlEncode does (upper-case hex).
    assert layout.build_xattrs({"user.k": b"v"}) == "%7B%22user.k%22%3A%22dg%3D%3D%22%7D"
    assert layout.parse_xattrs("%7B%22user.k%22%3A%22dg%3D%3D%22%7D") == {"user.k": b"v"}


@pytest.mark.parametrize(
    "xattrs",
    [
        {},
        {"user.a": b""},
        {"user.b": bytes(range(256)), "user.a": b"1", "trusted.x": b"\x00\xff"},
        {"user.ünï 日本": "値".encode()},
    ],
)
def test_xattr_round_trip(xattrs: dict[str, bytes]) -> None:
    header = layout.build_xattrs(xattrs)
    assert header.isascii()
    assert layout.parse_xattrs(header) == xattrs


def test_xattr_names_are_in_byte_order_and_bad_pairs_are_skipped() -> None:
    header = layout.build_xattrs({"user.b": b"2", "user.a": b"1", "user.Z": b"0"})
    assert layout.parse_xattrs(header) == {"user.Z": b"0", "user.a": b"1", "user.b": b"2"}
    assert list(layout.parse_xattrs(header)) == ["user.Z", "user.a", "user.b"]
    broken = "%7B%22ok%22%3A%22MQ%3D%3D%22%2Cnoquotes%3AMQ%3D%3D%2C%22nocolon%22%7D"
    assert layout.parse_xattrs(broken) == {"ok": b"1"}
    assert layout.parse_xattrs("not json") == {}
    assert layout.parse_xattrs(None) == {}

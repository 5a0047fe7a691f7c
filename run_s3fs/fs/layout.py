"""The s3fs-fuse object format, as pure functions: paths ↔ keys, metadata headers ↔ attributes.

See /work/shared/s3fs-object-format.md (facts read from s3fs-fuse's src/s3fs.cpp and
src/metaheader.cpp). Nothing here does I/O, so every rule is unit-testable.
"""

from __future__ import annotations

import base64
import mimetypes
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import unquote_to_bytes

DIR_CONTENT_TYPE = "application/x-directory"
# Content types other tools (old s3fs, s3sync, httpd's DAV) used for directory objects.
DIR_CONTENT_TYPES = frozenset({DIR_CONTENT_TYPE, "httpd/unix-directory"})
SYMLINK_CONTENT_TYPE = "application/octet-stream"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
COMPAT_DIR_SUFFIX = "_$folder$"

# s3fs ≥ 1.85 shows objects without a mode as 0640 (files) and 0750 (directories).
DEFAULT_FILE_PERM = 0o640
DEFAULT_DIR_PERM = 0o750
SYMLINK_MODE = stat.S_IFLNK | 0o777  # 41471, what s3fs writes

# The kinds mknod makes: s3fs stores each as an empty object whose x-amz-meta-mode has
# the type bits (its s3fs_mknod; it keeps no device number, we add x-amz-meta-rdev).
SPECIAL_TYPES = frozenset((stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK))
DEVICE_TYPES = frozenset((stat.S_IFCHR, stat.S_IFBLK))

# Name limits. NAME_MAX and PATH_MAX as Linux; S3 refuses keys over 1,024 bytes (UTF-8),
# so no path whose key (the mount's prefix included) would be longer can exist.
NAME_MAX = 255
PATH_MAX = 4096  # with the terminating NUL, as the kernel counts
KEY_MAX = 1024

NS = 1_000_000_000


@dataclass(frozen=True)
class Attr:
    """What getattr reports for one path. Times are integer nanoseconds since the epoch."""

    mode: int
    size: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    etag: str = ""
    rdev: int = 0  # a device's number (Linux encoding, os.makedev), from x-amz-meta-rdev
    # As stat shows it: only getattr sets it (a directory's count comes from listings).
    nlink: int = 1
    # Every other x-amz-meta-* header the object had (s3fs's xattr, other tools' own),
    # sorted (name, value) pairs: written back unchanged on every rewrite of the object.
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def to_fuse(self) -> dict[str, int]:
        """The dict mfusepy's getattr expects (use_ns=True)."""
        return {
            "st_mode": self.mode,
            "st_size": self.size,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_nlink": self.nlink,
            "st_rdev": self.rdev,
            "st_mtime": self.mtime_ns,
            "st_ctime": self.ctime_ns,
            "st_atime": self.atime_ns,
            "st_blksize": 4096,
            "st_blocks": (self.size + 511) // 512,
        }


@dataclass(frozen=True)
class Overrides:
    """Mount options that change what is shown: uid=, gid=, umask=."""

    uid: int | None = None
    gid: int | None = None
    umask: int | None = None

    def apply(self, attr: Attr) -> Attr:
        changes: dict[str, int] = {}
        if self.uid is not None:
            changes["uid"] = self.uid
        if self.gid is not None:
            changes["gid"] = self.gid
        if self.umask is not None:
            # As s3fs: the permission bits become 0777 & ~umask; type and special bits stay.
            changes["mode"] = (attr.mode & ~0o777) | (0o777 & ~self.umask)
        return replace(attr, **changes) if changes else attr


# --- keys -------------------------------------------------------------------------------


def normalize_prefix(prefix: str) -> str:
    """`/sub/path/` or `sub/path` → `sub/path/`; empty for the bucket root."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def path_to_key(path: str, prefix: str = "") -> str:
    """`/a/b.txt` → `prefix/a/b.txt`. The root maps to the prefix itself (possibly empty)."""
    return prefix + path.lstrip("/")


def dir_key(path: str, prefix: str = "") -> str:
    """The key of a directory's marker and the listing prefix of its children: `a/b/`."""
    key = path_to_key(path, prefix)
    return f"{key}/" if key and not key.endswith("/") else key


def byte_length(text: str) -> int:
    """Bytes of a name as the kernel and S3 count them (undecodable bytes kept as such)."""
    return len(text.encode("utf-8", "surrogateescape"))


def name_too_long(path: str, key: str) -> bool:
    """True if `path` cannot exist: a component over NAME_MAX, the whole over PATH_MAX,
    or its key (`key`: the object's, or the marker's for a directory) over S3's limit.
    Answered ENAMETOOLONG before any request, so nothing is ever half made."""
    if byte_length(key) > KEY_MAX or byte_length(path) >= PATH_MAX:
        return True
    return any(byte_length(part) > NAME_MAX for part in path.split("/"))


def child_name(key: str, listing_prefix: str) -> str | None:
    """The entry name a key or common prefix contributes to a listing of `listing_prefix`.

    None for the directory's own marker and for names a POSIX directory cannot hold
    (empty, `.`, `..`: keys like `a//b` exist in the wild).
    """
    rest = key[len(listing_prefix) :].rstrip("/")
    if not rest or rest in (".", "..") or "/" in rest:
        return None
    return rest


# --- metadata headers -------------------------------------------------------------------


def format_time(ns: int) -> str:
    """`SEC.NNNNNNNNN`: always nine digits, as current s3fs writes (1.90 reads both)."""
    sec, frac = divmod(ns, NS)
    return f"{sec}.{frac:09d}"


def parse_time(value: str | None) -> int | None:
    """`SEC` or `SEC.NNNNNNNNN` → nanoseconds; the part after the dot is a nanosecond count
    (as s3fs reads it), not a decimal fraction. None if absent or malformed."""
    if not value:
        return None
    value = value.strip()
    sec_text, _, frac_text = value.partition(".")
    try:
        sec = int(sec_text)
        nsec = int(frac_text) if frac_text else 0
    except ValueError:
        return None
    if not 0 <= nsec < NS:
        return None
    return sec * NS + nsec if sec >= 0 else sec * NS - nsec


def parse_int(value: str | None, base: int = 0) -> int | None:
    """Decimal with base 0 semantics (`0755` is octal, as strtol in s3fs)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        if base == 0 and len(value) > 1 and value.startswith("0") and value[1:].isdigit():
            return int(value[1:], 8)
        return int(value, base)
    except ValueError:
        return None


def encode_meta(
    mode: int, uid: int, gid: int, mtime_ns: int, ctime_ns: int, atime_ns: int, rdev: int = 0
) -> dict:
    """The x-amz-meta-* headers s3fs writes (boto3's Metadata dict: names without the
    prefix), and a device's number, which s3fs does not keep (it shows 0)."""
    meta = {
        "mode": str(mode),
        "uid": str(uid),
        "gid": str(gid),
        "mtime": format_time(mtime_ns),
        "ctime": format_time(ctime_ns),
        "atime": format_time(atime_ns),
    }
    if rdev:
        meta["rdev"] = str(rdev)
    return meta


# The headers encode_meta writes; any other user metadata is carried in Attr.extra.
OWN_META = frozenset(("mode", "uid", "gid", "mtime", "ctime", "atime", "rdev"))


def foreign_meta(metadata: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The user metadata that is not ours, as Attr.extra holds it."""
    return tuple(sorted((k.lower(), v) for k, v in metadata.items() if k.lower() not in OWN_META))


def object_meta(attr: Attr) -> dict:
    """All the user metadata to write for `attr`: other tools' headers as they were found,
    ours over them. s3fs too keeps headers it does not know through chmod, utime,
    rename and rewrites; dropping them would, for one, erase an s3fs mount's xattrs."""
    return {
        **dict(attr.extra),
        **encode_meta(
            attr.mode, attr.uid, attr.gid, attr.mtime_ns, attr.ctime_ns, attr.atime_ns, attr.rdev
        ),
    }


# --- extended attributes (s3fs's use_xattr) --------------------------------------------
#
# One header, x-amz-meta-xattr: the JSON object {"name": "<base64 of the value>", ...}
# with names in byte order, URL-encoded (letters, digits and `/._-~` kept, every other
# byte %XX in upper case).

_URL_SAFE = frozenset(b"/._-~ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


# Characters the header's ad-hoc JSON cannot carry in a name (s3fs splits on them).
XATTR_NAME_FORBIDDEN = frozenset('",:')


def build_xattrs(xattrs: Mapping[str, bytes]) -> str:
    pairs = ",".join(
        f'"{name}":"{base64.b64encode(value).decode()}"'
        for name, value in sorted(xattrs.items(), key=lambda kv: kv[0].encode())
    )
    raw = ("{" + pairs + "}").encode("utf-8", "surrogateescape")
    return "".join(chr(b) if b in _URL_SAFE else f"%{b:02X}" for b in raw)


def parse_xattrs(header: str | None) -> dict[str, bytes]:
    """The header's attributes; a malformed pair is skipped, as s3fs skips it."""
    if not header:
        return {}
    text = unquote_to_bytes(header).decode("utf-8", "surrogateescape")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    out: dict[str, bytes] = {}
    for pair in text[start + 1 : end].split(","):
        name, sep, value = pair.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or len(name) < 2 or not (name[0] == name[-1] == '"'):
            continue
        if len(value) < 2 or not (value[0] == value[-1] == '"'):
            continue
        try:
            out[name[1:-1]] = base64.b64decode(value[1:-1])
        except ValueError:
            continue
    return out


def renamed_meta(metadata: Mapping[str, str], ctime_ns: int) -> dict:
    """A renamed file's metadata, as s3fs's rename_object writes it: all of it kept, the
    ctime now (the copy's Content-Type is then that of the new name: content_type_for)."""
    return {**{k.lower(): v for k, v in metadata.items()}, "ctime": format_time(ctime_ns)}


def retimed_meta(metadata: Mapping[str, str], mtime_ns: int, ctime_ns: int) -> dict:
    """A directory marker's metadata with new mtime and ctime, all else as it was (what
    s3fs's update_parent_dir_stat writes)."""
    return {
        **{k.lower(): v for k, v in metadata.items()},
        "mtime": format_time(mtime_ns),
        "ctime": format_time(ctime_ns),
    }


def is_dir_object(key: str, content_type: str | None, size: int) -> bool:
    """True if an object is a directory marker (when its mode does not say)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in DIR_CONTENT_TYPES:
        return True
    return key.endswith("/") and size == 0


def decode_attr(
    key: str,
    metadata: Mapping[str, str],
    content_type: str | None,
    size: int,
    last_modified: datetime | None,
    default_uid: int,
    default_gid: int,
    etag: str = "",
) -> Attr:
    """An object's headers → its attributes, with s3fs's fallbacks for foreign objects.

    `metadata` holds user metadata names without `x-amz-meta-` (boto3's HeadObject
    `Metadata`), lowercased.
    """
    meta = {k.lower(): v for k, v in metadata.items()}
    mode = parse_int(meta.get("mode"))
    if mode is None:
        mode = parse_int(meta.get("permissions"))
    if mode is None:
        mode = parse_int(meta.get("goog-reserved-posix-mode"), 8)
    is_dir = is_dir_object(key, content_type, size)
    file_type = stat.S_IFMT(mode) if mode is not None else 0
    if file_type == 0:
        file_type = stat.S_IFDIR if is_dir else stat.S_IFREG
    if mode is None:
        perm = DEFAULT_DIR_PERM if file_type == stat.S_IFDIR else DEFAULT_FILE_PERM
    else:
        perm = stat.S_IMODE(mode)
    uid = _first_int(meta, ("uid", "owner", "goog-reserved-posix-uid"))
    gid = _first_int(meta, ("gid", "group", "goog-reserved-posix-gid"))
    lm_ns = int(last_modified.timestamp()) * NS if last_modified else 0
    # As s3fs: a time counts only if its seconds are positive, else the next source.
    mtime = _first_time(meta, ("mtime", "goog-reserved-file-mtime"))
    ctime = _first_time(meta, ("ctime",))
    atime = _first_time(meta, ("atime",))
    return Attr(
        mode=file_type | perm,
        size=0 if file_type == stat.S_IFDIR else size,
        uid=default_uid if uid is None else uid,
        gid=default_gid if gid is None else gid,
        mtime_ns=lm_ns if mtime is None else mtime,
        ctime_ns=lm_ns if ctime is None else ctime,
        atime_ns=lm_ns if atime is None else atime,
        etag=etag,
        rdev=(parse_int(meta.get("rdev"), 10) or 0) if file_type in DEVICE_TYPES else 0,
        extra=foreign_meta(meta),
    )


def _first_int(meta: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in meta:
            return parse_int(meta[name]) or 0
    return None


def _first_time(meta: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        ns = parse_time(meta.get(name))
        if ns is not None and ns >= NS:
            return ns
    return None


def implicit_dir_attr(uid: int, gid: int, mtime_ns: int = 0) -> Attr:
    """A directory that exists only because keys lie under it (s3fs: 0750, mtime 0)."""
    return Attr(stat.S_IFDIR | DEFAULT_DIR_PERM, 0, uid, gid, mtime_ns, mtime_ns, mtime_ns)


def content_type_for(name: str) -> str:
    """Content-Type from the last extension, looked up as s3fs does in /etc/mime.types
    (`mimetypes` reads that file too); `application/octet-stream` otherwise."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base.lstrip("."):
        return DEFAULT_CONTENT_TYPE
    ext = "." + base.rsplit(".", 1)[1]
    if not mimetypes.inited:
        mimetypes.init()
    types = mimetypes.types_map
    return types.get(ext) or types.get(ext.lower()) or DEFAULT_CONTENT_TYPE

"""The s3fs command line: `BUCKET[:/prefix] MOUNTPOINT [-f] [-d] [-s] -o opt[,opt=val]…`.

Parsed into a frozen Options. Options s3fs knows that do not apply here are accepted and
reported once as ignored; unknown ones likewise (s3fs itself would refuse some, but a
drop-in must not fail a mount over a tuning knob). Malformed values are usage errors.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from run_s3fs.errors import UsageError

MIB = 1024 * 1024
MAX_ID = 2**32 - 2  # uid/gid: (uid_t)-1 means "no change" to the kernel
MAX_PART_MB = 5 * 1024  # S3's largest part
# s3fs's storage_class values (its help), as S3 spells them.
STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "REDUCED_REDUNDANCY",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
)
SSE_FORMS = "use_sse, use_sse=kmsid:KEY_ID, use_sse=kmsid, use_sse=custom:FILE or use_sse=custom"

# s3fs options that make sense only for s3fs's own machinery (curl, its disk cache,
# IAM roles…): accepted, reported as ignored.
_KNOWN_IGNORED = frozenset(
    {
        "use_cache",
        "del_cache",
        "check_cache_dir_exist",
        "enable_content_md5",
        "enable_noobj_cache",
        "disable_noobj_cache",
        "sigv2",
        "sigv4",
        "curldbg",
        "ssl_verify_hostname",
        "nosscache",
        "notsup_compat_dir",
        "nomultipart",
        "default_acl",
        "ibm_iam_auth",
        "public_bucket",
        "noxmlns",
        "nocopyapi",
        "norenameapi",
        "cipher_suites",
        "instance_name",
        "complement_stat",
        "logfile",
        "nodnscache",
        "listobjectsv2",
        "kernel_cache",
        "auto_cache",
        "big_writes",
        "noatime",
        "nodiratime",
        "atime",
        "relatime",
        "dev",
        "suid",
        "nodev",
        "nosuid",
        "exec",
        "noexec",
        "rw",
        "noauto",
        "user",
        "users",
        "auto",
    }
)


@dataclass(frozen=True)
class Options:
    bucket: str
    prefix: str  # "" or "sub/path/"
    mountpoint: str
    foreground: bool = True
    debug: bool = False
    single_thread: bool = False
    passwd_file: str | None = None
    # Temporary credentials (run_s3fs.fs.credentials): iam_role ("" or "auto": the
    # instance's role), `ecs` or credentials=aws (chain "ecs" / "aws"), profile=NAME.
    iam_role: str | None = None
    chain: str | None = None
    profile: str | None = None
    url: str = "https://s3.amazonaws.com"
    url_given: bool = False
    use_path_request_style: bool = False
    region: str | None = None
    allow_other: bool = False
    read_only: bool = False
    umask: int | None = None
    uid: int | None = None
    gid: int | None = None
    mp_umask: int | None = None
    stat_cache_expire: float = 10.0
    max_stat_cache_size: int = 100_000
    multipart_size: int = 10 * MIB
    # s3fs: 25. One connection carries only so much (S3: 50-100 MB/s), so a file of 10
    # MiB or more goes up sooner as parts in flight together than as one PUT.
    multipart_threshold: int = 10 * MIB
    singlepart_copy_limit: int = 5 * 1024 * MIB
    parallel_count: int = 10  # parts of one transfer in flight (s3fs: 5)
    max_thread_count: int = 10
    multireq_max: int = 100  # HEADs in flight when a directory is looked through (s3fs: 20)
    readahead_mb: int = 128  # read-ahead memory of all open files (one file: half)
    read_cache_mb: int = 1024  # disk (in tmpdir) for files read all over (core/regions.py)
    ensure_diskfree: int | None = None  # MiB the read cache leaves free (None: blocks.Disk)
    verify_tls: bool = True
    retries: int = 5
    connect_timeout: float = 300.0
    readwrite_timeout: float = 120.0
    log_level: str = "info"
    compat_dir: bool = False
    use_xattr: bool = False
    fsname: str = "s3fs"
    subtype: str = "s3fs"
    tmpdir: str | None = None
    shutdown_grace: float = 8.0  # under supervisord's default stopwaitsecs (10)
    upload_retry_interval: float = 30.0
    # Server-side encryption (use_sse): "" none, "s3" SSE-S3, "kms" SSE-KMS, "c" SSE-C;
    # sse.py turns these into request headers at startup.
    sse: str = ""
    sse_kms_id: str | None = None  # None with "kms": from AWSSSEKMSID
    sse_c_file: str | None = None  # use_sse=custom:FILE or load_sse_c=FILE; else AWSSSECKEYS
    storage_class: str = "STANDARD"
    requester_pays: bool = False
    ignored: tuple[str, ...] = field(default=())


def _int(
    name: str, value: str, base: int = 10, minimum: int = 0, maximum: int | None = None
) -> int:
    try:
        number = int(value, base)
    except ValueError:
        kind = "an octal number" if base == 8 else "an integer"
        raise UsageError(f"-o {name}={value}: must be {kind}") from None
    if number < minimum:
        raise UsageError(f"-o {name}={value}: must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise UsageError(f"-o {name}={value}: must be at most {maximum}")
    return number


def _float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"-o {name}={value}: must be a number of seconds") from None
    if not math.isfinite(number):  # nan/inf reach timeouts and sleeps, which refuse them
        raise UsageError(f"-o {name}={value}: must be a finite number of seconds")
    if number < 0:
        raise UsageError(f"-o {name}={value}: must not be negative")
    return number


def _umask(name: str, value: str) -> int:
    number = _int(name, value, 8)
    if number > 0o777:
        raise UsageError(f"-o {name}={value}: must be an octal mask no larger than 0777")
    return number


_LOG_LEVELS = {"crit": "error", "critical": "error", "err": "error", "error": "error",
               "warn": "warning", "warning": "warning", "info": "info", "dbg": "debug",
               "debug": "debug"}  # fmt: skip


def split_options(text: str) -> list[tuple[str, str | None]]:
    """`a,b=c,d` → [("a", None), ("b", "c"), ("d", None)]; empty items dropped."""
    items = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        items.append((name.strip(), value if sep else None))
    return items


def parse_args(argv: list[str]) -> Options:
    """The whole command line (without the program name) → Options, or UsageError."""
    positional: list[str] = []
    raw: list[tuple[str, str | None]] = []
    flags = {"foreground": False, "debug": False, "single_thread": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-o":
            if i + 1 >= len(argv):
                raise UsageError("-o needs an argument")
            raw.extend(split_options(argv[i + 1]))
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            raw.extend(split_options(arg[2:]))
        elif arg in ("-f", "--foreground"):
            flags["foreground"] = True
        elif arg in ("-d", "--debug"):
            flags["debug"] = True
        elif arg == "-s":
            flags["single_thread"] = True
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown flag {arg} (usage: BUCKET[:/prefix] MOUNTPOINT -f -o opts)")
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 2:
        raise UsageError("usage: python -m run_s3fs.fs BUCKET[:/prefix] MOUNTPOINT [-f] [-o opts]")
    spec, mountpoint = positional
    bucket, _, prefix = spec.partition(":")
    if not bucket:
        raise UsageError(f"no bucket name in {spec!r}")
    prefix = prefix.strip("/")
    values: dict = {
        "bucket": bucket,
        "prefix": f"{prefix}/" if prefix else "",
        "mountpoint": os.path.abspath(mountpoint),
        **flags,
    }
    if flags["debug"]:
        values["log_level"] = "debug"
    ignored: list[str] = []
    for name, value in raw:
        _apply(name, value, values, ignored)
    chosen = [n for n in ("passwd_file", "iam_role", "chain", "profile") if n in values]
    if len(chosen) > 1:
        names = {"chain": "ecs" if values.get("chain") == "ecs" else "credentials=aws"}
        raise UsageError(
            "-o " + " and ".join(names.get(n, n) for n in chosen) + ": each chooses where the"
            " credentials come from; give only one"
        )
    if values.get("max_thread_count", 10) < 1 or values.get("parallel_count", 5) < 1:
        raise UsageError("-o parallel_count / max_thread_count must be at least 1")
    if values.get("storage_class") == "REDUCED_REDUNDANCY" and values.get("sse"):
        # s3fs refuses this pair too
        raise UsageError("-o use_sse cannot be combined with storage class REDUCED_REDUNDANCY")
    return Options(**values, ignored=tuple(ignored))


def _url(value: str) -> str:
    """An http(s) endpoint with a host, without the trailing slash."""
    from run_s3fs.endpoint import BadURL, check_url

    try:
        return check_url(value)
    except BadURL as e:
        shown = "(not shown: it holds user:password@)" if "@" in value else value
        raise UsageError(
            f"-o url={shown}: {e}; write it as http://HOST[:PORT] or https://HOST[:PORT]"
        ) from None


def _apply(name: str, value: str | None, values: dict, ignored: list[str]) -> None:
    def need() -> str:
        if value is None or value == "":
            raise UsageError(f"-o {name} needs a value ({name}=…)")
        return value

    if not name:
        raise UsageError(f"-o ={value}: an option without a name")
    if name == "passwd_file":
        values["passwd_file"] = need()
    elif name == "url":
        values["url"], values["url_given"] = _url(need()), True
    elif name == "use_path_request_style":
        values["use_path_request_style"] = True
    elif name in ("endpoint", "region"):
        region = need()
        if values.get("region", region) != region:
            raise UsageError(
                f"-o {name}={region} disagrees with the region given before "
                f"({values['region']}): endpoint= and region= both name the signing region"
            )
        values["region"] = region
    elif name == "iam_role":
        values["iam_role"] = value or "auto"  # bare iam_role: the instance's role
    elif name == "ecs":
        values["chain"] = "ecs"
    elif name == "credentials":
        if value != "aws":
            raise UsageError(f"-o credentials={value}: the only value is aws (the AWS chain)")
        values["chain"] = "aws"
    elif name == "profile":
        values["profile"] = need()
    elif name == "_netdev":
        pass  # an fstab flag (mount after the network is up), for mount(8) not for us
    elif name == "allow_other":
        values["allow_other"] = True
    elif name == "ro":
        values["read_only"] = True
    elif name == "umask":
        values["umask"] = _umask(name, need())
    elif name == "mp_umask":
        values["mp_umask"] = _umask(name, need())
    elif name in ("uid", "gid"):
        values[name] = _int(name, need(), maximum=MAX_ID)
    elif name == "stat_cache_expire":
        values["stat_cache_expire"] = _float(name, need())
    elif name == "max_stat_cache_size":
        values["max_stat_cache_size"] = _int(name, need())
    elif name == "multipart_size":
        # MB, as s3fs; S3's parts are 5 MiB to 5 GiB
        size = _int(name, need(), minimum=5, maximum=MAX_PART_MB)
        values["multipart_size"] = size * MIB
    elif name == "multipart_threshold":
        values["multipart_threshold"] = _int(name, need(), minimum=5) * MIB
    elif name == "singlepart_copy_limit":
        values["singlepart_copy_limit"] = _int(name, need(), minimum=5) * MIB
    elif name in ("parallel_count", "max_thread_count", "multireq_max"):
        values[name] = _int(name, need(), minimum=1)
    elif name == "readahead_mb":
        values[name] = _int(name, need(), minimum=1, maximum=64 * 1024)
    elif name in ("read_cache_mb", "ensure_diskfree"):
        values[name] = _int(name, need(), minimum=0)
    elif name == "no_check_certificate":
        values["verify_tls"] = False
    elif name == "retries":
        values["retries"] = _int(name, need(), minimum=0)
    elif name in ("connect_timeout", "readwrite_timeout"):
        values[name] = _float(name, need())
    elif name == "dbglevel":
        level = _LOG_LEVELS.get(need().lower())
        if level is None:
            raise UsageError(f"-o dbglevel={value}: use crit, err, warn, info or dbg")
        values["log_level"] = level
    elif name == "compat_dir":
        values["compat_dir"] = True
    elif name == "use_xattr":
        # s3fs: use_xattr or use_xattr=1 turns them on, use_xattr=0 off
        if value not in (None, "", "1", "0"):
            raise UsageError(f"-o use_xattr={value}: use use_xattr, use_xattr=1 or use_xattr=0")
        values["use_xattr"] = value != "0"
    elif name in ("fsname", "subtype"):
        values[name] = need()
    elif name in ("shutdown_grace", "upload_retry_interval"):
        values[name] = _float(name, need())
    elif name == "tmpdir":
        values["tmpdir"] = need()
    elif name == "use_sse":
        _use_sse(value, values)
    elif name == "load_sse_c":
        values["sse_c_file"] = need()
    elif name == "storage_class":
        storage_class = need().upper()  # s3fs takes any case; S3 wants upper case
        if storage_class not in STORAGE_CLASSES:
            raise UsageError(
                f"-o storage_class={value}: use one of {', '.join(STORAGE_CLASSES).lower()}"
            )
        values["storage_class"] = storage_class
    elif name == "use_rrs":
        # s3fs's old spelling of storage_class=reduced_redundancy (use_rrs=0: standard)
        if value not in (None, "", "1", "0"):
            raise UsageError(f"-o use_rrs={value}: use use_rrs, use_rrs=1 or use_rrs=0")
        values["storage_class"] = "STANDARD" if value == "0" else "REDUCED_REDUNDANCY"
    elif name == "requester_pays":
        if value not in (None, "", "1"):
            raise UsageError(f"-o requester_pays={value}: use requester_pays alone")
        values["requester_pays"] = True
    elif name in ("nonempty", "f2"):
        # libfuse3 mounts over a non-empty directory anyway; accepted for s3fs command lines.
        pass
    elif name in _KNOWN_IGNORED:
        ignored.append(name)
    else:
        ignored.append(f"{name} (unknown)")


def _use_sse(value: str | None, values: dict) -> None:
    """s3fs's use_sse forms: none or 1 (SSE-S3); kmsid[:ID] or k[:ID] (SSE-KMS, the id
    from AWSSSEKMSID when not given); custom[:FILE] or c[:FILE] (SSE-C, keys from FILE,
    load_sse_c or AWSSSECKEYS); a key file's path alone (s3fs's old form of custom:)."""
    text = value or ""
    kind, sep, arg = text.partition(":")
    kms_id = values.get("sse_kms_id")
    if text in ("", "1"):
        sse = "s3"
    elif kind in ("kmsid", "k"):
        sse = "kms"
        if sep:
            if not arg:
                raise UsageError(f"-o use_sse={value}: the KMS key id after {kind}: is empty")
            kms_id = arg
    elif kind in ("custom", "c"):
        sse = "c"
        if sep:
            if not arg:
                raise UsageError(f"-o use_sse={value}: the key file after {kind}: is empty")
            values["sse_c_file"] = arg
    elif "/" in text:
        sse = "c"
        values["sse_c_file"] = text
    else:
        raise UsageError(f"-o use_sse={value}: use {SSE_FORMS}")
    if values.get("sse", sse) != sse:
        raise UsageError(
            f"-o use_sse={value}: conflicts with an earlier use_sse (one kind of"
            " encryption per mount)"
        )
    values["sse"] = sse
    if kms_id is not None:
        values["sse_kms_id"] = kms_id

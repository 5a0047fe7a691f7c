"""`run-s3fs --check`: diagnose a setup item by item, the way s3cmd would, and mount nothing.

Each item is one line with a status (ok / warn / FAIL / skip) and, when it is not ok,
one line of advice. A FAIL carries the sysexits code it implies; the report's exit code
is the most fundamental one found (see `_PRECEDENCE`), so 0 means a mount would work.

The order follows what a launch does: the variables, the backend, FUSE, the mountpoint,
the credentials (with S3FS_CREDENTIALS=aws: the source found and its credentials
fetched), and finally a live probe of the bucket with them (HeadBucket, then
ListObjectsV2 MaxKeys=1). The probe never writes to the bucket and is bounded in time:
short connect/read timeouts, one retry, and a wall-clock deadline over the whole probe.

Secrets never reach the output: variables show `Secret.redacted()`, and every rendered
line is scrubbed of the key values as a last line of defence (S3 error bodies can echo
the access key id).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from run_s3fs import __version__, backends, config, mounts, plan
from run_s3fs.endpoint import is_aws
from run_s3fs.errors import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_NOPERM,
    EX_OK,
    EX_UNAVAILABLE,
    ConfigError,
    LauncherError,
)

REQUIRED = ("S3FS_BUCKET", "S3FS_MOUNTPOINT", "S3FS_CREDENTIALS")
KEYS = ("S3FS_ACCESSKEY", "S3FS_SECRETKEY")  # shown unless S3FS_CREDENTIALS=aws
OPTIONAL = (
    "S3FS_ACCESSKEY_FILE",
    "S3FS_SECRETKEY_FILE",
    "S3FS_URL",
    "S3FS_REGION",
    "S3FS_BACKEND",
    "S3FS_OPTIONS",
    "S3FS_PASSWD_FILE",
    "S3FS_LOGLEVEL",
    "S3FS_GUARD",
)
SECRET_VARIABLES = ("S3FS_ACCESSKEY", "S3FS_SECRETKEY")

# When several items fail, the exit code is the first of these that any item implies:
# a bad configuration makes every later finding moot; a missing facility (backend, FUSE,
# an unreachable endpoint) comes before the mountpoint, which comes before what S3 says
# about the credentials. This is also the order in which a real launch would fail.
_PRECEDENCE = (EX_CONFIG, EX_UNAVAILABLE, EX_CANTCREAT, EX_NOPERM)

# The probe's bounds: per-request timeouts, one retry, and a deadline for the whole probe
# (HeadBucket, a possible region redirect, ListObjectsV2), so --check never hangs.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 5.0
PROBE_DEADLINE = 20.0

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


@dataclass
class Item:
    """One line of the report."""

    name: str
    status: str
    value: str = ""
    source: str = ""
    advice: str = ""
    exit_code: int = EX_OK  # what this item implies when it FAILs


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)
    secrets: tuple[str, ...] = ()  # values to scrub from anything rendered

    def add(self, item: Item) -> Item:
        self.items.append(item)
        return item

    @property
    def exit_code(self) -> int:
        codes = {i.exit_code for i in self.items if i.status == FAIL}
        for code in _PRECEDENCE:
            if code in codes:
                return code
        return min(codes) if codes else EX_OK

    def summary(self) -> str:
        code = self.exit_code
        failed = [i.name for i in self.items if i.status == FAIL]
        if code == EX_OK:
            warned = sum(i.status == WARN for i in self.items)
            note = f" ({warned} warning{'s' * (warned != 1)})" if warned else ""
            return f"a mount would work{note}"
        meaning = {
            EX_CONFIG: "configuration error",
            EX_UNAVAILABLE: "a needed program, facility or the endpoint is unavailable",
            EX_CANTCREAT: "the mountpoint cannot be used",
            EX_NOPERM: "the credentials were rejected or the bucket is not accessible",
        }.get(code, "failed")
        return f"a mount would NOT work: {meaning} ({', '.join(failed)})"

    def render_text(self) -> str:
        width = max([len(i.name) for i in self.items] + [10])
        lines = [f"run-s3fs {__version__} --check"]
        for i in self.items:
            line = f"  {i.status:<4}  {i.name:<{width}}  {i.value}"
            if i.source:
                line += f"  ({i.source})"
            lines.append(line.rstrip())
            if i.advice and i.status != OK:
                lines.append(f"  {'':<4}  {'':<{width}}  → {i.advice}")
        lines.append(f"result: {self.summary()}; exit {self.exit_code}")
        return self._scrub("\n".join(lines))

    def render_json(self) -> str:
        doc = {
            "version": __version__,
            "items": [{k: v for k, v in asdict(i).items() if k != "exit_code"} for i in self.items],
            "ok": self.exit_code == EX_OK,
            "exit_code": self.exit_code,
            "summary": self.summary(),
        }
        return self._scrub(json.dumps(doc, indent=2, ensure_ascii=False))

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, config.Secret(secret).redacted())
        return text


# --- entry point ----------------------------------------------------------------------------


def run_check(
    flags: Mapping[str, str],
    env_file: Path | None,
    environment_json: Path | None,
    as_json: bool,
) -> int:
    """Diagnose, print the report (text or JSON) to stdout, return the exit code.

    The files are the ones a launch would read (the CLI resolves the defaults).
    """
    report = diagnose(flags, os.environ, env_file, environment_json)
    print(report.render_json() if as_json else report.render_text(), flush=True)
    return report.exit_code


def diagnose(
    flags: Mapping[str, str],
    environ: Mapping[str, str],
    env_file: Path | None,
    environment_json: Path | None,
) -> Report:
    report = Report()
    # Strongest first: a variable set in several places takes the leftmost value.
    order = f"flags > environment > .env {env_file or '(none)'} > environment.json "
    report.add(Item("sources", OK, order + f"{environment_json or '(none)'}"))
    raw = config.gather(flags, environ, env_file, environment_json)
    report.secrets = tuple(raw[n].value for n in SECRET_VARIABLES if n in raw)
    report.secrets += tuple(environ[n] for n in plan.AWS_SECRET_ENV if environ.get(n))

    cfg, problems = _validate(raw)
    if cfg is not None:
        report.secrets += cfg.secrets()
    _check_variables(report, raw, cfg, problems)

    found = _check_credential_source(report, cfg, environ)
    backend = _check_backend(report, raw, cfg, found)
    _check_fuse(report, raw, cfg, backend)
    _check_mountpoint(report, raw, cfg)
    if cfg is None:
        report.add(Item("S3 bucket", SKIP, advice="not probed: fix the configuration first"))
        return report
    _check_guard(report, cfg)
    if cfg.credentials == "keys":
        _check_passwd_file(report, cfg)
    if cfg.credentials == "aws" and found is None:
        report.add(Item("S3 bucket", SKIP, advice="not probed: no credentials"))
        return report
    _check_s3(report, cfg, found, environ)
    return report


def _check_credential_source(
    report: Report, cfg: config.Config | None, environ: Mapping[str, str]
) -> Any:
    """S3FS_CREDENTIALS=aws: which source of the chain applies (fetched later, with the
    probe). None if it is not in use or none applies."""
    from run_s3fs.awscreds import CredentialError

    if cfg is None or cfg.credentials != "aws":
        return None
    try:
        return plan.credential_source(cfg, environ)
    except CredentialError as e:
        report.add(
            Item("credentials", FAIL, "AWS chain: " + e.reason, advice=e.advice,
                 exit_code=e.exit_code)
        )  # fmt: skip
        return None


# --- variables --------------------------------------------------------------------------------


def _validate(raw: Mapping[str, config.Sourced]) -> tuple[config.Config | None, list[str]]:
    try:
        return config.validate(raw), []
    except ConfigError as e:
        return None, list(e.problems)


_VARIABLE = re.compile(r"S3FS_[A-Z_]+")


def _variable_in(text: str) -> str | None:
    m = _VARIABLE.search(text)
    return m.group(0) if m else None


def _check_variables(
    report: Report,
    raw: Mapping[str, config.Sourced],
    cfg: config.Config | None,
    problems: list[str],
) -> None:
    by_variable: dict[str, list[str]] = {}
    unplaced: list[str] = []
    for problem in problems:
        name = _variable_in(problem)
        (by_variable.setdefault(name, []) if name else unplaced).append(problem)
    warnings: dict[str, list[str]] = {}
    # Without a Config, the warnings met while gathering (unknown variables) still count.
    for warning in cfg.warnings if cfg else getattr(raw, "warnings", ()):
        warnings.setdefault(_variable_in(warning) or "config", []).append(warning)

    aws = (cfg.credentials if cfg else _raw_value(raw, "S3FS_CREDENTIALS").lower()) == "aws"
    names = [*REQUIRED, *(() if aws else KEYS), *(n for n in OPTIONAL if n in raw)]
    names += [n for n in by_variable if n not in names]
    for name in names:
        value, source = _shown_value(name, raw, cfg)
        if name in by_variable:
            item = Item(name, FAIL, value, source, "; ".join(by_variable[name]), EX_CONFIG)
        elif name in warnings:
            item = Item(name, WARN, value, source, "; ".join(warnings.pop(name)))
        else:
            item = Item(name, OK, value, source)
        report.add(item)
    for problem in unplaced:
        report.add(Item("config", FAIL, advice=problem, exit_code=EX_CONFIG))
    for name, leftover in warnings.items():  # e.g. an unknown S3FS_ variable (a typo?)
        report.add(
            Item(name, WARN, "(ignored)" if name != "config" else "", advice="; ".join(leftover))
        )


def _raw_value(raw: Mapping[str, config.Sourced], name: str) -> str:
    return raw[name].value.strip() if name in raw else ""


def _shown_value(
    name: str, raw: Mapping[str, config.Sourced], cfg: config.Config | None
) -> tuple[str, str]:
    """The value as it may be printed (secrets redacted) and where it came from."""
    source = (cfg.sources.get(name) if cfg else None) or (raw[name].source if name in raw else "")
    if name in SECRET_VARIABLES:
        if cfg is not None:
            secret = cfg.access_key if name == "S3FS_ACCESSKEY" else cfg.secret_key
            if secret is not None:
                return secret.redacted(), source
        if name in raw:
            return config.Secret(raw[name].value).redacted(), source
        file_var = f"{name}_FILE"
        if file_var in raw:
            return f"(read from {raw[file_var].value})", raw[file_var].source
        return "(not set)", ""
    if name in raw:
        return raw[name].value, source
    if name == "S3FS_CREDENTIALS":
        return "keys (the default)", ""
    return "(not set)", ""


# --- backend and FUSE -------------------------------------------------------------------------


def _backend_choice(raw: Mapping[str, config.Sourced], cfg: config.Config | None) -> str:
    if cfg is not None:
        return cfg.backend
    chosen = raw["S3FS_BACKEND"].value.strip().lower() if "S3FS_BACKEND" in raw else "auto"
    return chosen if chosen in ("auto", "s3fs", "python") else "auto"


def _check_backend(
    report: Report, raw: Mapping[str, config.Sourced], cfg: config.Config | None, found: Any
) -> backends.Backend | None:
    choice = _backend_choice(raw, cfg)
    try:  # as a launch looks
        backend = backends.resolve(choice, backends.launcher_dir(), plan.only_bundled(found))
    except LauncherError as e:
        report.add(
            Item("backend", FAIL, f"{choice}: not available", advice=str(e), exit_code=e.exit_code)
        )
        return None
    try:
        version = backends.version(backend)
    except Exception:  # a version is nice to show, never worth failing over
        version = None
    shown = f"{backend.name} {version or '(version unknown)'} ({backend.executable})"
    if backend.reason:
        shown += f"; auto chose it: {backend.reason}"
    report.add(Item("backend", OK, shown, source=f"S3FS_BACKEND={choice}"))
    return backend


def _option_names(raw: Mapping[str, config.Sourced], cfg: config.Config | None) -> set[str]:
    return {o.split("=", 1)[0] for o in _options(raw, cfg)}


def _options(raw: Mapping[str, config.Sourced], cfg: config.Config | None) -> list[str]:
    if cfg is not None:
        return list(cfg.options)
    text = raw["S3FS_OPTIONS"].value if "S3FS_OPTIONS" in raw else ""
    return [o.strip() for o in text.split(",") if o.strip()]


def _check_fuse(
    report: Report,
    raw: Mapping[str, config.Sourced],
    cfg: config.Config | None,
    backend: backends.Backend | None,
) -> None:
    root = os.geteuid() == 0
    if not os.path.exists("/dev/fuse"):
        report.add(
            Item(
                "/dev/fuse",
                FAIL,
                "missing",
                advice=(
                    "load the kernel module (modprobe fuse); in a container run with "
                    "--device /dev/fuse --cap-add SYS_ADMIN"
                ),
                exit_code=EX_UNAVAILABLE,
            )
        )
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        report.add(
            Item(
                "/dev/fuse",
                FAIL,
                "not readable/writable by this user",
                advice=(
                    "run as root or give this user access to /dev/fuse (e.g. chmod 0666 /dev/fuse, "
                    "as Debian's default)"
                ),
                exit_code=EX_UNAVAILABLE,
            )
        )
    else:
        report.add(Item("/dev/fuse", OK, "present, read/write"))

    # libfuse 2 (the s3fs binary) runs `fusermount`, libfuse 3 (the Python backend)
    # `fusermount3`; Debian's fuse3 package provides both names.
    wanted = {"s3fs": ["fusermount"], "python": ["fusermount3"]}.get(
        backend.name if backend else "", ["fusermount3", "fusermount"]
    )
    found = next((p for p in map(shutil.which, wanted) if p), None)
    if found:
        report.add(Item("fusermount", OK, found))
    elif root:
        report.add(
            Item(
                "fusermount",
                WARN,
                f"{' or '.join(wanted)} not found",
                advice=(
                    "root can mount without it, but install fuse3 (apt-get install fuse3) so "
                    "unmounting works the usual way"
                ),
            )
        )
    else:
        report.add(
            Item(
                "fusermount",
                FAIL,
                f"{' or '.join(wanted)} not found",
                advice=("install the FUSE tools: apt-get install fuse3"),
                exit_code=EX_UNAVAILABLE,
            )
        )

    if "allow_other" in _option_names(raw, cfg):
        if root:
            report.add(Item("allow_other", OK, "running as root: allowed"))
        elif _fuse_conf_allows_other():
            report.add(Item("allow_other", OK, "user_allow_other is set in /etc/fuse.conf"))
        else:
            report.add(
                Item(
                    "allow_other",
                    FAIL,
                    "user_allow_other is not set",
                    advice=(
                        "S3FS_OPTIONS has allow_other but this user is not root: add a line "
                        "'user_allow_other' to /etc/fuse.conf, or drop allow_other"
                    ),
                    exit_code=EX_UNAVAILABLE,
                )
            )


def _fuse_conf_allows_other(path: Path = Path("/etc/fuse.conf")) -> bool:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    return any(line.strip() == "user_allow_other" for line in lines)


# --- mountpoint ---------------------------------------------------------------------------------


def _check_mountpoint(
    report: Report, raw: Mapping[str, config.Sourced], cfg: config.Config | None
) -> None:
    if cfg is not None:
        path = cfg.mountpoint
    elif "S3FS_MOUNTPOINT" in raw and raw["S3FS_MOUNTPOINT"].value.startswith("/"):
        path = Path(raw["S3FS_MOUNTPOINT"].value)
    else:
        report.add(Item("mountpoint", SKIP, advice="not inspected: S3FS_MOUNTPOINT is not usable"))
        return
    try:
        state = mounts.inspect(path)
    except LauncherError as e:
        report.add(Item("mountpoint", FAIL, str(path), advice=str(e), exit_code=e.exit_code))
        return
    kind = state.kind
    if kind == "missing":
        parent = _nearest_existing(path)
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            report.add(Item("mountpoint", OK, f"{path}: missing, will be created"))
        else:
            report.add(
                Item(
                    "mountpoint",
                    FAIL,
                    f"{path}: missing and cannot be created",
                    advice=f"{parent} is not a writable directory: create {path} "
                    "yourself or choose another S3FS_MOUNTPOINT",
                    exit_code=EX_CANTCREAT,
                )
            )
    elif kind == "empty":
        report.add(Item("mountpoint", OK, f"{path}: empty directory"))
    elif kind in ("nonempty", "not_directory", "live"):
        # The launcher's own rule decides (plan.check_state), so --check never disagrees
        # with a launch; its message is the advice.
        what = state.describe()
        try:
            plan.check_state(state, "nonempty" in _option_names(raw, cfg))
        except LauncherError as e:
            report.add(Item("mountpoint", FAIL, what, advice=str(e), exit_code=e.exit_code))
        else:
            report.add(
                Item(
                    "mountpoint",
                    WARN,
                    what,
                    advice="nonempty is in S3FS_OPTIONS: the mount will hide the files in it",
                )
            )
    elif kind == "stale":
        report.add(
            Item(
                "mountpoint",
                WARN,
                f"{path}: stale mount ({state.fstype or 'fuse'}, "
                "'Transport endpoint is not connected')",
                advice="a previous mount died; the launcher will unmount it lazily before mounting",
            )
        )
    else:  # a state this module does not know yet: show it rather than guess
        report.add(Item("mountpoint", WARN, f"{path}: {kind}"))


def _check_guard(report: Report, cfg: config.Config) -> None:
    """Which guard a launch would put on the unmounted mount point, and which is there now."""
    from run_s3fs import guard

    path = cfg.mountpoint
    source = cfg.sources.get("S3FS_GUARD", "default")
    # Mount table first: stat() on a dead mount raises ENOTCONN, which is_dir() passes on.
    unmounted = mounts.find_mount(path) is None and path.is_dir()
    present = guard.current(path) if unmounted else None
    now = f"; now: {present}" if present else ("; now: none" if unmounted else "")
    if cfg.guard == "off":
        removal = f" (the {present} guard there now will be removed)" if present else ""
        report.add(
            Item(
                "guard",
                WARN,
                f"off{removal}",
                source,
                advice="while nothing is mounted, files written into the mount point land on "
                "the local disk; S3FS_GUARD=on prevents that",
            )
        )
        return
    kinds = list(guard.candidates(cfg.guard, guard.facts()))
    if "immutable" in kinds and unmounted and not guard.flags_supported(path):
        kinds.remove("immutable")  # this filesystem has no such flag
    if not kinds:
        report.add(
            Item(
                "guard",
                WARN,
                f"{cfg.guard}: no guard possible here{now}",
                source,
                advice="a launch warns and mounts unguarded: run as root (or with "
                "CAP_LINUX_IMMUTABLE / CAP_SYS_ADMIN), or set S3FS_GUARD=on",
            )
        )
        return
    report.add(Item("guard", OK, f"{cfg.guard}: {guard.DESCRIPTION[kinds[0]]}{now}", source))


def _check_passwd_file(report: Report, cfg: config.Config) -> None:
    """The launcher writes the keys there (0600) before the backend starts."""
    path, _ = plan.passwd_location(cfg, os.environ, os.geteuid())
    source = cfg.sources.get("S3FS_PASSWD_FILE", "default")
    if path.is_dir():
        report.add(
            Item(
                "passwd file",
                FAIL,
                f"{path}: is a directory",
                source,
                advice=("set S3FS_PASSWD_FILE to the path of a file"),
                exit_code=EX_CANTCREAT,
            )
        )
        return
    parent = _nearest_existing(path.parent)
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        report.add(Item("passwd file", OK, f"{path}: will be written (mode 0600)", source))
    else:
        report.add(
            Item(
                "passwd file",
                FAIL,
                f"{path}: cannot be written",
                source,
                advice=(
                    f"{parent} is not a writable directory: set S3FS_PASSWD_FILE to a path this "
                    "user can write"
                ),
                exit_code=EX_CANTCREAT,
            )
        )


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.exists(candidate):  # False (not an error) under a dead mount, too
            return candidate
    return Path("/")


# --- the S3 probe -------------------------------------------------------------------------------


def _check_s3(
    report: Report, cfg: config.Config, found: Any = None, environ: Mapping[str, str] = os.environ
) -> None:
    """The credentials (S3FS_CREDENTIALS=aws: fetched from `found`), then HeadBucket and
    ListObjectsV2, in a thread with a deadline so nothing can hang."""
    result: list[Item] = []

    def work() -> None:
        keys: tuple[str, str, str | None] | None = None
        if found is not None:
            item, keys = _fetch_credentials(found, environ)
            result.append(item)
            if keys is None:
                return
            report.secrets += tuple(k for k in keys if k)
        result.extend(_probe(cfg, keys))

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(PROBE_DEADLINE)
    if worker.is_alive():  # the daemon thread is abandoned; the process exits soon anyway
        report.add(
            Item(
                "endpoint",
                FAIL,
                _endpoint(cfg),
                advice=(
                    f"no answer within {PROBE_DEADLINE:.0f} s: check S3FS_URL, the network, "
                    "proxies and firewalls"
                ),
                exit_code=EX_UNAVAILABLE,
            )
        )
        return
    for item in result:
        report.add(item)


def _endpoint(cfg: config.Config) -> str:
    return cfg.url or "AWS S3 (default endpoint)"


def _fetch_credentials(
    found: Any, environ: Mapping[str, str]
) -> tuple[Item, tuple[str, str, str | None] | None]:
    """The source's credentials, as the bundled backend would fetch them."""
    from run_s3fs.awscreds import CredentialError, open_source

    try:
        source = open_source(found, environ)
    except CredentialError as e:
        return (
            Item(
                "credentials",
                FAIL,
                f"{found.describe()}: {e.reason}",
                advice=e.advice,
                exit_code=e.exit_code,
            ),
            None,
        )
    creds = source.get()
    item = Item("credentials", OK, source.describe(), source="S3FS_CREDENTIALS=aws")
    return item, (creds.access_key, creds.secret_key, creds.session_token)


def _client(cfg: config.Config, keys: tuple[str, str, str | None] | None = None) -> Any:
    import boto3  # lazily: a plain launch never pays for boto3
    from botocore.config import Config as BotoConfig

    # Path-style requests exactly when the launch asks s3fs for them (plan.mount_options):
    # use_path_request_style given, or an endpoint that is not AWS.
    path_style = "use_path_request_style" in cfg.options or not is_aws(cfg.url)
    if keys is None:
        assert cfg.access_key is not None and cfg.secret_key is not None
        keys = (cfg.access_key.reveal(), cfg.secret_key.reveal(), None)
    access, secret, token = keys
    return boto3.session.Session().client(
        "s3",
        endpoint_url=cfg.url,
        region_name=cfg.region or "us-east-1",  # s3fs's default too
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=BotoConfig(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            # total_max_attempts counts the first try (max_attempts would count retries)
            retries={"mode": "standard", "total_max_attempts": 2},
            s3={"addressing_style": "path" if path_style else "auto"},
        ),
    )


def _probe(cfg: config.Config, keys: tuple[str, str, str | None] | None = None) -> list[Item]:
    from botocore.exceptions import BotoCoreError, ClientError

    items: list[Item] = []
    endpoint = _endpoint(cfg)
    bucket = cfg.bucket
    try:
        client = _client(cfg, keys)
        head = client.head_bucket(Bucket=bucket)
    except ClientError as e:
        items.append(Item("endpoint", OK, f"{endpoint}: answers"))
        # HEAD answers carry no error body (just 403/404/301), so ask again with a GET
        # to learn which of InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied... it is.
        detail = e
        try:
            client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        except ClientError as e2:
            detail = e2
        except BotoCoreError:
            pass
        items.append(_explain_client_error(detail, cfg, "bucket"))
        return items
    except BotoCoreError as e:
        items.append(_explain_connection_error(e, cfg))
        return items
    items.append(Item("endpoint", OK, f"{endpoint}: answers"))

    headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    actual = headers.get("x-amz-bucket-region")
    items.append(_bucket_item(cfg, actual))

    prefix = f"{cfg.prefix}/" if cfg.prefix else ""
    try:
        listing = client.list_objects_v2(Bucket=bucket, MaxKeys=1, Prefix=prefix)
    except ClientError as e:
        items.append(_explain_client_error(e, cfg, "listing"))
        return items
    except BotoCoreError as e:
        items.append(_explain_connection_error(e, cfg))
        return items
    what = f"s3://{bucket}/{prefix}"
    if listing.get("KeyCount", 0):
        items.append(Item("listing", OK, f"ListObjectsV2 {what}: allowed, has objects"))
    elif prefix:
        items.append(
            Item(
                "listing",
                WARN,
                f"ListObjectsV2 {what}: allowed, nothing there yet",
                advice=f"no object starts with {prefix!r}: check the path in "
                "S3FS_BUCKET (it will mount as an empty directory)",
            )
        )
    else:
        items.append(Item("listing", OK, f"ListObjectsV2 {what}: allowed, bucket is empty"))
    return items


def _bucket_item(cfg: config.Config, actual: str | None) -> Item:
    value = f"HeadBucket {cfg.bucket}: accessible" + (f" (region {actual})" if actual else "")
    expected = cfg.region or ("us-east-1" if cfg.url is None else None)
    if actual and expected and actual != expected:
        if cfg.region:
            return Item(
                "bucket",
                FAIL,
                value,
                cfg.sources.get("S3FS_REGION", ""),
                advice=f"the bucket is in {actual}, not {cfg.region}: set S3FS_REGION={actual}",
                exit_code=EX_CONFIG,
            )
        return Item(
            "bucket",
            WARN,
            value,
            advice=f"the bucket is in {actual}: set "
            f"S3FS_REGION={actual} to avoid a redirect on every start",
        )
    return Item("bucket", OK, value)


def _explain_client_error(e: Any, cfg: config.Config, name: str) -> Item:
    """S3's answer → one line of advice and the exit code it implies."""
    err = e.response.get("Error", {})
    code = str(err.get("Code", ""))
    meta = e.response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode")
    region = meta.get("HTTPHeaders", {}).get("x-amz-bucket-region") or err.get("Region")
    bucket = cfg.bucket
    value = f"{bucket}: {code or status}" + (f" (HTTP {status})" if status and code else "")
    key = (
        f"key {cfg.access_key.redacted()}"
        if cfg.access_key is not None
        else "the temporary credentials' key"
    )

    def fail(advice: str, exit_code: int = EX_NOPERM) -> Item:
        return Item(name, FAIL, value, advice=advice, exit_code=exit_code)

    if code in ("ExpiredToken", "TokenRefreshRequired"):
        return fail(
            "the session token has expired: with AWS_SESSION_TOKEN in the environment, get"
            " new credentials (or use a source that refreshes: a profile, web identity, the"
            " container's or instance's role)"
        )
    if code in ("InvalidAccessKeyId", "InvalidToken") and cfg.access_key is None:
        return fail(
            f"S3 does not accept {key} (or its session token): check that the source's"
            " credentials belong to this account/endpoint (S3FS_URL)"
        )
    if code in ("InvalidAccessKeyId", "InvalidToken"):
        return fail(
            f"S3 does not know the access {key}: check S3FS_ACCESSKEY for typos, "
            "and that the key is active and belongs to this account/endpoint"
        )
    if code == "SignatureDoesNotMatch":
        return fail(
            f"the secret key does not match the access {key}: re-copy "
            "S3FS_SECRETKEY exactly (watch for spaces, '+' and '/')"
        )
    if code == "RequestTimeTooSkewed":
        return fail("this machine's clock is more than 15 minutes off: sync it (NTP)")
    if code in (
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "301",
        "IllegalLocationConstraintException",
    ) or (code == "400" and region):
        where = (
            f"the bucket is in {region}: set S3FS_REGION={region}"
            if region
            else ("the bucket is in another region: set S3FS_REGION to the bucket's region")
        )
        return fail(where, EX_CONFIG)
    if code in ("NoSuchBucket", "404", "NotFound"):
        return fail(
            f"there is no bucket {bucket!r} at {_endpoint(cfg)}: check S3FS_BUCKET "
            "(and S3FS_URL / S3FS_REGION)"
        )
    if code in ("AccessDenied", "403", "AllAccessDisabled", "Forbidden"):
        return fail(
            f"the {key} is valid but may not use bucket {bucket!r}: grant it "
            f"s3:ListBucket on arn:aws:s3:::{bucket} and s3:GetObject, s3:PutObject, "
            f"s3:DeleteObject on arn:aws:s3:::{bucket}/*"
        )
    if code == "InvalidBucketName":
        return fail(f"{bucket!r} is not a valid bucket name: check S3FS_BUCKET", EX_CONFIG)
    if isinstance(status, int) and status >= 500:
        return fail(
            f"the endpoint failed (HTTP {status}); try again later or check S3FS_URL",
            EX_UNAVAILABLE,
        )
    message = str(err.get("Message", "")).strip()
    return fail(f"S3 refused: {code} {message}".strip())


def _explain_connection_error(e: BaseException, cfg: config.Config) -> Item:
    """No answer from the endpoint: say which of DNS, refused, timeout, TLS it was."""
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        SSLError,
    )

    endpoint = _endpoint(cfg)
    chain = _causes(e)
    text = " ".join(str(x) for x in chain)

    def fail(value: str, advice: str) -> Item:
        return Item(
            "endpoint", FAIL, f"{endpoint}: {value}", advice=advice, exit_code=EX_UNAVAILABLE
        )

    if isinstance(e, SSLError) or any(isinstance(x, ssl.SSLError) for x in chain):
        if "certificate" in text.lower():
            return fail(
                "TLS certificate not trusted",
                "check S3FS_URL's host name; for a private CA install it system-wide "
                "(and point AWS_CA_BUNDLE at it for this probe)",
            )
        return fail(
            "TLS handshake failed",
            "the server did not speak TLS as expected: if it is a plain-HTTP endpoint "
            "(a local server), write S3FS_URL with http://",
        )
    if any(isinstance(x, socket.gaierror) for x in chain) or (
        "Name or service not known" in text
        or "nodename nor servname" in text
        or "Temporary failure in name resolution" in text
    ):
        return fail(
            "DNS lookup failed",
            "the host name does not resolve: check S3FS_URL (and DNS on this machine)",
        )
    if any(isinstance(x, ConnectionRefusedError) for x in chain) or "refused" in text:
        return fail(
            "connection refused",
            "nothing listens there: check S3FS_URL's host "
            "and port, and that the S3 server is running",
        )
    if isinstance(e, (ConnectTimeoutError, ReadTimeoutError)) or "timed out" in text:
        return fail(
            "timed out", "no answer in time: check S3FS_URL, the network, proxies and firewalls"
        )
    if isinstance(e, EndpointConnectionError):
        return fail("cannot connect", "check S3FS_URL and the network")
    return fail(type(e).__name__, f"the probe failed: {e}")


def _causes(e: BaseException) -> list[BaseException]:
    """The exception, what it wraps (botocore keeps it in kwargs['error']) and its causes."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or any(x is s for s in seen):
            continue
        seen.append(x)
        wrapped = getattr(x, "kwargs", {}).get("error")
        todo += [
            x.__cause__,
            x.__context__,
            wrapped if isinstance(wrapped, BaseException) else None,
        ]
        todo += [a for a in getattr(x, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(x, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return seen

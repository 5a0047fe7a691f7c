"""Configuration: gathered from every source once, validated once, frozen.

Sources, strongest first: command-line flags, the process environment, a dotenv file
(`.env`), then dotCloud's `environment.json` (the original run.s3fs script's only source).
`gather` reads them into `Sourced` values without judging them; `validate` checks every
variable, collects *every* problem, and either returns a frozen `Config` or raises one
`ConfigError` listing them all. Nothing here writes a file or touches `os.environ`.

No message built here may contain a key, not even a malformed one: problems with keys
say where the bad character is ("contains whitespace at position 5"), never what it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from run_s3fs.errors import ConfigError

DEFAULT_ENVIRONMENT_JSON = Path("/home/dotcloud/environment.json")

# Every variable the launcher reads, with a one-line hint used in "how to set it" messages.
VARIABLES: dict[str, str] = {
    "S3FS_BUCKET": "bucket name (optionally BUCKET:/sub/path)",
    "S3FS_MOUNTPOINT": "absolute path of the mount point",
    "S3FS_ACCESSKEY": "access key id",
    "S3FS_SECRETKEY": "secret access key",
    "S3FS_ACCESSKEY_FILE": "file holding the access key id",
    "S3FS_SECRETKEY_FILE": "file holding the secret access key",
    "S3FS_CREDENTIALS": "keys (default: S3FS_ACCESSKEY/S3FS_SECRETKEY) | aws (the AWS chain)",
    "S3FS_URL": "endpoint URL (default: AWS)",
    "S3FS_REGION": "signing region",
    "S3FS_BACKEND": "auto | s3fs | python",
    "S3FS_OPTIONS": "extra comma-separated mount options",
    "S3FS_PASSWD_FILE": "absolute path of the passwd file",
    "S3FS_LOGLEVEL": "debug | info | warning | error",
    "S3FS_GUARD": "on | off | immutable | tmpfs | mode (guard the unmounted mount point)",
}
REQUIRED = ("S3FS_BUCKET", "S3FS_MOUNTPOINT")  # and the keys, or S3FS_CREDENTIALS=aws
CREDENTIALS = ("keys", "aws")
KEY_VARIABLES = ("S3FS_ACCESSKEY", "S3FS_SECRETKEY", "S3FS_ACCESSKEY_FILE", "S3FS_SECRETKEY_FILE")
# s3fs options that choose temporary credentials: with S3FS_CREDENTIALS=aws they narrow
# the chain to that one source.
CREDENTIAL_OPTIONS = ("iam_role", "ecs", "profile")
BACKENDS = ("auto", "s3fs", "python")
LOGLEVELS = ("debug", "info", "warning", "error")
# on: the strongest guard this machine allows; off: none (and remove ours); or one kind only.
GUARDS = ("on", "off", "immutable", "tmpfs", "mode")

# Options the launcher sets itself (or that belong in their own variable): a second copy in
# S3FS_OPTIONS would either conflict or, for passwd_file, point s3fs at unmanaged credentials.
_OWNED_OPTIONS = {
    "passwd_file": "the launcher writes the passwd file itself; set S3FS_PASSWD_FILE to move it",
    "url": "set S3FS_URL instead",
    "region": "set S3FS_REGION instead",
    "credentials": "set S3FS_CREDENTIALS instead",
}
_KEY_FILE_MAX = 4096  # a key file is a few dozen bytes; refuse to slurp /dev/zero


class Secret:
    """A string that never prints itself: repr/str/format show a redaction."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redacted(self) -> str:
        """First 4 characters and the length: enough to tell two keys apart, not to use one."""
        if len(self._value) <= 8:
            return f"****({len(self._value)} chars)"
        return f"{self._value[:4]}…({len(self._value)} chars)"

    def __repr__(self) -> str:
        return f"Secret({self.redacted()})"

    __str__ = redacted

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Config:
    """Everything a launch needs, validated. Secrets are `Secret`s."""

    bucket: str  # bare bucket name, no s3:// and no sub-path
    prefix: str  # "" or a sub-path without leading/trailing slash ("a/b")
    mountpoint: Path  # absolute
    access_key: Secret | None = None  # None with credentials="aws"
    secret_key: Secret | None = None
    credentials: str = "keys"  # keys | aws (the AWS chain: run_s3fs.awscreds)
    url: str | None = None  # endpoint URL; None = AWS
    region: str | None = None
    backend: str = "auto"  # auto | s3fs | python
    options: tuple[str, ...] = ()  # extra -o options, already split on commas
    passwd_file: Path | None = None  # None = the private per-user default
    loglevel: str = "info"  # debug | info | warning | error
    guard: str = "on"  # on | off | immutable | tmpfs | mode (see guard.py)
    # Where each variable's value came from, by variable name: "flag", "environment",
    # ".env (/path)", "environment.json (/path)", "S3FS_SECRETKEY_FILE (/path)", "default".
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    warnings: tuple[str, ...] = ()  # non-fatal findings (e.g. unusual key lengths)

    @property
    def bucket_spec(self) -> str:
        """BUCKET or BUCKET:/prefix, as s3fs takes it on its command line."""
        return f"{self.bucket}:/{self.prefix}" if self.prefix else self.bucket

    def option_names(self) -> set[str]:
        """The names of the extra options (`uid=1000` → `uid`)."""
        return {opt.split("=", 1)[0] for opt in self.options}

    def option(self, name: str) -> str | None:
        """The value of option `name` ("" if it has none), or None if it is not given."""
        for opt in self.options:
            key, sep, value = opt.partition("=")
            if key == name:
                return value if sep else ""
        return None

    def secrets(self) -> tuple[str, ...]:
        """The key values, for scrubbing."""
        return tuple(s.reveal() for s in (self.access_key, self.secret_key) if s is not None)


@dataclass(frozen=True)
class Sourced:
    """A raw value and where it came from ("flag", "environment", ".env (/path)", …)."""

    value: str
    source: str


class Gathered(dict[str, Sourced]):
    """`gather`'s result: the values, plus problems met while reading the files.

    Those problems are not raised by `gather` so that `validate` can report them together
    with everything else.
    """

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.warnings: list[str] = []


# --- gathering ------------------------------------------------------------------------------


def resolve_files(
    environ: Mapping[str, str],
    cwd: Path,
    env_file_flag: Path | None = None,
    environment_json_flag: Path | None = None,
) -> tuple[Path | None, Path | None]:
    """Which dotenv file and environment.json to read.

    An explicitly named file (flag, or S3FS_ENVIRONMENT_JSON) must exist; `gather` reports
    it if not. The defaults (`./.env`, /home/dotcloud/environment.json) are read only if present.
    """
    env_file = env_file_flag
    if env_file is None and (cwd / ".env").is_file():
        env_file = cwd / ".env"
    environment_json = environment_json_flag
    if environment_json is None and environ.get("S3FS_ENVIRONMENT_JSON"):
        environment_json = Path(environ["S3FS_ENVIRONMENT_JSON"])
    if environment_json is None and DEFAULT_ENVIRONMENT_JSON.is_file():
        environment_json = DEFAULT_ENVIRONMENT_JSON
    return env_file, environment_json


def _read_env_file(path: Path, into: Gathered) -> dict[str, str]:
    """Parse a dotenv file with python-dotenv's parser, without touching os.environ.

    Values are taken literally (no ${VAR} interpolation), so a key with a `$` survives.
    """
    from dotenv.parser import parse_stream  # lazy: only when a .env is in play

    label = f".env file {path}"
    try:
        with open(path, encoding="utf-8") as stream:
            bindings = list(parse_stream(stream))
    except FileNotFoundError:
        into.problems.append(f"{label} does not exist: fix --env-file or create the file")
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        into.problems.append(f"{label} cannot be read: {_os_reason(exc)}")
        return {}
    values: dict[str, str] = {}
    for binding in bindings:
        if binding.error:
            # The line may hold a key: name its number only.
            into.problems.append(
                f"{label}, line {binding.original.line}: not a valid `NAME=value` line"
            )
        elif binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    return values


def _read_environment_json(path: Path, into: Gathered) -> dict[str, str]:
    """dotCloud's environment.json: one flat JSON object of strings."""
    import json

    label = f"environment.json file {path}"
    hint = "fix it, or point --environment-json / S3FS_ENVIRONMENT_JSON elsewhere"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        into.problems.append(f"{label} does not exist: {hint}")
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        into.problems.append(f"{label} cannot be read: {_os_reason(exc)}")
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only, never exc.doc (the text may hold keys).
        into.problems.append(
            f"{label} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): {hint}"
        )
        return {}
    if not isinstance(data, dict):
        into.problems.append(f"{label} is not a JSON object of NAME: value pairs: {hint}")
        return {}
    values: dict[str, str] = {}
    for name, value in data.items():
        if name not in VARIABLES:
            continue
        if isinstance(value, str):
            values[name] = value
        else:
            into.problems.append(
                f"{name} in {label} is a JSON {type(value).__name__}, not a string: "
                f'write it as "{name}": "…"'
            )
    return values


def gather(
    flags: Mapping[str, str],
    environ: Mapping[str, str],
    env_file: Path | None,
    environment_json: Path | None,
) -> Gathered:
    """Collect the launcher's variables from every source; the strongest source wins.

    `flags` maps variable names to values given on the command line. A file argument of
    None means "no such source" (see `resolve_files` for the defaults).
    """
    result = Gathered()
    layers: list[tuple[str, Mapping[str, str]]] = []
    if environment_json is not None:
        layers.append(
            (
                f"environment.json ({environment_json})",
                _read_environment_json(environment_json, result),
            )
        )
    if env_file is not None:
        layers.append((f".env ({env_file})", _read_env_file(env_file, result)))
    layers.append(("environment", environ))
    layers.append(("flag", flags))
    for source, values in layers:  # weakest first: later layers overwrite
        for name in VARIABLES:
            if name in values and values[name] is not None:
                result[name] = Sourced(values[name], source)
        for name in values:
            if (
                name.startswith("S3FS_")
                and name not in VARIABLES
                and name != "S3FS_ENVIRONMENT_JSON"
            ):
                result.warnings.append(_unknown_variable(name, source))
    return result


def _unknown_variable(name: str, source: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, VARIABLES, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{name} (from {source}) is not a run-s3fs variable and is ignored{hint}"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text"
    return type(exc).__name__


# --- validation -----------------------------------------------------------------------------


def _how_to_set(name: str) -> str:
    return f"set it with `dotcloud env set {name}=…`, in .env, or in the environment"


def _first_bad_char(text: str) -> str | None:
    """Where the first whitespace or control character is, without saying what is around it."""
    for i, ch in enumerate(text, start=1):
        if ch.isspace():
            return f"contains whitespace at position {i}"
        if ord(ch) < 32 or ord(ch) == 127:
            return f"contains a control character at position {i}"
    return None


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


class _Validator:
    """Collects problems and warnings while each variable is checked."""

    def __init__(self, raw: Mapping[str, Sourced]) -> None:
        self.raw = raw
        self.problems: list[str] = list(getattr(raw, "problems", []))
        self.warnings: list[str] = list(getattr(raw, "warnings", []))
        self.sources: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        """The value, or None if unset or set to the empty string (= use the default)."""
        item = self.raw.get(name)
        if item is None or item.value == "":
            return None
        self.sources[name] = item.source
        return item.value

    def where(self, name: str) -> str:
        item = self.raw.get(name)
        return f" (from {item.source})" if item else ""

    def problem(self, name: str, text: str) -> None:
        self.problems.append(f"{name}{self.where(name)} {text}")

    def required(self, name: str) -> str | None:
        value = self.get(name)
        if value is None:
            state = "is empty" if name in self.raw else "is not set"
            self.problems.append(f"{name}{self.where(name)} {state}: {_how_to_set(name)}")
        return value

    # -- each variable --

    def bucket(self) -> tuple[str, str]:
        value = self.required("S3FS_BUCKET")
        if value is None:
            return "", ""
        spec = value
        if spec.lower().startswith("s3://"):
            spec = spec[5:]
            # s3://bucket/sub/path is the same as bucket:/sub/path
            if "/" in spec and ":" not in spec.split("/", 1)[0]:
                spec = spec.replace("/", ":/", 1)
        name, _, path = spec.partition(":")
        bad = _bucket_problem(name)
        if bad:
            self.problem("S3FS_BUCKET", f"{bad}: {_how_to_set('S3FS_BUCKET')}")
        prefix = ""
        if path:
            prefix, bad = _normalise_prefix(path)
            if bad:
                self.problem("S3FS_BUCKET", f"has a sub-path that {bad} (write BUCKET:/sub/path)")
        return name, prefix

    def mountpoint(self) -> Path:
        value = self.required("S3FS_MOUNTPOINT")
        if value is None:
            return Path("/")
        bad = _path_problem(value, "S3FS_MOUNTPOINT")
        if bad:
            self.problem("S3FS_MOUNTPOINT", bad)
            return Path("/")
        path = _normalise_path(value)
        if path == "/":
            self.problem("S3FS_MOUNTPOINT", "is the root directory: choose a directory to mount on")
        return Path(path)

    def key(self, name: str, label: str) -> str | None:
        """A key from NAME or NAME_FILE (exactly one of them)."""
        file_name = f"{name}_FILE"
        direct, from_file = self.get(name), self.get(file_name)
        if direct is not None and from_file is not None:
            self.problems.append(
                f"{name}{self.where(name)} and {file_name}{self.where(file_name)} are both set: "
                f"unset one of them"
            )
            return None
        if from_file is not None:
            value = self._read_key_file(file_name, from_file)
            if value is None:
                return None
            self.sources[name] = f"{file_name} ({from_file})"
        elif direct is not None:
            value = direct
        else:
            state = "is empty" if name in self.raw else "is not set"
            self.problems.append(
                f"{name}{self.where(name)} {state}: {_how_to_set(name)} "
                f"(or put the {label} in a file and set {file_name} to its path)"
            )
            return None
        bad = _first_bad_char(value)
        origin = name if from_file is None else f"{name} (read from {file_name})"
        if bad:
            self.problems.append(f"{origin} {bad}: keys never contain spaces or control characters")
            return None
        if ":" in value:
            pos = value.index(":") + 1
            self.problems.append(
                f"{origin} contains ':' at position {pos}: the passwd file separates the keys "
                f"with ':', so a key cannot contain one"
            )
            return None
        if name == "S3FS_ACCESSKEY" and value[0] in "#[":
            self.problems.append(
                f"{origin} starts with '{value[0]}', which s3fs's passwd file reads as a comment "
                f"or section: check the key"
            )
            return None
        return value

    def _read_key_file(self, file_name: str, path_text: str) -> str | None:
        if "\0" in path_text:
            self.problem(file_name, "contains a NUL character: set it to the path of a file")
            return None
        path = Path(path_text)
        try:
            with open(path, "rb") as f:
                data = f.read(_KEY_FILE_MAX + 1)
        except OSError as exc:
            self.problem(file_name, f"names {path}, which cannot be read: {_os_reason(exc)}")
            return None
        if len(data) > _KEY_FILE_MAX:
            self.problem(file_name, f"names {path}, which is too large to hold a key")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.problem(file_name, f"names {path}, which is not UTF-8 text")
            return None
        # One trailing newline is how editors and `echo` end a file; anything else is content.
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if not text:
            self.problem(file_name, f"names {path}, which is empty")
            return None
        return text

    def url(self) -> str | None:
        value = self.get("S3FS_URL")
        if value is None:
            return None
        from run_s3fs.endpoint import BadURL, check_url

        how = "write it as http(s)://host[:port][/path], e.g. https://s3.example.com"
        # The launcher passes the URL inside one -o list, where a comma or a space splits it.
        if _has_control(value) or any(ch.isspace() for ch in value) or "," in value:
            self.problem("S3FS_URL", f"contains whitespace, a comma or a control character: {how}")
            return None
        try:
            return check_url(value)
        except BadURL as e:
            if "@" in value:
                how = "put keys in S3FS_ACCESSKEY/S3FS_SECRETKEY"  # and never echo user:password
            self.problem("S3FS_URL", f"{e}: {how}")
            return None

    def region(self) -> str | None:
        value = self.get("S3FS_REGION")
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
            self.problem(
                "S3FS_REGION",
                "is not a region name (letters, digits, '-', '_', '.'; e.g. eu-west-1)",
            )
            return None
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.get(name)
        if value is None:
            self.sources.setdefault(name, "default")
            return default
        if value.lower() not in allowed:
            shown = value if len(value) <= 40 and not _has_control(value) else "this value"
            self.problem(name, f"is {shown!r}: it must be one of {', '.join(allowed)}")
            return default
        return value.lower()

    def options(self, secrets: list[str]) -> tuple[str, ...]:
        value = self.get("S3FS_OPTIONS")
        if value is None:
            return ()
        result: list[str] = []
        for number, item in enumerate(value.split(","), start=1):
            opt = item.strip()
            if not opt:
                continue
            if any(s and s in opt for s in secrets):
                self.problem(
                    "S3FS_OPTIONS",
                    f"option {number} contains a key: keys belong only in "
                    f"S3FS_ACCESSKEY/S3FS_SECRETKEY",
                )
                continue
            bad = _first_bad_char(opt)
            if bad:
                self.problem(
                    "S3FS_OPTIONS", f"option {number} {bad}: options are name or name=value"
                )
                continue
            name = opt.split("=", 1)[0]
            if name in _OWNED_OPTIONS:
                self.problem("S3FS_OPTIONS", f"sets {name}=: {_OWNED_OPTIONS[name]}")
                continue
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                # Not echoed: a pasted key would land here.
                self.problem(
                    "S3FS_OPTIONS",
                    f"option {number} is not `name` or `name=value` (names are letters, digits,"
                    " '_', '.' and '-')",
                )
                continue
            result.append(opt)
        return tuple(result)

    def passwd_file(self) -> Path | None:
        value = self.get("S3FS_PASSWD_FILE")
        if value is None:
            return None
        bad = _path_problem(value, "S3FS_PASSWD_FILE")
        if bad:
            self.problem("S3FS_PASSWD_FILE", bad)
            return None
        if "," in value:
            # It goes into `-o passwd_file=…`, where a comma would start a new option.
            self.problem(
                "S3FS_PASSWD_FILE", "contains a comma, which s3fs's -o syntax cannot carry"
            )
            return None
        if value.endswith("/"):
            self.problem(
                "S3FS_PASSWD_FILE", "ends with '/': give the path of a file, not a directory"
            )
            return None
        return Path(_normalise_path(value))


def _bucket_problem(name: str) -> str | None:
    """Why `name` is not a valid S3 bucket name, or None."""
    if not name:
        return "has no bucket name"
    if _has_control(name) or any(ch.isspace() for ch in name):
        bad = _first_bad_char(name)
        return f"{bad}; bucket names are 3-63 lowercase letters, digits, '-' and '.'"
    if not 3 <= len(name) <= 63:
        return f"is {len(name)} characters long; bucket names have 3 to 63"
    if re.search(r"[A-Z]", name):
        return "has upper-case letters; bucket names are lowercase"
    if not re.fullmatch(r"[a-z0-9.-]+", name):
        return "has characters other than lowercase letters, digits, '-' and '.'"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "must start and end with a letter or digit"
    if ".." in name:
        return "contains '..'"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        return "looks like an IP address, which bucket names may not"
    if name.startswith(("xn--", "sthree-")):
        return "starts with a reserved prefix ('xn--' or 'sthree-')"
    if name.endswith(("-s3alias", "--ol-s3")):
        return "ends with a reserved suffix ('-s3alias' or '--ol-s3')"
    return None


def _normalise_prefix(path: str) -> tuple[str, str | None]:
    """'/a//b/' → 'a/b'; refuses '.', '..' and control characters."""
    if _has_control(path):
        return "", "contains a control character"
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return "", "has '.' or '..' components"
    return "/".join(parts), None


def _path_problem(value: str, name: str) -> str | None:
    if "\0" in value:
        return "contains a NUL character"
    if _has_control(value):
        return "contains a control character"
    if value != value.strip():
        return "starts or ends with whitespace: remove it"
    if value.startswith("~"):
        return (
            "starts with '~', which nothing expands here: write the full path "
            f"(e.g. /home/dotcloud/...) in {name}"
        )
    if not value.startswith("/"):
        return f"is a relative path: {name} must be absolute (start with /)"
    if any(part in (".", "..") for part in value.split("/")):
        return "has '.' or '..' components: write the plain absolute path"
    return None


def _normalise_path(value: str) -> str:
    """Collapse repeated slashes and drop a trailing one ('/a//b/' → '/a/b')."""
    return "/" + "/".join(p for p in value.split("/") if p)


def _length_warnings(
    access: str | None, secret: str | None, sources: Mapping[str, str]
) -> list[str]:
    note = "(fine if S3FS_URL points at an S3-compatible service with its own key format)"
    found = []
    if access is not None and len(access) != 20:
        found.append(
            f"S3FS_ACCESSKEY is {len(access)} characters long; AWS access keys have 20 {note}"
        )
    if secret is not None and len(secret) != 40:
        found.append(
            f"S3FS_SECRETKEY is {len(secret)} characters long; AWS secret keys have 40 {note}"
        )
    return found


def _credentials(v: _Validator) -> tuple[str, str | None, str | None]:
    """(mode, access key, secret key): keys by default, the AWS chain on request; keys
    together with S3FS_CREDENTIALS=aws, or neither, is a problem (nothing silently wins)."""
    given = v.get("S3FS_CREDENTIALS")
    explicit = given is not None
    mode = v.choice("S3FS_CREDENTIALS", CREDENTIALS, "keys")
    if given is not None and given.lower() not in CREDENTIALS:
        return mode, None, None  # that one problem says it all
    keys = [n for n in KEY_VARIABLES if v.raw.get(n) is not None and v.raw[n].value != ""]
    if mode == "aws":
        if keys:
            v.problems.append(
                f"S3FS_CREDENTIALS=aws{v.where('S3FS_CREDENTIALS')} and "
                + ", ".join(f"{n}{v.where(n)}" for n in keys)
                + " are both set: unset the keys to use the AWS credential chain, or unset"
                " S3FS_CREDENTIALS to use the keys"
            )
        return mode, None, None
    if not explicit and not keys:
        v.problems.append(
            "S3FS_ACCESSKEY and S3FS_SECRETKEY are not set, and neither is S3FS_CREDENTIALS:"
            " set the keys (or S3FS_ACCESSKEY_FILE and S3FS_SECRETKEY_FILE, files holding"
            " them), or set S3FS_CREDENTIALS=aws to use the AWS credential chain (AWS_*"
            " variables, AWS_PROFILE, web identity, the container's or instance's role)"
        )
        return mode, None, None
    return mode, v.key("S3FS_ACCESSKEY", "access key id"), v.key("S3FS_SECRETKEY", "secret key")


def _credential_options(v: _Validator, mode: str, options: tuple[str, ...]) -> None:
    names = [o.split("=", 1)[0] for o in options if o.split("=", 1)[0] in CREDENTIAL_OPTIONS]
    if names and mode != "aws":
        v.problem(
            "S3FS_OPTIONS",
            f"has {names[0]}, which chooses temporary credentials: set S3FS_CREDENTIALS=aws"
            " (and unset the keys), or drop it",
        )
    elif len(names) > 1:
        v.problem("S3FS_OPTIONS", f"has {' and '.join(names)}: each chooses one source; keep one")
    for opt in options:
        name, sep, value = opt.partition("=")
        if name == "profile" and not value:
            v.problem("S3FS_OPTIONS", "has profile without a name: write profile=NAME")
        if name == "ecs" and sep:
            v.problem("S3FS_OPTIONS", "has ecs=…: ecs takes no value")


def _endpoint_region(
    v: _Validator, region: str | None, options: tuple[str, ...]
) -> tuple[str | None, tuple[str, ...]]:
    """`endpoint=REGION` in S3FS_OPTIONS (s3fs's name for the signing region): the region
    when S3FS_REGION is unset, a problem only when the two disagree. Taken out of the
    options either way: the plan passes the region on itself."""
    kept = []
    for opt in options:
        name, _, value = opt.partition("=")
        if name != "endpoint":
            kept.append(opt)
            continue
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
            v.problem("S3FS_OPTIONS", "has endpoint= without a region name (e.g. eu-west-1)")
        elif region is None:
            region = value
            v.sources["S3FS_REGION"] = "S3FS_OPTIONS endpoint="
        elif value != region:
            v.problem(
                "S3FS_OPTIONS",
                f"has endpoint={value}, but S3FS_REGION{v.where('S3FS_REGION')} is {region}:"
                " both name the signing region; keep one",
            )
    return region, tuple(kept)


def validate(raw: Mapping[str, Sourced]) -> Config:
    """Check every variable; return the Config or raise ConfigError listing every problem."""
    v = _Validator(raw)
    bucket, prefix = v.bucket()
    mountpoint = v.mountpoint()
    mode, access, secret = _credentials(v)
    url = v.url()
    region = v.region()
    backend = v.choice("S3FS_BACKEND", BACKENDS, "auto")
    loglevel = v.choice("S3FS_LOGLEVEL", LOGLEVELS, "info")
    guard = v.choice("S3FS_GUARD", GUARDS, "on")
    options = v.options([s for s in (access, secret) if s])
    _credential_options(v, mode, options)
    region, options = _endpoint_region(v, region, options)
    passwd_file = v.passwd_file()
    if v.problems:
        raise ConfigError(v.problems)
    return Config(
        bucket=bucket,
        prefix=prefix,
        mountpoint=mountpoint,
        access_key=Secret(access) if access is not None else None,
        secret_key=Secret(secret) if secret is not None else None,
        credentials=mode,
        url=url,
        region=region,
        backend=backend,
        options=options,
        passwd_file=passwd_file,
        loglevel=loglevel,
        guard=guard,
        sources=v.sources,
        warnings=(*v.warnings, *_length_warnings(access, secret, v.sources)),
    )


def load(
    flags: Mapping[str, str],
    environ: Mapping[str, str],
    env_file: Path | None = None,
    environment_json: Path | None = None,
) -> Config:
    """validate(gather(...)): the one call a launch needs."""
    return validate(gather(flags, environ, env_file, environment_json))

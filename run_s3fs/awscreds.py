"""The AWS credential chain: which source applies here, and fetching (and refreshing) its
temporary credentials. Shared by the launcher (which only looks: `classify` reads the
environment and the shared files, no network) and the bundled backend and --check (which
fetch through a `RefreshingSource`).

The order is botocore's, so that a setup that works with the AWS CLI works here:
  1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) in the environment;
  2. the profile (AWS_PROFILE, else `default`) if it assumes a role (role_arn);
  3. web identity: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (EKS IRSA);
  4. the profile if it has keys, SSO or a credential_process;
  5. container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI, with
     AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE) (ECS task roles, EKS Pod Identity);
  6. the EC2 instance profile, IMDSv2 with a token, IMDSv1 if the token is refused.

Web identity, container and IMDS are small HTTP exchanges done here with urllib: the
backend stays light (botocore and an STS client cost ~30 MiB of resident memory for the
life of the mount). Profiles, whose rules are many (source_profile chains, SSO caches,
credential_process, MFA...), go to botocore, imported only then.

Secrets (secret keys, session tokens, web-identity tokens, container authorization
tokens) never appear in a description, a log line or an exception message.
"""

from __future__ import annotations

import configparser
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from run_s3fs.errors import EX_CONFIG, EX_NOPERM, EX_UNAVAILABLE, LauncherError

log = logging.getLogger("run_s3fs.credentials")

IMDS_ENDPOINT = "http://169.254.169.254"
ECS_HOST = "http://169.254.170.2"
STS_DEFAULT = "https://sts.amazonaws.com"
# Refresh this long before expiry (or at half the lifetime, for short-lived credentials).
REFRESH_AHEAD = 600.0
# An authorization failure within this long of a fetch is not about the credentials' age.
_RECENT = 2.0

# What each source is called in messages and --check.
ENVIRONMENT = "environment"
PROFILE = "profile"
WEB_IDENTITY = "web identity"
CONTAINER = "container"
INSTANCE = "instance profile"


class CredentialError(LauncherError):
    """No credentials could be had from the chosen source; `advice` says what to do."""

    def __init__(self, message: str, advice: str = "", exit_code: int = EX_NOPERM) -> None:
        super().__init__(message + (f": {advice}" if advice else ""))
        self.reason = message
        self.advice = advice
        self.exit_code = exit_code


@dataclass(frozen=True)
class Credentials:
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""
    expiry: float | None = None  # epoch seconds; None: they do not expire

    def __repr__(self) -> str:  # never print a key, whatever the caller does
        return f"Credentials(source={self.source!r})"


@dataclass(frozen=True)
class Found:
    """The source that applies (from `classify`): no secret in it."""

    kind: str  # ENVIRONMENT | PROFILE | WEB_IDENTITY | CONTAINER | INSTANCE
    detail: str  # for messages: "role arn:…, token file /var/run/…"
    profile: str | None = None  # PROFILE: its name
    role_name: str | None = None  # INSTANCE: iam_role=NAME (None: the instance's one)
    s3fs_can: bool = False  # s3fs 1.90 can serve it (environment keys, iam_role, ecs)
    s3fs_why_not: str = ""

    def describe(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


# --- which source ------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or os.path.expanduser("~")


def shared_files(environ: Mapping[str, str]) -> tuple[str, str]:
    """(config file, credentials file), as the AWS CLI finds them."""
    home = _home(environ)
    config = environ.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config")
    creds = environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
    return os.path.expanduser(config), os.path.expanduser(creds)


def read_profile(environ: Mapping[str, str], name: str) -> dict[str, str] | None:
    """The profile's settings from both shared files (credentials file wins), or None if
    neither has it. Unreadable or malformed files count as not having it."""
    config_file, creds_file = shared_files(environ)
    found: dict[str, str] | None = None
    for path, section in (
        (config_file, "default" if name == "default" else f"profile {name}"),
        (creds_file, name),
    ):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            continue
        if path == config_file and not parser.has_section(section) and name == "default":
            section = "profile default"  # also accepted by the CLI
        if parser.has_section(section):
            found = {**(found or {}), **dict(parser.items(section))}
    return found


def _profile_detail(name: str, settings: Mapping[str, str]) -> str:
    if "role_arn" in settings:
        via = settings.get("source_profile") or settings.get("credential_source") or ""
        if "web_identity_token_file" in settings:
            via = f"web identity token file {settings['web_identity_token_file']}"
        elif via:
            via = f"source {via}"
        return f"{name} (assumes role {settings['role_arn']}{', ' + via if via else ''})"
    if "credential_process" in settings:
        return f"{name} (credential_process)"
    if "sso_session" in settings or "sso_start_url" in settings:
        return f"{name} (SSO)"
    return f"{name} (keys in the shared files)"


def classify(
    environ: Mapping[str, str],
    *,
    imds_role: str | None = None,
    imds: bool = False,
    container: bool = False,
    profile: str | None = None,
) -> Found:
    """The source that serves the credentials, from the environment and the shared files
    alone (no network). The keywords narrow the chain to one source, as s3fs's options
    do: `imds` (iam_role[=imds_role]), `container` (ecs), `profile` (profile=NAME).
    Raises CredentialError (exit 78) when no source can apply."""
    if imds:
        return _instance(environ, imds_role)
    if container:
        return _container(environ)
    if profile is not None:
        return _profile(environ, profile, explicit=True)
    access = environ.get("AWS_ACCESS_KEY_ID")
    secret = environ.get("AWS_SECRET_ACCESS_KEY")
    if access or secret:
        if not (access and secret):
            raise CredentialError(
                "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set",
                "set both, or neither",
                EX_CONFIG,
            )
        token = " with a session token" if environ.get("AWS_SESSION_TOKEN") else ""
        return Found(ENVIRONMENT, f"AWS_ACCESS_KEY_ID{token}", s3fs_can=True)
    name = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE")
    settings = read_profile(environ, name or "default")
    if name and settings is None:
        return _profile(environ, name, explicit=True)  # raises: not found
    if settings and "role_arn" in settings:
        return _profile(environ, name or "default")
    if environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") and environ.get("AWS_ROLE_ARN"):
        return Found(
            WEB_IDENTITY,
            f"role {environ['AWS_ROLE_ARN']}, token file {environ['AWS_WEB_IDENTITY_TOKEN_FILE']}",
            s3fs_why_not="s3fs 1.90 has no web identity (IRSA) support",
        )
    if settings and {
        "aws_access_key_id",
        "credential_process",
        "sso_session",
        "sso_start_url",
    } & set(settings):
        return _profile(environ, name or "default")
    if environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or environ.get(
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
    ):
        return _container(environ)
    if _truthy(environ.get("AWS_EC2_METADATA_DISABLED")):
        raise CredentialError(
            "the AWS credential chain found no source (no AWS_* keys, no profile, no web "
            "identity, no container credentials) and AWS_EC2_METADATA_DISABLED=true rules "
            "out the instance profile",
            "set S3FS_ACCESSKEY/S3FS_SECRETKEY, or configure one of those sources",
            EX_CONFIG,
        )
    return _instance(environ, None)


def _profile(environ: Mapping[str, str], name: str, explicit: bool = False) -> Found:
    settings = read_profile(environ, name)
    if settings is None:
        config_file, creds_file = shared_files(environ)
        raise CredentialError(
            f"profile {name} not found in {config_file} or {creds_file}",
            "check the name (AWS_PROFILE or -o profile=) and the files, or set AWS_CONFIG_FILE"
            " / AWS_SHARED_CREDENTIALS_FILE",
            EX_CONFIG,
        )
    return Found(
        PROFILE,
        _profile_detail(name, settings),
        profile=name,
        s3fs_why_not="s3fs 1.90 reads only fixed keys from ~/.aws/credentials",
    )


def _container(environ: Mapping[str, str]) -> Found:
    full = environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    relative = environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    if not (full or relative):
        raise CredentialError(
            "container credentials (ecs) need AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or "
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "ECS and EKS Pod Identity set them in the task's or pod's environment; "
            "pass them on to this process",
            EX_CONFIG,
        )
    token_file = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    token = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    url = _container_url(environ)
    detail = url + (
        f", token file {token_file}" if token_file else ", authorization token" if token else ""
    )
    why = ""
    if relative is None or full:
        why = "s3fs 1.90's ecs reads only AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
    elif token or token_file:
        why = "s3fs 1.90's ecs sends no authorization token"
    return Found(CONTAINER, detail, s3fs_can=not why, s3fs_why_not=why)


def _instance(environ: Mapping[str, str], role: str | None) -> Found:
    endpoint = environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    detail = f"IMDS {endpoint or IMDS_ENDPOINT}" + (f", role {role}" if role else "")
    why = "s3fs 1.90 cannot be pointed at another IMDS endpoint" if endpoint else ""
    return Found(INSTANCE, detail, role_name=role, s3fs_can=not why, s3fs_why_not=why)


def _container_url(environ: Mapping[str, str]) -> str:
    full = environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if full:
        return full
    return ECS_HOST + environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")


# --- fetching ----------------------------------------------------------------------------


def _epoch(text: str | None) -> float | None:
    """An ISO 8601 time (IMDS, ECS, STS give `2026-12-03T12:00:00Z`) as epoch seconds."""
    if not text:
        return None
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _http(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    timeout: float = 2.0,
) -> tuple[int, bytes]:
    """(status, body); raises OSError (URLError) when there is no answer."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    # No proxy: metadata services are link-local, and a proxy must never see their tokens.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(256 * 1024)
    except urllib.error.HTTPError as e:
        return e.code, e.read(64 * 1024) if e.fp else b""


def _json_credentials(body: bytes, source: str, where: str) -> Credentials:
    import json

    try:
        doc = json.loads(body)
        return Credentials(
            doc["AccessKeyId"],
            doc["SecretAccessKey"],
            doc.get("Token") or None,
            source=source,
            expiry=_epoch(doc.get("Expiration")),
        )
    except (ValueError, KeyError, TypeError):
        raise CredentialError(
            f"{where} answered with something that is not credentials",
            exit_code=EX_UNAVAILABLE,
        ) from None


def fetch_instance(environ: Mapping[str, str], role: str | None) -> Credentials:
    """The instance profile's credentials from IMDS: a session token first (IMDSv2), and
    without one if IMDS refuses to issue it (an IMDSv1-only service)."""
    base = (environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or IMDS_ENDPOINT).rstrip("/")
    hop = (
        "IMDS is not reachable: off EC2 there is none; in a container on EC2, the instance's "
        "metadata hop limit must be 2 or more (aws ec2 modify-instance-metadata-options "
        "--http-put-response-hop-limit 2)"
    )
    headers: dict[str, str] = {}
    try:
        status, body = _http(
            "PUT",
            f"{base}/latest/api/token",
            {"x-aws-ec2-metadata-token-ttl-seconds": "21600"},
            timeout=1.0,
        )
    except OSError:
        raise CredentialError(f"no answer from IMDS at {base}", hop, EX_UNAVAILABLE) from None
    if status == 200:
        headers["x-aws-ec2-metadata-token"] = body.decode("ascii", "replace").strip()
    elif status not in (403, 404, 405):
        raise CredentialError(
            f"IMDS at {base} refused a session token (HTTP {status})", hop, EX_UNAVAILABLE
        )
    listing = f"{base}/latest/meta-data/iam/security-credentials/"
    try:
        if not role:
            status, body = _http("GET", listing, headers)
            names = body.decode("utf-8", "replace").split()
            if status == 401:
                raise CredentialError(
                    f"IMDS at {base} wants a session token (IMDSv2) but gave none",
                    hop,
                    EX_UNAVAILABLE,
                )
            if status != 200 or not names:
                raise CredentialError(
                    f"this instance has no IAM role (IMDS at {base}: HTTP {status})",
                    "attach an instance profile with a role allowed to use the bucket",
                )
            role = names[0]
        status, body = _http("GET", listing + role, headers)
    except OSError:
        raise CredentialError(f"no answer from IMDS at {base}", hop, EX_UNAVAILABLE) from None
    if status == 404:
        raise CredentialError(
            f"the instance has no IAM role named {role}",
            "use iam_role (or iam_role=auto) for the role the instance has",
        )
    if status != 200:
        raise CredentialError(
            f"IMDS at {base} refused the credentials of role {role} (HTTP {status})",
            exit_code=EX_UNAVAILABLE,
        )
    return _json_credentials(body, f"{INSTANCE} role {role}", f"IMDS at {base}")


def fetch_container(environ: Mapping[str, str]) -> Credentials:
    """Container credentials (ECS task role, EKS Pod Identity): one GET, with the
    authorization token when one is given (the token file is read each time: it rotates)."""
    url = _container_url(environ)
    headers: dict[str, str] = {}
    token_file = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                headers["Authorization"] = f.read().strip()
        except OSError as e:
            raise CredentialError(
                f"the container authorization token file {token_file} cannot be read "
                f"({e.strerror})",
                "check that the pod mounts its service account token there",
                EX_CONFIG,
            ) from None
    elif environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        headers["Authorization"] = environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    try:
        status, body = _http("GET", url, headers, timeout=2.0)
    except OSError:
        raise CredentialError(
            f"no answer from the container credentials endpoint {url}",
            "outside ECS/EKS there is none; inside, check the task's or pod's network",
            EX_UNAVAILABLE,
        ) from None
    if status != 200:
        advice = (
            "the authorization token was refused: check AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)"
            if status in (401, 403)
            else ""
        )
        raise CredentialError(f"{url} answered HTTP {status}", advice)
    return _json_credentials(body, CONTAINER, url)


def fetch_web_identity(environ: Mapping[str, str]) -> Credentials:
    """AssumeRoleWithWebIdentity: an unsigned STS call with the token file's content (read
    each time: Kubernetes rotates it)."""
    import re
    import urllib.parse

    role = environ.get("AWS_ROLE_ARN", "")
    token_file = environ.get("AWS_WEB_IDENTITY_TOKEN_FILE", "")
    try:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise CredentialError(
            f"the web identity token file {token_file} cannot be read ({e.strerror})",
            "check AWS_WEB_IDENTITY_TOKEN_FILE and that the pod's projected service account "
            "token is mounted there (EKS: the service account needs the role annotation)",
            EX_CONFIG,
        ) from None
    if not token:
        raise CredentialError(f"the web identity token file {token_file} is empty", "", EX_CONFIG)
    session = environ.get("AWS_ROLE_SESSION_NAME") or f"run-s3fs-{int(time.time())}"
    endpoint = _sts_endpoint(environ)
    form = urllib.parse.urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": role,
            "RoleSessionName": session,
            "WebIdentityToken": token,
        }
    ).encode()
    try:
        status, body = _http(
            "POST",
            endpoint,
            {"Content-Type": "application/x-www-form-urlencoded"},
            form,
            timeout=10.0,
        )
    except OSError as e:
        raise CredentialError(
            f"no answer from STS at {endpoint} ({getattr(e, 'reason', e)})",
            "check the network (and AWS_ENDPOINT_URL_STS, AWS_STS_REGIONAL_ENDPOINTS)",
            EX_UNAVAILABLE,
        ) from None

    def tag(name: str) -> str | None:
        m = re.search(rf"<{name}>([^<]*)</{name}>".encode(), body)
        return m.group(1).decode("utf-8", "replace") if m else None

    if status != 200:
        code = tag("Code") or f"HTTP {status}"
        advice = {
            "AccessDenied": f"the role {role} does not trust this identity: check its trust "
            "policy (the OIDC provider, the service account in `sub`)",
            "ExpiredTokenException": f"the token in {token_file} has expired: the kubelet "
            "refreshes it; check that the file is the projected token",
            "InvalidIdentityToken": "STS does not accept the token: check the cluster's OIDC "
            "provider is registered in IAM",
        }.get(code, "")
        raise CredentialError(f"STS refused to let this identity assume {role} ({code})", advice)
    access, secret = tag("AccessKeyId"), tag("SecretAccessKey")
    if not (access and secret):
        raise CredentialError(f"STS at {endpoint} answered without credentials", "")
    return Credentials(
        access,
        secret,
        tag("SessionToken"),
        source=f"{WEB_IDENTITY} role {role}",
        expiry=_epoch(tag("Expiration")),
    )


def _sts_endpoint(environ: Mapping[str, str]) -> str:
    explicit = environ.get("AWS_ENDPOINT_URL_STS") or environ.get("AWS_ENDPOINT_URL")
    if explicit:
        return explicit.rstrip("/") + "/"
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region and environ.get("AWS_STS_REGIONAL_ENDPOINTS", "regional") == "regional":
        suffix = ".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com"
        return f"https://sts.{region}{suffix}/"
    return STS_DEFAULT + "/"


def fetch_profile(environ: Mapping[str, str], name: str) -> Credentials:
    """A profile's credentials, by botocore (assume-role chains, SSO, credential_process):
    a fresh resolution each time, so nothing of botocore's own refresh policy applies."""
    import botocore.exceptions
    import botocore.session
    from botocore.credentials import create_credential_resolver

    # botocore reads its settings from os.environ (which `environ` is, but in tests).
    del environ
    # Its failures are reported here, in one line; botocore would log a traceback too.
    logging.getLogger("botocore.credentials").setLevel(logging.ERROR)
    try:
        session = botocore.session.Session(profile=name)
        if session.get_config_variable("region") is None:
            # STS needs a region to sign for; the AWS CLI would refuse, a mount should not.
            session.set_config_variable("region", "us-east-1")
        creds = create_credential_resolver(session).load_credentials()
        if creds is None:
            raise CredentialError(f"profile {name} holds no credentials", "", EX_CONFIG)
        # Read once, as they are: botocore would otherwise refresh short-lived ones again.
        for attribute in ("_advisory_refresh_timeout", "_mandatory_refresh_timeout"):
            if hasattr(creds, attribute):
                setattr(creds, attribute, 0)
        frozen = creds.get_frozen_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise CredentialError(f"profile {name} not found", "check the name", EX_CONFIG) from None
    except botocore.exceptions.ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        advice = (
            "the role's trust policy must allow the source profile's identity, and that "
            "identity needs sts:AssumeRole on the role"
            if code == "AccessDenied"
            else ""
        )
        raise CredentialError(
            f"profile {name}: STS refused ({code or 'error'}) to issue credentials", advice
        ) from None
    except botocore.exceptions.BotoCoreError as e:
        # botocore's messages name files and profiles, not secrets.
        raise CredentialError(f"profile {name}: {e}", "", EX_CONFIG) from None
    expiry = getattr(creds, "_expiry_time", None)
    return Credentials(
        frozen.access_key,
        frozen.secret_key,
        frozen.token,
        source=f"{PROFILE} {name}",
        expiry=expiry.timestamp() if expiry is not None else None,
    )


def fetch_environment(environ: Mapping[str, str]) -> Credentials:
    return Credentials(
        environ["AWS_ACCESS_KEY_ID"],
        environ["AWS_SECRET_ACCESS_KEY"],
        environ.get("AWS_SESSION_TOKEN") or None,
        source=ENVIRONMENT,
    )


def fetcher(found: Found, environ: Mapping[str, str]) -> Callable[[], Credentials]:
    env = dict(environ)
    if found.kind == ENVIRONMENT:
        return lambda: fetch_environment(env)
    if found.kind == PROFILE:
        assert found.profile is not None
        return lambda: fetch_profile(env, found.profile or "default")
    if found.kind == WEB_IDENTITY:
        return lambda: fetch_web_identity(env)
    if found.kind == CONTAINER:
        return lambda: fetch_container(env)
    return lambda: fetch_instance(env, found.role_name)


# --- refreshing --------------------------------------------------------------------------


class RefreshingSource:
    """Credentials from `fetch`, refreshed ahead of their expiry.

    `get()` is called at every request signing (from the CRT's threads) and must not wait:
    it hands out the current credentials and, once they are due for refresh (10 minutes
    before expiry, or half-way through a shorter life), has one background thread fetch
    new ones. Only credentials that have actually expired make callers wait for the
    fetch. `invalidate(creds)` is for a refusal by S3 (ExpiredToken...): the next
    credentials are fetched at once.
    """

    def __init__(self, found: Found, fetch: Callable[[], Credentials]) -> None:
        self.found = found
        self._fetch = fetch
        self._lock = threading.Lock()
        self._current: Credentials | None = None
        self._fetched = 0.0
        self._refresh_at = float("inf")
        self._refreshing = False
        self._closed = False
        self.fetches = 0

    def describe(self) -> str:
        text = self.found.describe()
        current = self._current
        if current is not None and current.expiry is not None:
            left = current.expiry - time.time()
            text += (
                f", credentials expire in {_duration(left)}"
                if left > 0
                else ", credentials have expired"
            )
        return text

    def get(self) -> Credentials:
        current = self._current
        now = time.time()
        if current is not None and now < self._refresh_at:
            return current
        if current is not None and current.expiry is not None and now < current.expiry - 1:
            self._refresh_in_background()
            return current
        try:
            return self._refresh_now(current)
        except CredentialError:
            if current is not None and current.expiry is not None and time.time() < current.expiry:
                return current  # the last second of their life: still good to sign with
            raise

    def invalidate(self, creds: object) -> bool:
        """S3 refused `creds`; True if other credentials are now in hand (worth a retry)."""
        with self._lock:
            current = self._current
            if current is not creds and current is not None:
                return True  # already replaced
            if current is not None and current.expiry is None and self.found.kind in (ENVIRONMENT,):
                return False  # fixed keys: another fetch gives the same
            if time.time() - self._fetched < _RECENT:
                return False  # just fetched: the refusal is not about their age
        try:
            fresh = self._refresh_now(creds, force=True)
        except CredentialError as e:
            log.warning("credentials refused by S3 and no new ones: %s", e)
            return False
        return fresh is not creds

    def close(self) -> None:
        self._closed = True

    # -- the fetches --

    def _store(self, creds: Credentials) -> None:
        now = time.time()
        self._current = creds
        self._fetched = now
        self.fetches += 1
        if creds.expiry is None:
            self._refresh_at = float("inf")
        else:
            life = max(creds.expiry - now, 0.0)
            self._refresh_at = creds.expiry - min(REFRESH_AHEAD, life / 2)
            log.info("%s: credentials expire in %s", self.found.kind, _duration(life))

    def _refresh_now(self, seen: object, force: bool = False) -> Credentials:
        with self._lock:
            current = self._current
            if current is not None and current is not seen:
                return current  # another thread has just fetched
            if not force and current is not None and time.time() < self._refresh_at:
                return current
            self._store(self._fetch())
            assert self._current is not None
            return self._current

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing or self._closed:
                return
            self._refreshing = True
        threading.Thread(target=self._background, name="credentials-refresh", daemon=True).start()

    def _background(self) -> None:
        try:
            creds = self._fetch()
        except Exception as e:  # kept working with the current ones; tried again soon
            current = self._current
            left = (current.expiry - time.time()) if current and current.expiry else 0.0
            retry = min(30.0, max(1.0, left / 4))
            log.warning(
                "%s: refreshing the credentials failed (%s); they expire in %s, trying again"
                " in %.0f s",
                self.found.kind,
                e,
                _duration(left),
                retry,
            )
            with self._lock:
                self._refresh_at = time.time() + retry
                self._refreshing = False
            return
        with self._lock:
            self._store(creds)
            self._refreshing = False


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def open_source(found: Found, environ: Mapping[str, str]) -> RefreshingSource:
    """A source for `found`, with its first credentials fetched (CredentialError if not)."""
    source = RefreshingSource(found, fetcher(found, environ))
    source.get()
    return source

"""From what is wanted (Config) and what is there (backend, mount point) to what to do.

`make_plan` is pure: it decides, it does not look or touch. `execute` is the one small
function that carries a plan out and ends by replacing this process with the backend,
so the process supervisord started *is* the FUSE daemon.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from run_s3fs import guard, mounts, passwd
from run_s3fs.awscreds import CONTAINER, ENVIRONMENT, INSTANCE, Found
from run_s3fs.backends import Backend
from run_s3fs.config import Config, Secret
from run_s3fs.endpoint import is_aws
from run_s3fs.errors import CantCreateError, UnavailableError
from run_s3fs.mounts import MountpointState

log = logging.getLogger("run-s3fs")

# Never handed to the backend: the keys travel only in the passwd file. s3fs would also read
# the AWS_* and AWS*KEY* forms in preference to ~/.aws; with them gone, it reads ours.
SCRUBBED_ENV = (
    "S3FS_ACCESSKEY",
    "S3FS_SECRETKEY",
    "S3FS_ACCESSKEY_FILE",
    "S3FS_SECRETKEY_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWSACCESSKEYID",
    "AWSSECRETACCESSKEY",
    "AWSSESSIONTOKEN",
)

# Secrets of the AWS chain's sources: handed to the backend only when its source needs them.
AWS_SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWSACCESSKEYID",
    "AWSSECRETACCESSKEY",
    "AWSSESSIONTOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)

# S3FS_LOGLEVEL → s3fs's dbglevel. s3fs's own "info" logs every file operation, far more
# than "info" means for a launcher; it is what you want when debugging.
_DBGLEVEL = {"debug": "info", "info": "warn", "warning": "warn", "error": "err"}

# FUSE-3 (the bundled backend) mounts over a non-empty directory anyway and rejects this.
_FUSE2_ONLY_OPTIONS = ("nonempty",)


@dataclass(frozen=True)
class Plan:
    steps: tuple[str, ...]  # human-readable, for --dry-run and the log
    passwd_path: Path | None  # None: S3FS_CREDENTIALS=aws, no keys to write
    passwd_content: Secret | None
    passwd_redacted: str  # how --dry-run shows the content
    passwd_private_dir: bool  # the path is the launcher's own default (dir made 0700)
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    mountpoint: Path = Path("/")
    unmount_first: bool = False  # a dead mount is in the way
    mkdir: bool = False
    allow_nonempty: bool = False
    guard: str = "on"  # S3FS_GUARD
    guard_kinds: tuple[str, ...] = ()  # the guards to try, strongest first
    credentials: str = ""  # S3FS_CREDENTIALS=aws: the source found (no secret)

    def command_line(self) -> str:
        return shlex.join(self.argv)


def check_state(state: MountpointState, allow_nonempty: bool) -> None:
    """Refuse a mount point that cannot take a new mount (CantCreateError, 73)."""
    mp = f"S3FS_MOUNTPOINT {state.path}"
    if state.kind == "live":
        by = (
            f" by pid {state.server_pid} ({state.server_name})"
            if state.server_pid is not None
            else " (the serving process was not found: perhaps another user's, or in another"
            " namespace)"
        )
        raise CantCreateError(
            f"{mp} is already mounted ({state.fstype}){by}: stop it first or choose another"
            " S3FS_MOUNTPOINT"
        )
    if state.kind == "not_directory":
        raise CantCreateError(
            f"{mp} exists and is not a directory: remove it or choose another path"
        )
    if state.kind == "nonempty" and not allow_nonempty:
        raise CantCreateError(
            f"{mp} is not empty: the mount would hide the files in it. Empty it, choose another"
            " S3FS_MOUNTPOINT, or add `nonempty` to S3FS_OPTIONS to mount over them anyway"
        )


def passwd_location(config: Config, environ: Mapping[str, str], euid: int) -> tuple[Path, bool]:
    if config.passwd_file is not None:
        return config.passwd_file, False
    return passwd.default_path(config, environ, euid), True


def credential_source(config: Config, environ: Mapping[str, str]) -> Found | None:
    """With S3FS_CREDENTIALS=aws, the AWS chain's source (narrowed by iam_role, ecs or
    profile= in S3FS_OPTIONS); None with keys. Reads the environment and the shared files
    only; CredentialError (78) if no source can apply."""
    if config.credentials != "aws":
        return None
    from run_s3fs.awscreds import classify

    role = config.option("iam_role")
    return classify(
        environ,
        imds=role is not None,
        imds_role=role if role not in (None, "", "auto") else None,
        container=config.option("ecs") is not None,
        profile=config.option("profile"),
    )


def only_bundled(found: Found | None) -> str | None:
    """Why s3fs cannot serve the source `found` (None: it can)."""
    if found is None or found.s3fs_can:
        return None
    return f"{found.kind} credentials ({found.s3fs_why_not})"


def needed_env(found: Found | None, backend: Backend) -> frozenset[str]:
    """The secret AWS_* variables the backend needs to reach the source `found`."""
    if found is None:
        return frozenset()
    if found.kind == ENVIRONMENT:
        return frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
    if found.kind == CONTAINER and backend.name == "python":
        return frozenset({"AWS_CONTAINER_AUTHORIZATION_TOKEN"})
    return frozenset()


def scrub_env(
    environ: Mapping[str, str],
    config: Config,
    found: Found | None = None,
    backend: Backend | None = None,
) -> dict[str, str]:
    secrets = config.secrets()
    keep = needed_env(found, backend) if backend is not None else frozenset()
    return {
        name: value
        for name, value in environ.items()
        if (name not in SCRUBBED_ENV or name in keep)
        and (name not in AWS_SECRET_ENV or name in keep)
        and not any(s in value for s in secrets)
    }


def credential_options(config: Config, backend: Backend, found: Found | None) -> list[str]:
    """What tells the backend to use the source `found` (S3FS_CREDENTIALS=aws)."""
    if found is None or any(config.option(n) is not None for n in ("iam_role", "ecs", "profile")):
        return []  # keys (passwd_file), or the user's own iam_role/ecs/profile
    if backend.name == "python":
        return ["credentials=aws"]
    if found.kind == INSTANCE:
        return ["iam_role"]  # bare: the instance's role ("auto")
    if found.kind == CONTAINER:
        return ["ecs"]
    return []  # ENVIRONMENT: s3fs reads AWS_ACCESS_KEY_ID & co. itself


def mount_options(
    config: Config, backend: Backend, passwd_path: Path | None, found: Found | None = None
) -> list[str]:
    opts = [f"passwd_file={passwd_path}"] if passwd_path is not None else []
    opts += credential_options(config, backend, found)
    if config.url is not None:
        opts.append(f"url={config.url}")
        if not is_aws(config.url) and "use_path_request_style" not in config.option_names():
            # Most S3-compatible servers (and any bare IP:port) have no per-bucket host names.
            opts.append("use_path_request_style")
    if config.region is not None:
        # s3fs 1.90 calls the signing region `endpoint=`; later versions accept it too.
        opts.append(f"endpoint={config.region}")
    if "dbglevel" not in config.option_names():
        opts.append(f"dbglevel={_DBGLEVEL[config.loglevel]}")
    for opt in config.options:
        if backend.name != "s3fs" and opt in _FUSE2_ONLY_OPTIONS:
            continue
        opts.append(opt)
    return opts


def make_plan(
    config: Config,
    backend: Backend,
    state: MountpointState,
    environ: Mapping[str, str],
    euid: int | None = None,
    guard_facts: guard.Facts | None = None,
    found: Found | None = None,
) -> Plan:
    """Decide everything; raises CantCreateError if the mount point cannot be used.

    `euid` and `guard_facts` default to this process's; `found` is the AWS chain's
    source with S3FS_CREDENTIALS=aws (run_s3fs.awscreds.classify).
    """
    allow_nonempty = "nonempty" in config.option_names()
    check_state(state, allow_nonempty)
    euid = os.geteuid() if euid is None else euid
    keys = config.credentials == "keys"
    passwd_path: Path | None
    passwd_path, private = passwd_location(config, environ, euid) if keys else (None, False)
    if "," in str(passwd_path):
        raise CantCreateError(
            f"the passwd file path {passwd_path} contains a comma, which s3fs's -o syntax cannot"
            " carry: set S3FS_PASSWD_FILE to another path"
        )
    argv = [
        *backend.command(),
        config.bucket_spec,
        str(config.mountpoint),
        "-f",
        "-o",
        ",".join(mount_options(config, backend, passwd_path, found)),
    ]
    guard_kinds = guard.candidates(config.guard, guard_facts or guard.facts())
    steps = []
    if state.kind == "stale":
        steps.append(f"lazily unmount the dead mount at {config.mountpoint}")
    if state.kind == "missing":
        steps.append(f"create the mount point {config.mountpoint} (with parents, mode 0755)")
    steps.append(guard.plan_step(config.guard, guard_kinds, config.mountpoint))
    if passwd_path is not None:
        steps.append(f"write the passwd file {passwd_path} (mode 0600) unless it is unchanged")
    elif found is not None:
        steps.append(f"no passwd file: {backend.name} gets credentials from {found.describe()}")
    steps.append(f"exec {backend.name} in the foreground: {shlex.join(argv)}")
    return Plan(
        steps=tuple(steps),
        passwd_path=passwd_path,
        passwd_content=passwd.content(config) if keys else None,
        passwd_redacted=passwd.redacted_content(config) if keys else "(none: S3FS_CREDENTIALS=aws)",
        passwd_private_dir=private,
        argv=tuple(argv),
        env=scrub_env(environ, config, found, backend),
        mountpoint=config.mountpoint,
        unmount_first=state.kind == "stale",
        mkdir=state.kind in ("missing", "stale"),
        allow_nonempty=allow_nonempty,
        guard=config.guard,
        guard_kinds=guard_kinds,
        credentials=found.describe() if found is not None else "",
    )


def execute(plan: Plan) -> NoReturn:
    """Carry the plan out and become the backend. Never returns."""
    if plan.unmount_first:
        mounts.lazy_unmount(plan.mountpoint)
        # What was under the dead mount is what the new one will cover: judge it again.
        check_state(mounts.inspect(plan.mountpoint), plan.allow_nonempty)
    if plan.mkdir and not plan.mountpoint.is_dir():
        mounts.prepare(plan.mountpoint)
        log.info("created the mount point %s", plan.mountpoint)
    if plan.guard == "off":
        guard.remove(plan.mountpoint)
        kind = None
    else:
        kind = guard.apply(plan.mountpoint, plan.guard_kinds, plan.guard)  # warns if it cannot
    if plan.passwd_path is None or plan.passwd_content is None:
        log.info("credentials: %s", plan.credentials)
    elif passwd.write(plan.passwd_path, plan.passwd_content, plan.passwd_private_dir):
        log.info("wrote the passwd file %s", plan.passwd_path)
    else:
        log.info("the passwd file %s is up to date", plan.passwd_path)
    log.info("exec %s", plan.command_line())  # argv carries no key: passwd_file only
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if kind == "mode":
        # fusermount wants a writable mount point; a helper puts 0555 back under the mount.
        guard.lift_for_mount(plan.mountpoint, os.getpid(), dict(plan.env))
    try:
        os.execvpe(plan.argv[0], list(plan.argv), dict(plan.env))
    except OSError as exc:
        raise UnavailableError(f"cannot run {plan.argv[0]}: {exc.strerror}") from None

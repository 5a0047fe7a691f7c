"""`run-s3fs`: flags → Config → backend → mount point → Plan → check | dry-run | exec.

Kept thin: every decision lives in config/plan/mounts/backends; this file wires them
and turns expected failures (LauncherError) into one `run-s3fs: error: …` line and the
failure's sysexits code. Heavy modules (boto3 for --check, psutil, the FUSE backend)
are imported only on the paths that need them, so a plain launch starts quickly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from run_s3fs import __version__
from run_s3fs.errors import EX_OK, EX_USAGE, ConfigError, LauncherError, UsageError

if TYPE_CHECKING:
    from run_s3fs import backends, config
    from run_s3fs.mounts import MountpointState
    from run_s3fs.plan import Plan

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Variables: S3FS_BUCKET, S3FS_MOUNTPOINT (required); S3FS_ACCESSKEY and "
    "S3FS_SECRETKEY (or S3FS_ACCESSKEY_FILE, S3FS_SECRETKEY_FILE), or S3FS_CREDENTIALS=aws "
    "for the AWS credential chain (AWS_* variables, AWS_PROFILE, web identity, container "
    "and instance roles; S3FS_CREDENTIALS=keys is the default); S3FS_URL, S3FS_REGION, "
    "S3FS_BACKEND, S3FS_OPTIONS, S3FS_PASSWD_FILE, S3FS_LOGLEVEL, S3FS_GUARD, "
    "S3FS_ENVIRONMENT_JSON. "
    "Exit codes: 0 ok, 64 usage, 69 unavailable, 73 cannot create, 77 no permission, "
    "78 configuration.",
)
@click.option("--check", is_flag=True, help="Diagnose the setup and the bucket; mount nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --check: print the report as JSON.")
@click.option(
    "--dry-run", is_flag=True, help="Print what would be done and the command; change nothing."
)
@click.option(
    "--env-file",
    type=_FILE,
    help="Read variables from this dotenv file (default: ./.env if present).",
)
@click.option(
    "--environment-json",
    type=_FILE,
    help="dotCloud environment.json to read (default: $S3FS_ENVIRONMENT_JSON, "
    "else /home/dotcloud/environment.json if present).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "s3fs", "python"], case_sensitive=False),
    help="Override S3FS_BACKEND.",
)
@click.version_option(
    __version__, "--version", prog_name="run-s3fs", message="%(prog)s %(version)s"
)
def command(
    check: bool,
    as_json: bool,
    dry_run: bool,
    env_file: Path | None,
    environment_json: Path | None,
    backend: str | None,
) -> int:
    """Mount an S3 bucket described by S3FS_* variables, in the foreground.

    With no flags: validate the configuration, write the passwd file, clean a dead
    mount, create the mount point, then replace this process with the backend
    (s3fs, or the bundled Python backend).
    """
    if as_json and not check:
        raise UsageError("--json only goes with --check")
    if check and dry_run:
        raise UsageError("--check and --dry-run do not go together: choose one")
    from run_s3fs import config

    flags = {"S3FS_BACKEND": backend.lower()} if backend else {}
    env_path, json_path = config.resolve_files(os.environ, Path.cwd(), env_file, environment_json)
    if check:
        from run_s3fs import check as check_module

        return check_module.run_check(flags, env_path, json_path, as_json)
    return launch(flags, env_path, json_path, dry_run)


def launch(
    flags: dict[str, str], env_file: Path | None, env_json: Path | None, dry_run: bool
) -> int:
    from run_s3fs import backends, config, log, mounts, plan

    logger = log.setup(os.environ.get("S3FS_LOGLEVEL", "info").lower())
    cfg = config.load(flags, os.environ, env_file, env_json)
    logger = log.setup(cfg.loglevel)
    for warning in cfg.warnings:
        logger.warning(warning)
    found = plan.credential_source(cfg, os.environ)
    backend = backends.resolve(cfg.backend, backends.launcher_dir(), plan.only_bundled(found))
    if backend.reason:
        logger.info("S3FS_BACKEND=auto: using the bundled backend, as %s", backend.reason)
    state = mounts.inspect(cfg.mountpoint)
    logger.debug("mount point: %s", state.describe())
    the_plan = plan.make_plan(cfg, backend, state, os.environ, found=found)
    if dry_run:
        _print_dry_run(cfg, backend, state, the_plan)
        return EX_OK
    logger.info("mounting %s at %s with %s", cfg.bucket_spec, cfg.mountpoint, backend.name)
    plan.execute(the_plan)  # logs each step as it takes it


def _print_dry_run(
    cfg: config.Config, backend: backends.Backend, state: MountpointState, the_plan: Plan
) -> None:
    from run_s3fs import backends

    shown = {
        "S3FS_BUCKET": cfg.bucket_spec,
        "S3FS_MOUNTPOINT": str(cfg.mountpoint),
        "S3FS_CREDENTIALS": cfg.credentials,
        "S3FS_ACCESSKEY": cfg.access_key.redacted() if cfg.access_key else "(not set)",
        "S3FS_SECRETKEY": cfg.secret_key.redacted() if cfg.secret_key else "(not set)",
        "S3FS_URL": cfg.url or "(AWS)",
        "S3FS_REGION": cfg.region or "(s3fs default)",
        "S3FS_BACKEND": cfg.backend,
        "S3FS_OPTIONS": ",".join(cfg.options),
        "S3FS_PASSWD_FILE": str(the_plan.passwd_path or "(none)"),
        "S3FS_LOGLEVEL": cfg.loglevel,
        "S3FS_GUARD": cfg.guard,
    }
    out = ["run-s3fs --dry-run: nothing is written, mounted or executed", "configuration:"]
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        source = cfg.sources.get(name, "default")
        out.append(f"  {name:<{width}} = {value}  [{source}]")
    version = backends.version(backend)
    out.append(f"backend: {backend.name} ({backend.executable}{', ' + version if version else ''})")
    if backend.reason:
        out.append(f"  (S3FS_BACKEND=auto chose it: {backend.reason})")
    if the_plan.credentials:
        out.append(f"credentials: {the_plan.credentials}")
    out.append(f"mount point: {state.describe()}")
    if state.kind in ("empty", "nonempty"):
        from run_s3fs import guard

        present = guard.current(cfg.mountpoint)
        out.append(f"guard now: {guard.DESCRIPTION[present] if present else 'none'}")
    out.append("steps:")
    out.extend(f"  {i}. {step}" for i, step in enumerate(the_plan.steps, start=1))
    out.append(f"passwd file content: {the_plan.passwd_redacted}")
    out.append(f"command: {the_plan.command_line()}")
    out.append("environment handed over (names only): " + " ".join(sorted(the_plan.env)))
    removed = sorted(set(os.environ) - set(the_plan.env))
    why = (
        "keys travel only in the passwd file"
        if the_plan.passwd_path is not None
        else "secrets the backend does not need"
    )
    out.append(f"environment withheld ({why}): " + (" ".join(removed) if removed else "(none)"))
    click.echo(_scrub("\n".join(out), cfg, os.environ))


def _scrub(text: str, cfg: config.Config, environ: Mapping[str, str]) -> str:
    """The last line of defence: no secret value in what is printed, whatever path put it
    there (a token pasted into S3FS_OPTIONS, say)."""
    from run_s3fs.config import Secret
    from run_s3fs.plan import AWS_SECRET_ENV

    values = [*cfg.secrets(), *(environ[n] for n in AWS_SECRET_ENV if environ.get(n))]
    for value in values:
        if len(value) >= 4:
            text = text.replace(value, Secret(value).redacted())
    return text


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"run-s3fs: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: run the command, map every failure to its exit code."""
    try:
        code = command.main(args=argv, prog_name="run-s3fs", standalone_mode=False)
    except click.UsageError as exc:
        # click's own default is 2; sysexits says 64.
        _fail(f"{exc.format_message()} (see run-s3fs --help)", EX_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), EX_USAGE)
    except click.Abort:
        _fail("interrupted", 130)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"run-s3fs: error: {problem}", err=True)
        count = len(exc.problems)
        _fail(
            f"{count} configuration problem{'s' if count > 1 else ''}; nothing was changed",
            exc.exit_code,
        )
    except LauncherError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else EX_OK)

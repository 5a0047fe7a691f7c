"""`python -m run_s3fs.fs BUCKET[:/prefix] MOUNTPOINT -f -o opt,opt=val …` (s3fs's shape).

Credentials: -o passwd_file=FILE, the AWS_* environment keys or ~/.passwd-s3fs (fixed
keys); or temporary ones, refreshed ahead of expiry: -o iam_role[=NAME|auto] (the EC2
instance profile), -o ecs (container credentials), -o profile=NAME (the AWS shared
files), -o credentials=aws (the whole AWS credential chain).

Checks everything it can before mounting (options, credentials, the bucket, the
mountpoint) and exits non-zero with one line if something is wrong; then serves the
mount in the foreground until SIGTERM/SIGINT or an unmount, uploads whatever is still
pending, and exits 0 (1 if some data could not be uploaded: the log says where it is).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import stat
import sys
from typing import TYPE_CHECKING

from run_s3fs.errors import (
    CantCreateError,
    LauncherError,
    PermissionDeniedError,
    UnavailableError,
)
from run_s3fs.fs import credentials
from run_s3fs.fs.options import Options, parse_args

if TYPE_CHECKING:
    from run_s3fs.fs.engine import Page

log = logging.getLogger("run_s3fs.fs")
PROG = "run_s3fs.fs"


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s run-s3fs.fs[%(process)d] %(levelname)s %(message)s",
    )
    # Third-party chatter only when debugging, and even then not botocore's wire dumps
    # (which would carry signed headers).
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if level != "debug":
        logging.getLogger("mfusepy").setLevel(logging.ERROR)
        logging.getLogger("fuse").setLevel(logging.ERROR)


def check_mountpoint(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CantCreateError(f"mountpoint {path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise CantCreateError(
                f"mountpoint {path} is a dead FUSE mount (Transport endpoint is not connected); "
                f"run `fusermount3 -uz {path}` first"
            ) from None
        raise CantCreateError(f"mountpoint {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CantCreateError(f"mountpoint {path} is not a directory")
    return st


def engine_settings(opts: Options, probe: bool = False):
    """The engine's settings from the options; a probe's are bounded (one retry, short
    timeouts), so a start against a dead endpoint fails within seconds."""
    from run_s3fs.endpoint import is_aws
    from run_s3fs.fs import sse
    from run_s3fs.fs.engine import EngineSettings

    url = opts.url if opts.url_given else None
    region = (
        opts.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    return EngineSettings(
        bucket=opts.bucket,
        url=url,
        region=region,
        path_style=opts.use_path_request_style or not is_aws(url),
        retries=min(opts.retries, 1) if probe else opts.retries,
        connect_timeout=min(opts.connect_timeout, 10) if probe else opts.connect_timeout,
        readwrite_timeout=min(opts.readwrite_timeout, 20) if probe else opts.readwrite_timeout,
        part_size=opts.multipart_size,
        multipart_threshold=opts.multipart_threshold,
        parallel_count=opts.parallel_count,
        singlepart_copy_limit=opts.singlepart_copy_limit,
        max_connections=opts.multireq_max + 2 * opts.parallel_count + opts.max_thread_count,
        verify_tls=opts.verify_tls,
        **sse.engine_fields(opts, os.environ, is_aws(url), quiet=probe),
    )


def probe_bucket(opts: Options, creds: credentials.Source) -> Page:
    """A bounded check that the bucket exists and the credentials work, before mounting.
    It lists the mount's root as a lookup lists a directory, and that page is the root's
    first hint (namespace.py): else the first lookup of each name there would ask S3
    one question after the other, as nothing says whether the name is a directory."""
    from run_s3fs.fs.core.namespace import LOOKUP_PAGE
    from run_s3fs.fs.engine import open_engine

    engine = open_engine(engine_settings(opts, probe=True), creds)
    where = opts.url if opts.url_given else "AWS S3"
    try:
        return engine.list_page(opts.prefix, max_keys=LOOKUP_PAGE)
    except OSError as e:
        code = getattr(e, "code", "")
        if code == "NoSuchBucket" or e.errno == errno.ENOENT:
            raise UnavailableError(f"bucket {opts.bucket} does not exist at {where}") from None
        if e.errno == errno.EACCES:
            check = (
                "check the access key, the secret key and the bucket's policy"
                if isinstance(creds, credentials.StaticSource)
                else f"check that the role behind {creds.describe()} may use the bucket"
            )
            raise PermissionDeniedError(
                f"access to bucket {opts.bucket} at {where} denied ({code or 'forbidden'}): "
                + check
            ) from None
        raise UnavailableError(f"cannot reach {where} for bucket {opts.bucket}: {e}") from None
    finally:
        engine.close()


def root_attr(opts: Options, st: os.stat_result):
    from run_s3fs.fs.layout import Attr

    perm = stat.S_IMODE(st.st_mode)
    if opts.mp_umask is not None:
        perm = 0o777 & ~opts.mp_umask
    uid = opts.uid if opts.uid is not None else os.geteuid()
    gid = opts.gid if opts.gid is not None else os.getegid()
    return Attr(stat.S_IFDIR | perm, 0, uid, gid, st.st_mtime_ns, st.st_ctime_ns, st.st_atime_ns)


def prepare_spool(opts: Options) -> str:
    """The private spool directory for written data, made before mounting so that an
    unusable `tmpdir` is a one-line error at start rather than EIO on every write."""
    from run_s3fs.fs.core.spool import make_spool_dir, unsaved_files

    try:
        spool_dir = make_spool_dir(opts.tmpdir)
    except OSError as e:
        where = f"tmpdir={opts.tmpdir}" if opts.tmpdir else "the temporary directory"
        detail = f"{e.strerror}: {e.filename}" if e.filename else (e.strerror or str(e))
        raise CantCreateError(
            f"cannot make the spool directory under {where} ({detail}); "
            "give -o tmpdir=DIR, a writable local directory"
        ) from None
    left = unsaved_files(spool_dir)
    if left:
        log.warning(
            "%d file(s) that an earlier run could not upload are in %s (named by time and"
            " key): copy back what is still wanted, then delete them",
            len(left),
            os.path.dirname(left[0]),
        )
    return spool_dir


def return_big_buffers_to_the_system() -> None:
    """Buffers of 4 MiB and more (upload parts, read blocks) straight from and back to the
    kernel. glibc otherwise raises its mmap threshold after the first such free and keeps
    later ones in per-thread arenas: RSS then climbs by tens of MiB with every multipart
    file (scripts/soak.py showed 170 → 250 MiB in 4 minutes)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3
        libc.mallopt(m_mmap_threshold, 4 * 1024 * 1024)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def serve(
    opts: Options, creds: credentials.Source, st: os.stat_result, spool_dir: str, root: Page
) -> int:
    return_big_buffers_to_the_system()
    # mfusepy picks a libfuse when imported; without this it finds libfuse2 (s3fs's).
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy

    from run_s3fs.fs.core.filesystem import Filesystem, FsSettings
    from run_s3fs.fs.core.namespace import Namespace, NamespaceSettings
    from run_s3fs.fs.engine import open_engine
    from run_s3fs.fs.fuse_adapter import Fuse, FuseAdapter, XattrAdapter
    from run_s3fs.fs.fusebuf import read_ahead, read_size
    from run_s3fs.fs.layout import Overrides
    from run_s3fs.fs.readahead import raise_readahead
    from run_s3fs.fs.shutdown import GracefulStop

    engine = open_engine(engine_settings(opts), creds)
    namespace = Namespace(
        engine,
        NamespaceSettings(
            prefix=opts.prefix,
            uid=os.geteuid(),
            gid=os.getegid(),
            stat_ttl=opts.stat_cache_expire,
            negative_ttl=min(opts.stat_cache_expire, 2.0),
            max_entries=opts.max_stat_cache_size,
            max_in_flight=opts.multireq_max,
            compat_dir=opts.compat_dir,
        ),
    )
    namespace.hint_from("/", root)
    core = Filesystem(
        engine,
        namespace,
        FsSettings(
            spool_dir=spool_dir,
            root_attr=root_attr(opts, st),
            overrides=Overrides(opts.uid, opts.gid, opts.umask),
            read_only=opts.read_only,
            retry_interval=max(opts.upload_retry_interval, 1.0),
            readahead_bytes=opts.readahead_mb * 1024 * 1024,
            read_cache_bytes=opts.read_cache_mb * 1024 * 1024,
            read_cache_min_free=(
                None if opts.ensure_diskfree is None else opts.ensure_diskfree * 1024 * 1024
            ),
            max_seen_etags=opts.max_stat_cache_size,
        ),
    )
    max_read = read_size()
    ahead = read_ahead(max_read)
    adapter = (XattrAdapter if opts.use_xattr else FuseAdapter)(
        core, max_read=max_read, read_ahead=ahead
    )
    stop = GracefulStop(core.busy, opts.shutdown_grace)

    def started(fuse_ptr: int | None) -> None:
        stop.session_started(fuse_ptr)
        raise_readahead(opts.mountpoint, ahead // 1024)

    def ending() -> None:
        # The session is over; nothing may interrupt the last uploads now.
        stop.session_ended()
        stop.ignore_further()
        log.info("unmounted; uploading what is still pending")
        state["destroyed"] = True

    state = {"destroyed": False}
    adapter.on_init = started
    adapter.on_destroy = ending
    stop.install()
    # mfusepy resets SIGINT to the default around fuse_main, which would let libfuse
    # take SIGINT over (an abrupt stop): keep ours.
    mfusepy.signal = lambda signum, handler: signal.getsignal(signum)
    fuse_options = {
        "fsname": opts.fsname,
        "subtype": opts.subtype,
        "default_permissions": True,
        "max_read": max_read,
        "max_threads": max(opts.max_thread_count, 2),
        # libfuse 3.14's default (-1) makes it log a bogus "Ignoring invalid max threads".
        "max_idle_threads": max(opts.max_thread_count, 2),
    }
    if opts.allow_other:
        fuse_options["allow_other"] = True
    if opts.read_only:
        fuse_options["ro"] = True
    log.info("credentials: %s", creds.describe())
    log.info(
        "mounting bucket %s%s at %s (stat cache %.0fs, spool %s)",
        opts.bucket,
        f":/{opts.prefix.rstrip('/')}" if opts.prefix else "",
        opts.mountpoint,
        opts.stat_cache_expire,
        spool_dir,
    )
    try:
        Fuse(
            adapter,
            opts.mountpoint,
            foreground=True,
            nothreads=opts.single_thread,
            raw_fi=True,
            **fuse_options,
        )
    except RuntimeError as e:
        if not state["destroyed"]:
            log.error("FUSE mount of %s failed (libfuse status %s)", opts.mountpoint, e)
            return 1
    finally:
        engine.close()
        creds.close()
        shutil.rmtree(spool_dir, ignore_errors=True)
    if core.failures:
        log.error("%d file(s) could not be uploaded; see the UNSAVED lines above", core.failures)
        return 1
    log.info("exiting cleanly")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return 0
    try:
        opts = parse_args(args)
        setup_logging(opts.log_level)
        if opts.ignored:
            log.warning("ignoring options that do not apply here: %s", ", ".join(opts.ignored))
        creds = credentials.open_for(
            opts.passwd_file, opts.bucket, opts.chain, opts.iam_role, opts.profile
        )
        st = check_mountpoint(opts.mountpoint)
        root = probe_bucket(opts, creds)
        spool_dir = prepare_spool(opts)
    except LauncherError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    return serve(opts, creds, st, spool_dir, root)


if __name__ == "__main__":
    sys.exit(main())

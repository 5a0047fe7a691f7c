"""An S3 engine, the namespace and the core over one, for tests that talk to the local
server without a mount; and s3fs's directory markers, put for tests of either kind."""

from __future__ import annotations

import stat

from conftest import ACCESS_KEY, SECRET_KEY

from run_s3fs.fs.core.filesystem import Filesystem, FsSettings
from run_s3fs.fs.core.namespace import Namespace, NamespaceSettings
from run_s3fs.fs.credentials import Credentials
from run_s3fs.fs.engine import Engine, EngineSettings, open_engine
from run_s3fs.fs.layout import Attr

MIB = 1024 * 1024


def make_engine(url: str, bucket: str, **overrides) -> Engine:
    """Short timeouts and small parts, so that multipart paths run on small files."""
    settings = dict(
        bucket=bucket,
        url=url,
        region="us-east-1",
        path_style=True,
        retries=2,
        connect_timeout=3,
        readwrite_timeout=10,
        part_size=5 * MIB,
        multipart_threshold=8 * MIB,
        parallel_count=4,
    )
    settings.update(overrides)
    return open_engine(EngineSettings(**settings), Credentials(ACCESS_KEY, SECRET_KEY))


def make_namespace(
    engine: Engine,
    prefix: str = "",
    stat_ttl: float = 60,
    negative_ttl: float = 2,
    max_in_flight: int = 4,
) -> Namespace:
    """The namespace over `engine`, as root (uid and gid 0), with these caches."""
    return Namespace(
        engine,
        NamespaceSettings(
            prefix=prefix,
            uid=0,
            gid=0,
            stat_ttl=stat_ttl,
            negative_ttl=negative_ttl,
            max_entries=1000,
            max_in_flight=max_in_flight,
        ),
    )


def make_core(url: str, bucket: str, spool: str, prefix: str = "", **engine) -> Filesystem:
    """The core (what the FUSE adapter calls) on its own engine: one retry, two parts
    in flight, unless `engine` says otherwise."""
    fs_engine = make_engine(url, bucket, **{"retries": 1, "parallel_count": 2, **engine})
    ns = make_namespace(fs_engine, prefix=prefix)
    root = Attr(stat.S_IFDIR | 0o755, 0, 0, 0, 0, 0, 0)
    return Filesystem(fs_engine, ns, FsSettings(spool_dir=spool, root_attr=root))


DIR_META = {"mode": "16877", "uid": "0", "gid": "0", "mtime": "1700000000"}


def put_marker(client, bucket: str, key: str, mtime: str = DIR_META["mtime"]) -> None:
    """A directory marker as s3fs makes one, with its headers (`mtime` in seconds)."""
    client.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"",
        ContentType="application/x-directory",
        Metadata={**DIR_META, "mtime": mtime},
    )

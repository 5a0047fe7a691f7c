"""An S3 engine, and the core over one, for tests that talk to the local server without
a mount."""

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


def make_core(url: str, bucket: str, spool: str, prefix: str = "", **engine) -> Filesystem:
    """The core (what the FUSE adapter calls) on its own engine: one retry, two parts
    in flight, unless `engine` says otherwise."""
    fs_engine = make_engine(url, bucket, **{"retries": 1, "parallel_count": 2, **engine})
    ns = Namespace(
        fs_engine,
        NamespaceSettings(
            prefix=prefix,
            uid=0,
            gid=0,
            stat_ttl=60,
            negative_ttl=2,
            max_entries=1000,
            max_in_flight=4,
        ),
    )
    root = Attr(stat.S_IFDIR | 0o755, 0, 0, 0, 0, 0, 0)
    return Filesystem(fs_engine, ns, FsSettings(spool_dir=spool, root_attr=root))

"""An S3 engine for tests that talk to the local server without a mount."""

from __future__ import annotations

from conftest import ACCESS_KEY, SECRET_KEY

from run_s3fs.fs.credentials import Credentials
from run_s3fs.fs.engine import Engine, EngineSettings, open_engine

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

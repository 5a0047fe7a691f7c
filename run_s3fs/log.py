"""Logging to stderr, one line per event, in a form that reads well in supervisord's log:

run-s3fs[1234]: INFO wrote the passwd file /run/run-s3fs/bucket.0123456789.passwd
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "run-s3fs"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup(level: str = "info") -> logging.Logger:
    """Configure the launcher's logger (idempotent); `level` is an S3FS_LOGLEVEL value."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("run-s3fs[%(process)d]: %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    return logger

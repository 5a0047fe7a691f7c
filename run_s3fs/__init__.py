"""run-s3fs: mount an S3 bucket from environment variables, in the foreground, under a supervisor."""

__version__ = "0.1.0"

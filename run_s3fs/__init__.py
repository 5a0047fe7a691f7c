"""run-s3fs: mount an S3 bucket from environment variables, in the foreground."""

__version__ = "0.1.0"

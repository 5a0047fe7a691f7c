"""The bundled s3fs-compatible FUSE backend: `python -m run_s3fs.fs BUCKET[:/prefix] MNT -f -o …`.

Layers, top to bottom (dependencies point down): ops (FUSE operations) → files/cache
(open files, stat and listing caches) → s3/layout (the S3 client, the object format).
Nothing in the launcher imports this package; it execs it.
"""

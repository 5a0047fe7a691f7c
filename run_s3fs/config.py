"""Configuration: gathered from every source once, validated once, frozen.

(Skeleton: the data shapes other modules code against. Loading and validation are
filled in by the launcher work; keep these names.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class Secret:
    """A string that never prints itself: repr/str/format show a redaction."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redacted(self) -> str:
        """First 4 characters and the length: enough to tell two keys apart, not to use one."""
        if len(self._value) <= 8:
            return f"****({len(self._value)} chars)"
        return f"{self._value[:4]}…({len(self._value)} chars)"

    def __repr__(self) -> str:
        return f"Secret({self.redacted()})"

    __str__ = redacted

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Config:
    """Everything a launch needs, validated. Secrets are `Secret`s."""

    bucket: str  # bare bucket name, no s3:// and no sub-path
    prefix: str  # "" or a sub-path without leading/trailing slash ("a/b")
    mountpoint: Path  # absolute
    access_key: Secret
    secret_key: Secret
    url: str | None = None  # endpoint URL; None = AWS
    region: str | None = None
    backend: str = "auto"  # auto | s3fs | python
    options: tuple[str, ...] = ()  # extra -o options, already split on commas
    passwd_file: Path | None = None  # None = the private per-user default
    loglevel: str = "info"  # debug | info | warning | error
    # Where each variable's value came from, by variable name: "flag", "environment",
    # ".env (/path)", "environment.json (/path)", "S3FS_SECRETKEY_FILE (/path)", "default".
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    warnings: tuple[str, ...] = ()  # non-fatal findings (e.g. unusual key lengths)

    @property
    def bucket_spec(self) -> str:
        """BUCKET or BUCKET:/prefix, as s3fs takes it on its command line."""
        return f"{self.bucket}:/{self.prefix}" if self.prefix else self.bucket

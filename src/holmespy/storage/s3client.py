"""S3 locations and the boto3 client holmespy uses for them.

Endpoint, region and credentials come from the standard AWS settings
(`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, profiles,
instance roles): holmespy has no copies of them. The client settings are the
ones measured to behave with S3-compatible stores: path-style addressing and
checksums only when required for custom endpoints, standard retries, and
timeouts that fail a closed port in a fraction of a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from holmespy.errors import HolmesError

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


class StorageError(HolmesError):
    """A storage operation failed; the message says what to check."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    """Without leading or trailing '/'; may be empty."""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StorageError(f"{url!r} is not an s3://bucket/prefix URL")
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key or self.prefix}".rstrip("/")


def endpoint_url() -> str | None:
    """The custom endpoint from the standard AWS variables, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(*, max_attempts: int = 5, read_timeout: float = READ_TIMEOUT) -> Any:
    """A boto3 S3 client configured from the environment (raises StorageError without boto3)."""
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise StorageError("S3 storage needs boto3: pip install 'holmespy[s3]'") from None
    custom = endpoint_url()
    options: dict[str, Any] = {
        "signature_version": "s3v4",
        "retries": {"mode": "standard", "max_attempts": max_attempts},
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": read_timeout,
    }
    if custom:
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=custom, config=BotoConfig(**options))

"""S3 locations and the boto3 client holmespy uses for them.

Endpoint, region and credentials come from the standard AWS settings
(`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, profiles,
instance roles): holmespy has no copies of them. The client settings are the
ones measured to behave with S3-compatible stores: path-style addressing and
checksums only when required for custom endpoints, standard retries, and
timeouts that fail a closed port in a fraction of a second.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from holmespy.errors import ConfigError, HolmesError
from holmespy.lazyimport import importing
from holmespy.redact import SECRET_VARIABLES, public_url, redact

__all__ = [
    "SECRET_VARIABLES",
    "Encryption",
    "ObjectNotFound",
    "S3Location",
    "StorageError",
    "credential_source",
    "endpoint_url",
    "make_client",
    "public_endpoint",
    "redact",
]

if TYPE_CHECKING:
    from holmespy.config import Config

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


class StorageError(HolmesError):
    """A storage operation failed; the message says what to check.

    `permanent` errors (no such bucket, access denied, no credentials) will
    not go away by retrying: someone has to change a setting. The others
    (network, throttling, 5xx) are worth retrying with backoff.
    """

    def __init__(self, message: str, *, permanent: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class ObjectNotFound(StorageError):
    """The key does not exist in the store."""


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
    """The custom endpoint from the standard AWS variables, if any (may hold secrets)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def public_endpoint() -> str:
    """The endpoint as it may be shown: without user info or query."""
    custom = endpoint_url()
    return public_url(custom) if custom else "AWS S3"


def make_client(
    *, max_attempts: int = 5, read_timeout: float = READ_TIMEOUT, max_pool_connections: int = 10
) -> Any:
    """A boto3 S3 client configured from the environment (raises StorageError without boto3).

    Made on the uploader's thread, so importing boto3 and making the client
    (which imports more of it) are each done `with importing:`: a fork waits
    for the one in progress (holmespy.lazyimport), ~0.15 s each here.
    """
    try:
        with importing:
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
        "max_pool_connections": max_pool_connections,
    }
    if custom:
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    with importing:
        session = boto3.session.Session()
        client = session.client("s3", endpoint_url=custom, config=BotoConfig(**options))
        # The first connection encodes the host name with the idna codec, which
        # Python imports on first use (on an upload thread): import it here.
        codecs.lookup("idna")
    return client


def credential_source() -> str:
    """Where the AWS SDK finds credentials here ("env", "shared-credentials-file",
    "iam-role"...), or "none found": their origin, never their value."""
    try:
        with importing:
            import boto3
    except ImportError:
        raise StorageError("S3 storage needs boto3: pip install 'holmespy[s3]'") from None
    credentials = boto3.session.Session().get_credentials()
    method = getattr(credentials, "method", None) if credentials is not None else None
    return str(method) if method else "none found"


@dataclass(frozen=True)
class Encryption:
    """Server-side encryption asked of the store for every object holmespy writes."""

    mode: str
    """`AES256` (keys managed by the store) or `aws:kms`."""
    kms_key_id: str | None = None
    """With `aws:kms`: the key id or ARN; None means the bucket's default KMS key."""

    @classmethod
    def from_config(cls, config: Config) -> Encryption | None:
        """From HOLMES_S3_SSE / HOLMES_S3_KMS_KEY_ID; a key id alone implies aws:kms."""
        mode, key_id = config.s3_sse, config.s3_kms_key_id
        if key_id is not None and mode == "AES256":
            raise ConfigError(
                "HOLMES_S3_KMS_KEY_ID", key_id, "unset, or HOLMES_S3_SSE=aws:kms (not AES256)"
            )
        if key_id is not None:
            return cls("aws:kms", key_id)
        return cls(mode) if mode is not None else None

    def request_args(self) -> dict[str, str]:
        """The PutObject / CreateMultipartUpload parameters that ask for it."""
        args = {"ServerSideEncryption": self.mode}
        if self.kms_key_id is not None:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

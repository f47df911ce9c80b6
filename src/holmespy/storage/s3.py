"""S3-compatible object storage through boto3.

Every request carries a Content-MD5, so the store itself refuses a body
damaged on the way. Large files go up as multipart uploads whose parts are
sent by holmespy's own daemon threads rather than boto3's transfer manager:
its thread pool is joined at interpreter exit and refuses new work inside
`atexit` handlers, which is exactly when a final flush runs, and its
transfers have no overall deadline. Parts here are bounded by one, and a
stuck store can never hold the host's exit.

boto3 is imported on first use, never at import: `holmespy.start()` must stay
a few milliseconds.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import functools
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from holmespy.bundle import TMP_PREFIX
from holmespy.redact import address, public_url
from holmespy.storage.base import ObjectInfo, ObjectReader, check_key, content_type
from holmespy.storage.s3client import (
    Encryption,
    ObjectNotFound,
    S3Location,
    StorageError,
    endpoint_url,
    make_client,
    public_endpoint,
    redact,
)

T = TypeVar("T")

MIN_PART = 5 << 20
"""S3's smallest part (except the last)."""
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Transfer:
    """How large files are sent. The defaults won the upload benchmark on loopback SeaweedFS."""

    multipart_threshold: int = 16 << 20
    part_size: int = 8 << 20
    concurrency: int = 4
    """Parts in flight at once; memory held is about `concurrency * part_size`."""


# Error codes that retrying cannot fix, with the setting a person should look at.
_PERMANENT: dict[str, str] = {
    "NoSuchBucket": "the bucket does not exist: create it, or fix the bucket in HOLMES_STORAGE "
    "(or AWS_ENDPOINT_URL_S3 if it lives on another endpoint)",
    "InvalidBucketName": "the bucket name is not valid: fix HOLMES_STORAGE",
    "InvalidAccessKeyId": "the store does not know the access key: check AWS_ACCESS_KEY_ID "
    "(or AWS_PROFILE)",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check "
    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "AccessDenied": "access denied: the identity from AWS_ACCESS_KEY_ID / AWS_PROFILE / the "
    "instance role needs s3:PutObject on the bucket and prefix",
    "AllAccessDisabled": "all access to the bucket is disabled: check the bucket's owner",
    "AccountProblem": "the account has a problem: check the AWS account",
    "ExpiredToken": "the credentials expired: refresh AWS_SESSION_TOKEN / AWS_PROFILE",
    "InvalidToken": "the session token is not valid: check AWS_SESSION_TOKEN",
    "TokenRefreshRequired": "the credentials expired: refresh AWS_SESSION_TOKEN / AWS_PROFILE",
    "PermanentRedirect": "the bucket is in another region: set AWS_REGION",
    "AuthorizationHeaderMalformed": "the bucket is in another region: set AWS_REGION",
    "RequestTimeTooSkewed": "this host's clock is too far off: fix its time (NTP)",
    "InvalidArgument": "the store rejected a parameter: check HOLMES_S3_SSE / HOLMES_S3_KMS_KEY_ID",
    "KMS.NotFoundException": "the KMS key was not found: check HOLMES_S3_KMS_KEY_ID",
    "KMS.DisabledException": "the KMS key is disabled: check HOLMES_S3_KMS_KEY_ID",
    "KMS.AccessDeniedException": "no access to the KMS key: check HOLMES_S3_KMS_KEY_ID "
    "and the key policy",
}
_RETRYABLE_4XX = frozenset(
    {"RequestTimeout", "SlowDown", "Throttling", "ThrottlingException", "BadDigest", "NoSuchUpload"}
)


class S3Store:
    """A bucket and prefix as a store; the client comes from the standard AWS settings."""

    def __init__(
        self,
        location: S3Location,
        client: Any = None,
        *,
        encryption: Encryption | None = None,
        transfer: Transfer | None = None,
        max_attempts: int = 5,
        page_size: int = 1000,
    ) -> None:
        self.location = location
        self.page_size = page_size
        self.encryption = encryption
        self.transfer = transfer or Transfer()
        self._client = client
        self._max_attempts = max_attempts
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never the client: what it holds is none of a log line's business.
        return f"S3Store({self.location.url()!r})"

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (importing boto3 costs a few hundred ms)."""
        with self._lock:
            if self._client is None:
                self._client = make_client(
                    max_attempts=self._max_attempts,
                    max_pool_connections=max(10, self.transfer.concurrency),
                )
                self._secrets = _client_secrets(self._client)
            return self._client

    @property
    def endpoint(self) -> str:
        """Where requests go, as it may be shown (no user info, no query)."""
        if self._client is not None:
            return public_url(str(self._client.meta.endpoint_url))
        return public_endpoint()

    # -- writing --

    def put_file(
        self,
        key: str,
        path: Path,
        metadata: Mapping[str, str] | None = None,
        *,
        timeout: float = 300.0,
    ) -> ObjectInfo:
        full = self._full(key)
        extra: dict[str, Any] = {
            "Metadata": {k: _ascii(v) for k, v in (metadata or {}).items()},
            "ContentType": content_type(key),
            **(self.encryption.request_args() if self.encryption else {}),
        }
        deadline = time.monotonic() + timeout
        try:
            size = path.stat().st_size
            small = size < self.transfer.multipart_threshold
            data = path.read_bytes() if small else b""
        except OSError as exc:
            raise StorageError(f"cannot read {path} to upload it: {exc}") from exc
        try:
            if small:
                put = functools.partial(
                    self.client.put_object,
                    Bucket=self.location.bucket,
                    Key=full,
                    Body=data,
                    ContentMD5=_md5(data),
                    **extra,
                )
                etag = _in_threads([put], 1, deadline, key)[0]["ETag"]
            else:
                etag = self._put_multipart(full, path, size, extra, deadline, key)
        except Exception as exc:
            raise self.error(exc, key) from None
        return ObjectInfo(key=key, size=size, last_modified=None, etag=str(etag))

    def _put_multipart(
        self,
        full: str,
        path: Path,
        size: int,
        extra: dict[str, Any],
        deadline: float,
        key: str,
    ) -> str:
        bucket, client = self.location.bucket, self.client
        part_size = max(self.transfer.part_size, MIN_PART, math.ceil(size / MAX_PARTS))
        count = math.ceil(size / part_size)
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=full, **extra)["UploadId"]
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:

            def send(number: int) -> dict[str, Any]:
                data = os.pread(fd, part_size, (number - 1) * part_size)
                reply = client.upload_part(
                    Bucket=bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=_md5(data),
                )
                return {"PartNumber": number, "ETag": reply["ETag"]}

            sends = [functools.partial(send, n) for n in range(1, count + 1)]
            parts = _in_threads(sends, self.transfer.concurrency, deadline, key)
            reply = client.complete_multipart_upload(
                Bucket=bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            return str(reply["ETag"])
        except BaseException:
            # Orphaned parts cost storage until aborted; a dead store leaves
            # them for `clean_incomplete` on the next attempt.
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=bucket, Key=full, UploadId=upload_id)
            raise
        finally:
            os.close(fd)

    def clean_incomplete(self, prefix: str) -> int:
        """Abort multipart uploads under `prefix` that a killed process left open."""
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.location.bucket, Prefix=self._full_prefix(prefix)
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    self.client.abort_multipart_upload(
                        Bucket=self.location.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except Exception as exc:
            raise self.error(exc, prefix) from None
        return aborted

    # -- reading --

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under `prefix`, page by page (continuation tokens), in the store's order.

        S3-compatible stores order `x/…` and `x-…` differently: sort if order matters.
        """
        strip = len(self.location.prefix) + 1 if self.location.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket,
                Prefix=self._full_prefix(prefix),
                PaginationConfig={"PageSize": self.page_size},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"][strip:],
                        size=int(item["Size"]),
                        last_modified=item.get("LastModified"),
                        etag=item.get("ETag"),
                    )
        except Exception as exc:
            raise self.error(exc, prefix) from None

    def folders(
        self, prefix: str = "", *, start: str = "", start_after: str = ""
    ) -> builtins.list[str]:
        """The common prefixes one level below `prefix`: a delimited listing, `page_size`
        names a request, following continuation tokens; `start` narrows the listing itself
        and `start_after` is where the store begins it (event ids sort by time)."""
        full = self._full(prefix) if prefix else self.location.prefix
        full = full + "/" if full else ""  # the bucket's root when there is no prefix
        options: dict[str, Any] = {
            "Bucket": self.location.bucket,
            "Prefix": full + start,
            "Delimiter": "/",
            "MaxKeys": self.page_size,
        }
        if start_after:
            options["StartAfter"] = full + start_after
        names: list[str] = []
        try:
            while True:
                page = self.client.list_objects_v2(**options)
                names += [
                    p["Prefix"][len(full) :].rstrip("/") for p in page.get("CommonPrefixes", [])
                ]
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    # Keys order `x-y/` before `x/`; names are compared without the `/`.
                    return sorted(names)
                options["ContinuationToken"] = token
        except Exception as exc:
            raise self.error(exc, prefix) from None

    def files(self, prefix: str) -> builtins.list[ObjectInfo]:
        """Every object below the folder `prefix`; a folder exists only through its keys."""
        found = sorted(self.list(f"{check_key(prefix)}/"), key=lambda info: info.key)
        if not found:
            raise ObjectNotFound(f"no {prefix} in {self.location.url()}")
        return found

    def get_bytes(self, key: str, *, limit: int | None = None) -> bytes:
        """The object's bytes; only its first `limit` bytes when given (the rest is not read)."""
        with self.open(key) as reader:
            if limit is not None:
                return reader.read(limit)
            return reader.read(-1)

    def open(self, key: str) -> ObjectReader:
        """The object's body as it arrives; its Content-Length is the reader's size."""
        try:
            reply = self.client.get_object(Bucket=self.location.bucket, Key=self._full(key))
        except Exception as exc:
            raise self.error(exc, key) from None
        body = reply["Body"]

        def read(size: int) -> bytes:
            try:
                return bytes(body.read(None if size < 0 else size))
            except Exception as exc:  # the connection dropped or stalled mid-body
                raise self.error(exc, key) from None

        return ObjectReader(int(reply["ContentLength"]), read, body.close)

    def local_path(self, key: str) -> None:
        return None

    def check(self) -> None:
        """One listing request for at most one key under the prefix: the first thing a
        reader needs, and its errors name the problem (HeadBucket answers a bare 404 or 403)."""
        try:
            self.client.list_objects_v2(
                Bucket=self.location.bucket, Prefix=self.location.key(), MaxKeys=1
            )
        except Exception as exc:
            raise self.error(exc) from None

    def get_file(self, key: str, dest: Path) -> None:
        """Download to a temp sibling of `dest`, renamed into place only when complete."""
        temp = dest.parent / f"{TMP_PREFIX}{os.getpid()}-{dest.name}"
        try:
            self.client.download_file(
                self.location.bucket, self._full(key), str(temp), Config=_serial_transfer()
            )
            os.replace(temp, dest)
        except Exception as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise self.error(exc, key) from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            reply = self.client.head_object(Bucket=self.location.bucket, Key=self._full(key))
        except Exception as exc:
            error = self.error(exc, key)
            if isinstance(error, ObjectNotFound):
                return None
            raise error from None
        return ObjectInfo(
            key=key,
            size=int(reply["ContentLength"]),
            last_modified=reply.get("LastModified"),
            etag=reply.get("ETag"),
            metadata=dict(reply.get("Metadata", {})),
        )

    def url(self, key: str) -> str:
        """The object's address over HTTP(S): path-style on custom endpoints, as boto3 sends."""
        full = quote(self._full(key))
        custom = endpoint_url()
        if custom:  # told to a webhook: never the endpoint's user info or query
            return f"{address(custom).rstrip('/')}/{self.location.bucket}/{full}"
        region = self.client.meta.region_name or "us-east-1"
        return f"https://{self.location.bucket}.s3.{region}.amazonaws.com/{full}"

    def presign(self, key: str, expires: float) -> str | None:
        """A link that downloads `key` until it expires: its query is the signature, so
        it is kept; user info an endpoint URL may carry is not."""
        try:
            url = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.location.bucket, "Key": self._full(key)},
                ExpiresIn=int(expires),
            )
        except Exception as exc:
            raise self.error(exc, key) from None
        parts = urlsplit(str(url))
        if "@" not in parts.netloc:
            return str(url)
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))

    # -- errors --

    def error(self, exc: BaseException, key: str = "") -> StorageError:
        """`exc` said as a StorageError: what failed, where, and which setting to check."""
        if isinstance(exc, StorageError):
            return exc
        where = self.location.url(self.location.key(key))
        code, status = _error_code(exc)
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code in ("404", None)):
            return ObjectNotFound(f"no {key} in {self.location.url()}", code=code)
        if code is not None and code in _PERMANENT:
            message = f"{where}: {_PERMANENT[code]} ({code}, endpoint {self.endpoint})"
            return StorageError(self.redact(message), permanent=True, code=code)
        kind = type(exc).__name__
        if kind in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            todo = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or a role"
            message = f"{where}: no usable AWS credentials ({kind}): {todo}"
            return StorageError(self.redact(message), permanent=True, code=kind)
        if kind == "NoRegionError":
            message = f"{where}: no AWS region: set AWS_REGION"
            return StorageError(message, permanent=True, code=kind)
        if code is not None:
            # Unknown 4xx refusals will not change on their own; 5xx and throttling will.
            permanent = status is not None and 400 <= status < 500 and code not in _RETRYABLE_4XX
            message = f"{where}: the store answered {code} ({_error_message(exc)})"
            return StorageError(self.redact(message), permanent=permanent, code=code)
        message = f"{where}: cannot reach the store at {self.endpoint} ({kind}: {exc})"
        todo = "; is it up? check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and the network"
        return StorageError(self.redact(message + todo), code=kind)

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _full(self, key: str) -> str:
        return self.location.key(check_key(key))

    def _full_prefix(self, prefix: str) -> str:
        # Keep a trailing '/': `svc/` must not match `svc-2/`.
        if not prefix:
            return f"{self.location.prefix}/" if self.location.prefix else ""
        return self.location.key(prefix) + ("/" if prefix.endswith("/") else "")


def _in_threads(
    tasks: Sequence[Callable[[], T]], workers: int, deadline: float, key: str
) -> list[T]:
    """Run `tasks` on up to `workers` daemon threads; results in order; the first error wins.

    The caller waits until `deadline` at most: past it, no new task starts and a
    transient StorageError is raised; a request in flight ends by its own
    socket timeout on a thread nobody waits for.
    """
    results: list[Any] = [None] * len(tasks)
    errors: list[BaseException] = []
    next_task = iter(range(len(tasks)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = None if errors else next(next_task, None)
            if index is None:
                return
            try:
                results[index] = tasks[index]()
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                return

    threads = [
        threading.Thread(target=work, name="holmespy-upload-part", daemon=True)
        for _ in range(max(1, min(workers, len(tasks))))
    ]
    try:
        for thread in threads:
            thread.start()
    except RuntimeError:  # no new threads this late in interpreter shutdown: send inline
        work()
        threads = [t for t in threads if t.ident is not None]
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        with lock:
            errors.append(StorageError(f"uploading {key} took longer than its time bound"))
    if errors:
        raise errors[0]
    return results


def _serial_transfer() -> Any:
    # Downloads are for the CLI, on the caller's thread: no pool to outlive it.
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(use_threads=False)


def _md5(data: bytes) -> str:
    # Content-MD5 is an integrity check the store enforces, not a security measure.
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _ascii(value: str) -> str:
    # Metadata travels in HTTP headers, which S3 signs as US-ASCII.
    return value if value.isascii() and value.isprintable() else quote(value, safe=" /:@,.-_")


def _error_code(exc: BaseException) -> tuple[str | None, int | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, None
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return (str(code) if code else None), (int(status) if status else None)


def _error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", {})
    return str(response.get("Error", {}).get("Message") or exc)


def _client_secrets(client: Any) -> tuple[str, ...]:
    """The credential values the client signs with, so `redact` knows what to hide."""
    try:
        credentials = client._request_signer._credentials
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except Exception:  # private botocore layout: redaction then covers the AWS_* variables only
        return ()
    if frozen is None:
        return ()
    return tuple(v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v)

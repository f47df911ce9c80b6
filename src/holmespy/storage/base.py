"""The narrow interface every store implements: the local folder and S3 alike.

Keys are relative to the store's root (a folder, or the `prefix` of an
`s3://bucket/prefix` location) and use `/`: an event's files have the same
key, `<service>/<YYYY-MM-DD>/<event-id>/<file>`, on disk and in a bucket. So
the uploader, the CLI and tests can move events between stores without
knowing which one they hold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from holmespy.storage.s3client import StorageError

__all__ = ["ObjectInfo", "StorageError", "Store", "check_key", "content_type"]


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object, as a listing or `head()` sees it."""

    key: str
    """Relative to the store's root."""
    size: int
    last_modified: dt.datetime | None
    etag: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """User metadata; `head()` fills it, listings leave it empty (S3 does not list it)."""


class Store(Protocol):
    """Where finished event bundles are kept. Every failure raises `StorageError`."""

    def put_file(
        self, key: str, path: Path, metadata: Mapping[str, str] | None = None, *, timeout: float
    ) -> ObjectInfo:
        """Store `path` under `key`; returns only once the store confirmed it, within `timeout`."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in the store's order."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The object's content; `ObjectNotFound` if there is none."""
        ...

    def get_file(self, key: str, dest: Path) -> None:
        """Write the object to `dest` (complete or not at all)."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and metadata, or None if there is no such key."""
        ...

    def url(self, key: str) -> str:
        """Where the object lives, for people and tools (not a credential)."""
        ...

    def presign(self, key: str, expires: float) -> str | None:
        """A link anyone holding it can download with for `expires` seconds; None if unsupported."""
        ...

    def clean_incomplete(self, prefix: str) -> int:
        """Discard half-written objects under `prefix` left by a crash; returns how many."""
        ...


def check_key(key: str) -> str:
    """`key` if it is a plain relative key; keys come from folder names, never trusted blindly."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"{key!r} is not a relative object key")
    return key


_CONTENT_TYPES = {
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".gz": "application/gzip",
}


def content_type(name: str) -> str:
    """Dumps are served as what they are, not as gzip-encoded text a browser would unpack."""
    return _CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")

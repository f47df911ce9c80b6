"""The narrow interface every store implements: the local folder and S3 alike.

Keys are relative to the store's root (a folder, or the `prefix` of an
`s3://bucket/prefix` location) and use `/`: an event's files have the same
key, `<service>/<YYYY-MM-DD>/<event-id>/<file>`, on disk and in a bucket. So
the uploader, the CLI and tests can move events between stores without
knowing which one they hold.

The uploader writes through it; the CLI (`ls`, `fetch`, `show`, `serve`)
reads through it, and nothing else in holmespy talks to a bucket or walks a
store's folder. Reading answers what the key layout makes cheap: the
"folders" one level below a key (an S3 delimited listing: 1,000 names a
request), the files of one folder, a file's first bytes, or a file a block
at a time. A folder store opens everything below its root without following
a link and reads regular files only: what it reads may have been planted by
anyone who could write there.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

from holmespy.storage.s3client import ObjectNotFound, StorageError

__all__ = [
    "CHUNK",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectReader",
    "StorageError",
    "Store",
    "UnsafeObject",
    "check_key",
    "content_type",
]

CHUNK = 256 * 1024
"""Bytes read at a time when a file is copied or served: its memory, whatever the file's size."""


class UnsafeObject(StorageError):
    """An entry of a folder store that is not read: a link, a folder, a pipe, a device, or
    a file replaced while it was opened. `problem` says which ("is a symbolic link, ...")."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"refused {key}: it {problem}", permanent=True)
        self.key = key
        self.problem = problem


class ObjectReader:
    """A stored file being read a block at a time; close it (or use `with`).

    `size` is known before the first byte (what a download announces as its
    Content-Length); the bytes may still stop short or run on if the file
    changes meanwhile, so a reader that promised `size` checks what it got.
    """

    def __init__(self, size: int, read: Callable[[int], bytes], close: Callable[[], None]) -> None:
        self.size = size
        self._read = read
        self._close = close

    def read(self, size: int = CHUNK) -> bytes:
        """The next bytes, at most `size` (all the rest when negative); b"" at the end."""
        return self._read(size)

    def close(self) -> None:
        self._close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
    """Where finished event bundles are kept.

    Every failure raises `StorageError`: `ObjectNotFound` when the key (or
    folder) is not there, `UnsafeObject` for an entry a folder store does
    not read. The one exception is a folder store's reading, which raises
    the `OSError` the system gave (a permission refused, a disk error) as
    `open()` would: it names the file, and a reader that skips one
    unreadable event among many tells it from a store that is down.
    """

    @property
    def endpoint(self) -> str:
        """Where the store is, as a message may show it (never a credential)."""
        ...

    def put_file(
        self, key: str, path: Path, metadata: Mapping[str, str] | None = None, *, timeout: float
    ) -> ObjectInfo:
        """Store `path` under `key`; returns only once the store confirmed it, within `timeout`."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in the store's order."""
        ...

    def folders(
        self, prefix: str = "", *, start: str = "", start_after: str = ""
    ) -> builtins.list[str]:
        """The names of the folders one level below the folder `prefix` ("" is the root),
        sorted, only those that begin with `start` and sort after `start_after`.

        A folder store lists real folders (a link to one is not one); in S3 a
        folder is a common prefix of keys, listed 1,000 a request. A folder
        that does not exist has none.
        """
        ...

    def files(self, prefix: str) -> builtins.list[ObjectInfo]:
        """What the folder `prefix` holds, sorted by key; `ObjectNotFound` if it does not exist.

        A folder store gives every entry directly in it, of any kind, with its
        own size (a link is not followed): a reader decides what it takes. In
        S3, every key below it.
        """
        ...

    def get_bytes(self, key: str, *, limit: int | None = None) -> bytes:
        """The object's content, only its first `limit` bytes when given (the rest is not
        read); `ObjectNotFound` if there is none."""
        ...

    def open(self, key: str) -> ObjectReader:
        """The object, to be read a block at a time; `ObjectNotFound` if there is none."""
        ...

    def local_path(self, key: str) -> Path | None:
        """Where the key lives on this machine, for a folder store; None for a remote one."""
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

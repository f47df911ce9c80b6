"""Where events are read from: `--from SRC`, else HOLMES_STORAGE, else HOLMES_DUMP_PATH.

A source is a store (`holmespy.storage`: a folder or an `s3://bucket/prefix`,
read by the same classes the uploader writes with) seen as events. Both kinds
hold the same layout, `<service>/<YYYY-MM-DD>/<event-id>/<file>`, and answer
the same four questions: which services, which days of a service, which
events of a day, which files of an event. Listing stops at the event level
on purpose: an event id carries its time and rule, so `ls` can sort and
filter from names alone, and on S3 a delimited listing returns 1,000 events
per request where a listing of their files returns 1,000 files
(benchmarks/cli_ls.py, 10,000 events in SeaweedFS: 1.0 s for the delimited
listings, 12 s for every key).

Names found in a source are data from elsewhere: a service, day or event id
that does not have the expected form is skipped, and a file name that would
leave its event's folder (`..`, absolute, backslashes) is refused by
`member_path` before anything is written. In a folder, everything below the
folder named is opened without following links, and only regular files are
read. The default folder (no --from, no HOLMES_* setting) is read only if it
belongs to this user and nobody else can write it: anyone can create that
name first.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from holmespy import safefs
from holmespy.bundle import DAY_RE as DAY_RE
from holmespy.bundle import EVENT_ID_RE as EVENT_ID_RE
from holmespy.bundle import open_dump_root
from holmespy.cli.deadline import DEFAULT_TIMEOUT, Deadline
from holmespy.cli.errors import BadUsage, CLIError, NotFound, UnsafePath
from holmespy.cli.text import warn
from holmespy.config import default_dump_path, parse_storage
from holmespy.storage.base import CHUNK as CHUNK
from holmespy.storage.base import ObjectNotFound, ObjectReader, Store, UnsafeObject
from holmespy.storage.local import LocalStore
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import S3Location, StorageError

T = TypeVar("T")

SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

Progress = Callable[[int], None]
"""Called with the number of bytes just copied."""


@dataclass(frozen=True)
class EventRef:
    """One event as named by its source; its `event.json` is read only when needed."""

    service: str
    day: str
    id: str

    @property
    def rule(self) -> str:
        match = EVENT_ID_RE.fullmatch(self.id)
        return match.group(2) if match else "?"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    """Relative to the event's folder, as the source spells it (not yet checked)."""
    size: int


class Source:
    """A store read as events: what `ls`, `fetch`, `show` and `serve` read through.

    The store (`holmespy.storage`: a folder or S3, the uploader's own
    classes) does the reading; this adds the event layout, the names' checks,
    the CLI's deadline (an S3 source's requests each run under it) and its
    one-line errors, the same for every kind of store.
    """

    workers = 1
    """Listings and reads worth running at once (1: a local disk gains nothing)."""

    def __init__(self, store: Store, url: str, timeout: float | None = None) -> None:
        self.store = store
        self.url = url
        """How the user would name this source: a folder or `s3://bucket/prefix`."""
        self.deadline = None if timeout is None else Deadline(timeout, store.endpoint)

    def renewed(self, seconds: float) -> Source:
        """This source for one request of a long-running reader (`serve`): a deadline of its
        own, the same store (one client, one connection pool)."""
        if self.deadline is None:
            return self
        fresh = copy.copy(self)
        fresh.deadline = Deadline(seconds, self.store.endpoint)
        return fresh

    def services(self) -> list[str]:
        return [n for n in self._folders([]) if SERVICE_RE.fullmatch(n)]

    def days(self, service: str) -> list[str]:
        return [n for n in self._folders([service]) if DAY_RE.fullmatch(n)]

    def event_ids(
        self, service: str, day: str, *, prefix: str = "", start_after: str = ""
    ) -> list[str]:
        ids = self._folders([service, day], start=prefix, start_after=start_after)
        return [i for i in ids if EVENT_ID_RE.fullmatch(i)]

    def files(self, ref: EventRef) -> list[RemoteFile]:
        """Every entry of the event's folder, of any kind: `fetch` decides what it takes."""
        base = _event_key(ref)
        try:
            found = self._call(f"the files of {self.url}/{base}/", lambda: self.store.files(base))
        except ObjectNotFound:
            raise NotFound(f"{ref.id}: no such event in {self.url}") from None
        return [RemoteFile(info.key[len(base) + 1 :], info.size) for info in found]

    def read(self, ref: EventRef, name: str, *, limit: int) -> bytes:
        """The file's first `limit` bytes at most."""
        key = self._key(ref, name)
        with self._reading(ref, name):
            return self._call(f"{self.url}/{key}", lambda: self.store.get_bytes(key, limit=limit))

    def open(self, ref: EventRef, name: str) -> ObjectReader:
        """The file, to be read a block at a time: a large one may take minutes, so each
        block must come within the deadline's seconds of the one before, not before it."""
        key = self._key(ref, name)
        what = f"{self.url}/{key}"
        with self._reading(ref, name):
            reader = self._call(what, lambda: self.store.open(key))
        deadline = self.deadline
        if deadline is None:
            return reader
        return ObjectReader(
            reader.size,
            lambda size: deadline.run_step(what, lambda: reader.read(size)),
            reader.close,
        )

    def copy(self, ref: EventRef, name: str, out: Any, progress: Progress) -> None:
        """Write the file's bytes to the binary file object `out`, a block at a time."""
        with self.open(ref, name) as reader:
            while block := reader.read(CHUNK):
                out.write(block)
                progress(len(block))

    def folder(self, ref: EventRef) -> Path | None:
        """The event's folder when it is already on this machine."""
        return self.store.local_path(_event_key(ref))

    def _key(self, ref: EventRef, name: str) -> str:
        return f"{_event_key(ref)}/{member_path(name)}"

    def _where(self, key: str) -> str:
        return str(self.store.local_path(key) or f"{self.url}/{key}")

    def _folders(self, parts: list[str], *, start: str = "", start_after: str = "") -> list[str]:
        prefix = "/".join(parts)
        what = f"a listing of {self.url}/" + (f"{prefix}/" if prefix else "")
        try:
            return self._call(
                what, lambda: self.store.folders(prefix, start=start, start_after=start_after)
            )
        except PermissionError as exc:
            if not parts:
                raise
            # Another user's folder in a shared dump folder: skipped and said, as one
            # unreadable event.json is, so that it cannot hide every other event.
            warn(f"skipped {self._where(prefix)}: {exc.strerror or exc}")
            return []

    @contextlib.contextmanager
    def _reading(self, ref: EventRef, name: str) -> Iterator[None]:
        try:
            yield
        except ObjectNotFound:
            raise NotFound(f"{ref.id}: no {name} in {self.url}") from None
        except UnsafeObject as exc:  # a link or a pipe planted in a folder
            where = self._where(_event_key(ref))
            raise UnsafePath(f"refused {name!r} in {where}: {exc.problem}") from None

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return call() if self.deadline is None else self.deadline.run(what, call)


def _event_key(ref: EventRef) -> str:
    return f"{ref.service}/{ref.day}/{ref.id}"


class LocalSource(Source):
    """A dump folder, `HOLMES_DUMP_PATH` by default."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise NotFound(f"{root}: no such dump folder (use --from, or set HOLMES_DUMP_PATH)")
        super().__init__(LocalStore(root), str(root))
        self.root = root


class S3Source(Source):
    """An `s3://bucket/prefix` the uploader writes to, read through the uploader's `S3Store`
    (its client settings, its error messages, its redaction of secrets)."""

    workers = 10
    """The store's client keeps 10 connections; more threads would queue for them, and
    GETs are bound by the S3 client's CPU time (~2 ms each), not by the server."""
    page_size = 1000
    """Names per listing request (S3's maximum)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        try:
            location = S3Location.parse(url)
        except StorageError as exc:
            raise BadUsage(str(exc)) from None
        super().__init__(S3Store(location, page_size=self.page_size), location.url(), timeout)


def resolve_source(given: str | None, timeout: float = DEFAULT_TIMEOUT) -> Source:
    """The source `--from` names, else HOLMES_STORAGE, else HOLMES_DUMP_PATH; an S3 one
    gives up after `timeout` seconds without an answer (`holmespy.cli.deadline`)."""
    src = given or os.environ.get("HOLMES_STORAGE") or os.environ.get("HOLMES_DUMP_PATH")
    if src and src.startswith("s3://"):
        # The same checks as HOLMES_STORAGE gets in the library (a prefix is printed
        # and becomes part of every key): a bad one is bad usage, said in one line.
        url = parse_storage("--from" if given else "HOLMES_STORAGE", src) or src
        return S3Source(url, timeout)
    if src and "://" in src:
        raise BadUsage(f"{src}: a source is a folder or an s3://bucket/prefix URL")
    if src:
        return LocalSource(Path(src))
    return LocalSource(_checked_default())


def _checked_default() -> Path:
    """The user's default dump folder, if it is the user's: its name can be taken by anyone."""
    root = default_dump_path()
    try:
        fd = open_dump_root(root, create=False)
    except safefs.Refused as exc:
        raise CLIError(f"{exc}; or read it anyway with --from {root}") from None
    except OSError:
        return root  # LocalSource says what is wrong with it
    if fd is not None:
        os.close(fd)
    return root


def member_path(name: str) -> PurePosixPath:
    """`name` as a path inside an event folder, or UnsafePath if it would leave it."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise UnsafePath(f"refused {name!r}: a bundle file must stay inside its event folder")
    return PurePosixPath(*parts)


def check_event_id(text: str) -> str:
    """An event id (or a prefix of one) typed by the user, safe to use in a path or key."""
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._-]*", text) or ".." in text:
        raise BadUsage(f"{text!r} is not an event id (they look like 20261124T040833.180Z-cpu-…)")
    return text

"""Where events are read from: `--from SRC`, else HOLMES_STORAGE, else HOLMES_DUMP_PATH.

Both kinds of source hold the same layout, `<service>/<YYYY-MM-DD>/<event-id>/<file>`,
under a folder or under an `s3://bucket/prefix`, and answer the same four
questions: which services, which days of a service, which events of a day,
which files of an event. Listing stops at the event level on purpose: an
event id carries its time and rule, so `ls` can sort and filter from names
alone, and on S3 a delimited listing returns 1,000 events per request where
a listing of their files returns 1,000 files (benchmarks/cli_ls.py, 10,000
events in SeaweedFS: 1.0 s for the delimited listings, 12 s for every key).

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

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from holmespy import safefs
from holmespy.bundle import DAY_RE as DAY_RE
from holmespy.bundle import EVENT_ID_RE as EVENT_ID_RE
from holmespy.bundle import open_dump_root
from holmespy.cli.deadline import DEFAULT_TIMEOUT, Deadline
from holmespy.cli.errors import BadUsage, CLIError, NotFound, UnsafePath
from holmespy.cli.text import warn
from holmespy.config import default_dump_path, parse_storage
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import ObjectNotFound, S3Location, StorageError

SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

CHUNK = 256 * 1024

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


class Source(Protocol):
    url: str
    """How the user would name this source: a folder or `s3://bucket/prefix`."""
    workers: int
    """Listings and reads worth running at once (1: a local disk gains nothing)."""

    def services(self) -> list[str]: ...

    def days(self, service: str) -> list[str]: ...

    def event_ids(
        self, service: str, day: str, *, prefix: str = "", start_after: str = ""
    ) -> list[str]: ...

    def files(self, ref: EventRef) -> list[RemoteFile]: ...

    def read(self, ref: EventRef, name: str, *, limit: int) -> bytes:
        """The file's first `limit` bytes at most."""
        ...

    def copy(self, ref: EventRef, name: str, out: Any, progress: Progress) -> None:
        """Write the file's bytes to the binary file object `out`."""
        ...

    def folder(self, ref: EventRef) -> Path | None:
        """The event's folder when it is already on this machine."""
        ...


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


# --------------------------------------------------------------------------- local folder


class LocalSource:
    """A dump folder, `HOLMES_DUMP_PATH` by default."""

    workers = 1

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise NotFound(f"{root}: no such dump folder (use --from, or set HOLMES_DUMP_PATH)")
        self.root = root
        self.url = str(root)

    def services(self) -> list[str]:
        return self._names([], SERVICE_RE)

    def days(self, service: str) -> list[str]:
        return self._names([service], DAY_RE)

    def event_ids(
        self, service: str, day: str, *, prefix: str = "", start_after: str = ""
    ) -> list[str]:
        ids = self._names([service, day], EVENT_ID_RE)
        return [i for i in ids if i.startswith(prefix) and i > start_after]

    def _names(self, parts: list[str], pattern: re.Pattern[str]) -> list[str]:
        """The real folders below `parts` whose names match. `--service NAME` can name a
        link, so the folders on the way are opened without following one, as for reads."""
        try:
            with (
                safefs.owned(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)) as root,
                safefs.owned(safefs.descend(root, parts)) as folder,
            ):
                return [name for name in safefs.subfolders(folder) if pattern.fullmatch(name)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except PermissionError as exc:
            if not parts:
                raise
            # Another user's folder in a shared dump folder: skipped and said, as one
            # unreadable event.json is, so that it cannot hide every other event.
            warn(f"skipped {self.root / '/'.join(parts)}: {exc.strerror or exc}")
            return []
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link where a folder should be: nothing to list
                return []
            raise

    def folder(self, ref: EventRef) -> Path:
        return self.root / ref.service / ref.day / ref.id

    def files(self, ref: EventRef) -> list[RemoteFile]:
        """Every entry of the event's folder, of any kind: `fetch` decides what it takes."""
        try:
            folder = self._open_event(ref)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{ref.id}: no such event in {self.url}") from None
        with safefs.owned(folder), os.scandir(folder) as entries:
            found = [RemoteFile(e.name, e.stat(follow_symlinks=False).st_size) for e in entries]
        return sorted(found, key=lambda f: f.name)

    def read(self, ref: EventRef, name: str, *, limit: int) -> bytes:
        with self._open(ref, name) as f:
            return f.read(limit)

    def copy(self, ref: EventRef, name: str, out: Any, progress: Progress) -> None:
        with self._open(ref, name) as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                out.write(block)
                progress(len(block))

    def _open_event(self, ref: EventRef) -> int:
        # Every part below the folder the user named is opened without following links.
        with safefs.owned(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)) as root:
            return safefs.descend(root, [ref.service, ref.day, ref.id])

    def _open(self, ref: EventRef, name: str) -> BinaryIO:
        """A regular file of the event, read by descriptor; `UnsafePath` for anything else."""
        path = self.folder(ref) / member_path(name)
        try:
            with safefs.owned(self._open_event(ref)) as folder:
                fd, _ = safefs.open_file(folder, name, path)
        except safefs.Refused as exc:
            raise UnsafePath(f"refused {name!r} in {self.folder(ref)}: {exc.problem}") from None
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{ref.id}: no {name} in {self.url}") from None
        return open(fd, "rb")


# --------------------------------------------------------------------------- S3


class S3Source:
    """An `s3://bucket/prefix` the uploader writes to.

    Reads go through the uploader's `S3Store` (its client settings, its
    error messages, its redaction of secrets); the delimited listings that
    make `ls` fast are made here, on the store's client, as the store only
    lists whole subtrees.
    """

    workers = 10
    """The store's client keeps 10 connections; more threads would queue for them, and
    GETs are bound by botocore's CPU time (~2 ms each), not by the server."""
    page_size = 1000
    """Names per listing request (S3's maximum)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        try:
            location = S3Location.parse(url)
        except StorageError as exc:
            raise BadUsage(str(exc)) from None
        self.store = S3Store(location)
        self.url = location.url()
        self.deadline = Deadline(timeout, self.store.endpoint)

    def services(self) -> list[str]:
        return [p for p in self._prefixes("") if SERVICE_RE.fullmatch(p)]

    def days(self, service: str) -> list[str]:
        return [p for p in self._prefixes(f"{service}/") if DAY_RE.fullmatch(p)]

    def event_ids(
        self, service: str, day: str, *, prefix: str = "", start_after: str = ""
    ) -> list[str]:
        ids = self._prefixes(f"{service}/{day}/", prefix, start_after=start_after)
        return [i for i in ids if EVENT_ID_RE.fullmatch(i)]

    def folder(self, ref: EventRef) -> None:
        return None

    def files(self, ref: EventRef) -> list[RemoteFile]:
        base = f"{ref.service}/{ref.day}/{ref.id}/"
        listing = self.deadline.run(
            f"the files of {self.url}/{base}", lambda: list(self.store.list(base))
        )
        found = [RemoteFile(o.key[len(base) :], o.size) for o in listing]
        if not found:
            raise NotFound(f"{ref.id}: no such event in {self.url}")
        return found

    def read(self, ref: EventRef, name: str, *, limit: int) -> bytes:
        key = self._key(ref, name)
        try:
            return self.deadline.run(
                f"{self.url}/{key}", lambda: self.store.get_bytes(key, limit=limit)
            )
        except ObjectNotFound:
            raise NotFound(f"{self.url}: no {self._key(ref, name)}") from None

    def copy(self, ref: EventRef, name: str, out: Any, progress: Progress) -> None:
        key = self._key(ref, name)
        store = self.store
        what = f"{self.url}/{key}"
        try:
            reply = self.deadline.run(
                what,
                lambda: store.client.get_object(Bucket=store.location.bucket, Key=self._full(key)),
            )
            blocks = reply["Body"].iter_chunks(CHUNK)
            while block := self.deadline.run_step(what, lambda: next(blocks, b"")):
                out.write(block)
                progress(len(block))
        except (OSError, CLIError):
            raise
        except Exception as exc:
            raise store.error(exc, key) from None

    def _key(self, ref: EventRef, name: str) -> str:
        return f"{ref.service}/{ref.day}/{ref.id}/{member_path(name)}"

    def _full(self, key: str) -> str:
        return self.store.location.key(key)

    def _prefixes(self, base: str, more: str = "", *, start_after: str = "") -> list[str]:
        """The names one level below `base` (its "subfolders"), following continuation tokens."""
        full = self._full(base)
        full = full + "/" if full else ""  # the bucket's root when there is no prefix
        options: dict[str, Any] = {
            "Bucket": self.store.location.bucket,
            "Prefix": full + more,
            "Delimiter": "/",
            "MaxKeys": self.page_size,
        }
        if start_after:
            options["StartAfter"] = full + start_after
        names: list[str] = []
        what = f"a listing of {self.url}/{base}"
        while True:
            try:
                page = self.deadline.run(what, lambda: self.store.client.list_objects_v2(**options))
            except CLIError:
                raise
            except Exception as exc:
                raise self.store.error(exc, base) from None
            names += [p["Prefix"][len(full) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return names
            options["ContinuationToken"] = token

"""`holmespy fetch EVENT_ID`: copy an event bundle to `DIR/<event-id>/`.

A bucket or a dump folder can hold things holmespy did not write, so fetch
takes only what the event's `event.json` vouches for. It copies
`event.json` first (bounded in size), then each file it lists, and keeps a
file only if it arrived with the listed size and sha256; a file the list
does not name is never requested. In a local folder a file is also read
only if it is a regular file (no link, no pipe, no device). Each file
refused is one line on stderr and the exit status is 1, but it never holds
back the others: the verified ones are written. Without a usable
`event.json`, only `event.json` itself is copied, for a person to look at.

The copy is built in a new private folder beside the target, with a name
nobody can guess or plant in advance, by descriptor, and renamed into
place at the end: an interrupted fetch leaves nothing that looks like a
bundle. Folders that `-o` names and that do not exist yet are created 0700,
whatever the umask.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holmespy import safefs
from holmespy.bundle import EVENT_FILE
from holmespy.cli.deadline import DEFAULT_TIMEOUT
from holmespy.cli.errors import BadUsage, CLIError, NotFound, UnsafePath
from holmespy.cli.events import Query, add_filter_args, find_event, latest_event
from holmespy.cli.progress import progress_for
from holmespy.cli.source import EVENT_ID_RE, EventRef, RemoteFile, Source, resolve_source
from holmespy.cli.text import size, warn
from holmespy.manifest import MAX_EVENT_JSON, BadManifest, ListedFile, Manifest, parse_manifest

TEMP_PREFIX = ".tmp-fetch-"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "fetch",
        help="copy an event bundle to DIR/<event-id>/",
        description="Copy an event bundle from a dump folder or S3 to DIR/<event-id>/.",
    )
    p.add_argument("event_id", nargs="?", metavar="EVENT_ID", help="an event id or a unique prefix")
    p.add_argument(
        "--latest", action="store_true", help="the newest event that matches the filters"
    )
    add_filter_args(p)
    p.add_argument(
        "-o", "--output", metavar="DIR", type=Path, default=Path("."), help="where (default: .)"
    )
    p.add_argument("--force", action="store_true", help="replace DIR/<event-id> if it exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if (args.event_id is None) == (not args.latest):
        raise BadUsage("fetch takes an EVENT_ID or --latest (one of the two)")
    query = Query.from_args(args)
    source = resolve_source(args.source, args.timeout)
    ref = latest_event(source, query) if args.latest else find_event(source, args.event_id, query)
    fetched = download(source, ref, args.output, force=args.force)
    for message in fetched.warnings + fetched.refused:
        warn(message)
    warn(f"fetched {len(fetched.files)} files ({size(fetched.bytes)}) from {source.url}")
    print(fetched.path)
    if fetched.refused:
        warn(f"refused {len(fetched.refused)} file(s) of {ref.id}: see above")
        return 1
    return 0


@dataclass
class Fetched:
    path: Path
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """One line per file not written, saying why."""


def download(source: Source, ref: EventRef, output: Path, *, force: bool = False) -> Fetched:
    """Copy the event's verified files to `output/<event-id>/`; see the module's doc."""
    if not EVENT_ID_RE.fullmatch(ref.id):
        raise UnsafePath(f"refused event id {ref.id!r}: not an event id")
    remote = {f.name: f for f in source.files(ref)}
    target = output / ref.id
    with safefs.owned(safefs.open_dirs(output)) as out:
        try:
            kind = os.stat(ref.id, dir_fd=out, follow_symlinks=False).st_mode
        except FileNotFoundError:
            kind = None
        if kind is not None and (not force or not stat.S_ISDIR(kind)):
            raise CLIError(f"{target} already exists (use --force to replace it)")
        temp, temp_fd = safefs.make_temp_dir(out, f"{TEMP_PREFIX}{os.getpid()}-")
        placed = False
        try:
            with safefs.owned(temp_fd):
                fetched = _copy_verified(source, ref, remote, temp_fd, Fetched(target))
            if kind is not None:
                safefs.remove_tree(out, ref.id)
            os.rename(temp, ref.id, src_dir_fd=out, dst_dir_fd=out)
            placed = True
        finally:
            if not placed:
                with contextlib.suppress(OSError):
                    safefs.remove_tree(out, temp)
    return fetched


def _copy_verified(
    source: Source, ref: EventRef, remote: dict[str, RemoteFile], folder: int, fetched: Fetched
) -> Fetched:
    manifest, why = _fetch_manifest(source, ref, remote.get(EVENT_FILE), folder, fetched)
    if manifest is None:
        others = len(remote) - (EVENT_FILE in remote)
        if others:
            fetched.refused.append(
                f"{ref.id}: {why}; none of its {others} other file(s) is fetched"
            )
        else:
            fetched.warnings.append(f"{ref.id}: {why}")
        return fetched
    for listed in manifest.files:
        found = remote.get(listed.name)
        if found is None:
            fetched.warnings.append(
                f"{ref.id}: {EVENT_FILE} lists {listed.name}, which the source does not have"
            )
        elif found.size != listed.size:
            fetched.refused.append(
                f"{ref.id}/{listed.name}: the source has {found.size} bytes where {EVENT_FILE}"
                f" lists {listed.size}; not fetched"
            )
        else:
            _fetch_listed(source, ref, listed, folder, fetched)
    for name in sorted(set(remote) - manifest.names - {EVENT_FILE}):
        fetched.refused.append(f"{ref.id}: {name!r} is not listed in {EVENT_FILE}; not fetched")
    return fetched


def _fetch_manifest(
    source: Source, ref: EventRef, remote: RemoteFile | None, folder: int, fetched: Fetched
) -> tuple[Manifest | None, str]:
    """Copy event.json and parse its list of files; (None, why) when it cannot vouch for any."""
    if remote is None:
        return None, f"the bundle has no {EVENT_FILE}"
    if remote.size > MAX_EVENT_JSON:
        return None, f"its {EVENT_FILE} is {remote.size} bytes, more than {MAX_EVENT_JSON}"
    try:
        copy = _fetch(source, ref, EVENT_FILE, folder, limit=MAX_EVENT_JSON, fetched=fetched)
    except _Refused as exc:
        return None, f"its {EVENT_FILE} could not be taken ({exc})"
    try:
        return parse_manifest(bytes(copy.kept or b"")), ""
    except BadManifest as exc:
        return None, f"corrupt {exc}"


def _fetch_listed(
    source: Source, ref: EventRef, listed: ListedFile, folder: int, fetched: Fetched
) -> None:
    try:
        copy = _fetch(source, ref, listed.name, folder, limit=listed.size, fetched=fetched)
    except _Refused as exc:
        fetched.refused.append(f"{ref.id}/{listed.name}: {exc}; not fetched")
        return
    if copy.size != listed.size or copy.sha256.hexdigest() != listed.sha256:
        os.unlink(listed.name, dir_fd=folder)
        fetched.files.remove(listed.name)
        fetched.bytes -= copy.size
        fetched.refused.append(
            f"{ref.id}/{listed.name}: the copy differs from the sha256 in {EVENT_FILE}"
            " (damaged in storage or in transit, or not written by holmespy); not fetched"
        )


@contextlib.contextmanager
def open_bundle(
    text: str | None,
    source_arg: str | None,
    query: Query | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[tuple[Path, str]]:
    """A local folder with the bundle `text` names, and where it came from.

    `text` is a bundle folder, or an event id (or prefix) in the source; None
    means the newest event matching `query`. An event in S3 is fetched into a
    temp folder that lives as long as the `with` block.
    """
    if text is not None and Path(text).is_dir():
        yield Path(text), text
        return
    source = resolve_source(source_arg, timeout)
    query = query or Query()
    ref = latest_event(source, query) if text is None else find_event(source, text, query)
    where = f"{source.url} ({ref.service}/{ref.day}/{ref.id})"
    folder = source.folder(ref)
    if folder is not None:
        yield folder, where
        return
    with tempfile.TemporaryDirectory(prefix="holmespy-") as temp:
        fetched = download(source, ref, Path(temp))
        for message in fetched.warnings + fetched.refused:
            warn(message)
        yield fetched.path, where


class _Refused(Exception):
    """A file that is not taken; the message says why."""


class _TooLong(OSError):
    # An OSError, so that sources pass it through as they pass disk errors.
    pass


def _fetch(
    source: Source, ref: EventRef, name: str, folder: int, *, limit: int, fetched: Fetched
) -> _Copy:
    """Copy `name` into `folder` as a new 0600 file, never through a link.

    At most `limit` bytes are taken: a source that sends more is refused
    rather than read to its end.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    bar = progress_for(f"{ref.id}/{name}", limit)
    try:
        with safefs.owned(os.open(name, flags, 0o600, dir_fd=folder)) as fd:
            copy = _Copy(fd, limit, keep=name == EVENT_FILE)
            try:
                source.copy(ref, name, copy, bar)
            except _TooLong:
                os.unlink(name, dir_fd=folder)
                raise _Refused(f"is longer than the {limit} bytes listed") from None
            except UnsafePath as exc:
                os.unlink(name, dir_fd=folder)
                raise _Refused(str(exc)) from None
            except NotFound:
                os.unlink(name, dir_fd=folder)
                raise _Refused("vanished from the source") from None
    finally:
        bar.close()
    fetched.files.append(name)
    fetched.bytes += copy.size
    return copy


class _Copy:
    """A binary sink for `Source.copy`: writes to `fd`, hashes, stops past `limit` bytes."""

    def __init__(self, fd: int, limit: int, *, keep: bool) -> None:
        self.fd = fd
        self.limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.kept = bytearray() if keep else None

    def write(self, block: bytes) -> int:
        if self.size + len(block) > self.limit:
            raise _TooLong(f"more than {self.limit} bytes")
        safefs.write_all(self.fd, block)
        self.sha256.update(block)
        self.size += len(block)
        if self.kept is not None:
            self.kept += block
        return len(block)

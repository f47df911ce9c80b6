"""`holmespy fetch EVENT_ID`: copy an event bundle to `DIR/<event-id>/`.

Everything a source names is checked before a byte is written: the event id
has the id form, and every file name is a plain relative path (no `..`, no
absolute path, no backslash); a bundle with one bad name is refused whole.
The copy is built in a temp folder beside the target, each file created
exclusively and without following links, checked against the sha256
digests `event.json` lists, and only then renamed into place: an
interrupted or damaged fetch leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holmespy.bundle import EVENT_FILE, make_private_dirs
from holmespy.cli.errors import BadUsage, CLIError, UnsafePath
from holmespy.cli.events import (
    Query,
    add_filter_args,
    find_event,
    latest_event,
    parse_event,
)
from holmespy.cli.progress import progress_for
from holmespy.cli.source import EVENT_ID_RE, EventRef, Source, member_path, resolve_source
from holmespy.cli.text import size, warn

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
    source = resolve_source(args.source)
    ref = latest_event(source, query) if args.latest else find_event(source, args.event_id, query)
    fetched = download(source, ref, args.output, force=args.force)
    for message in fetched.warnings:
        warn(message)
    warn(f"fetched {len(fetched.files)} files ({size(fetched.bytes)}) from {source.url}")
    print(fetched.path)
    return 0


@dataclass
class Fetched:
    path: Path
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def download(source: Source, ref: EventRef, output: Path, *, force: bool = False) -> Fetched:
    """Copy the event to `output/<event-id>/`; see the module's doc for what is refused."""
    if not EVENT_ID_RE.fullmatch(ref.id):
        raise UnsafePath(f"refused event id {ref.id!r}: not an event id")
    files = source.files(ref)
    names = [member_path(f.name) for f in files]
    if len(set(names)) != len(names):
        raise UnsafePath(f"refused {ref.id}: the bundle names one file twice")
    output.mkdir(parents=True, exist_ok=True)
    target = output / ref.id
    if target.is_symlink() or (target.exists() and not force):
        raise CLIError(f"{target} already exists (use --force to replace it)")
    temp = output / f"{TEMP_PREFIX}{os.getpid()}-{ref.id}"
    shutil.rmtree(temp, ignore_errors=True)
    fetched = Fetched(target)
    try:
        make_private_dirs(temp)
        inside = temp.resolve()
        for remote, name in zip(files, names, strict=True):
            dest = temp.joinpath(*name.parts)
            make_private_dirs(dest.parent)
            if not dest.parent.resolve().is_relative_to(inside):
                raise UnsafePath(f"refused {remote.name!r}: it would be written outside {target}")
            bar = progress_for(f"{ref.id}/{name}", remote.size)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                source.copy(ref, remote.name, out, bar)
            bar.close()
            fetched.files.append(str(name))
            fetched.bytes += dest.stat().st_size
        fetched.warnings.extend(verify(temp, ref))
        if target.exists():
            shutil.rmtree(target)
        os.rename(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return fetched


def verify(folder: Path, ref: EventRef) -> list[str]:
    """Compare the copied files with the sha256 digests `event.json` lists.

    A damaged copy is an error; a missing or corrupt `event.json` only a
    warning, since the rest of the bundle may still explain the event.
    """
    path = folder / EVENT_FILE
    if not path.is_file():
        return [f"{ref.id}: the bundle has no {EVENT_FILE}"]
    loaded = parse_event(ref, path.read_bytes())
    if loaded.error:
        return [loaded.error]
    problems: list[str] = []
    listed = loaded.event.get("files")
    for entry in listed if isinstance(listed, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
        try:
            copy = folder.joinpath(*member_path(name).parts)
        except UnsafePath:
            problems.append(f"{ref.id}: {EVENT_FILE} lists {name!r}, which is not a bundle file")
            continue
        if not copy.is_file():
            problems.append(f"{ref.id}: {EVENT_FILE} lists {name}, which the source does not have")
            continue
        expected = entry.get("sha256")
        if isinstance(expected, str) and _sha256(copy) != expected:
            raise CLIError(
                f"{ref.id}/{name}: the copy differs from the sha256 in {EVENT_FILE}"
                " (damaged in storage or in transit); nothing was written"
            )
    return problems


@contextlib.contextmanager
def open_bundle(
    text: str | None, source_arg: str | None, query: Query | None = None
) -> Iterator[tuple[Path, str]]:
    """A local folder with the bundle `text` names, and where it came from.

    `text` is a bundle folder, or an event id (or prefix) in the source; None
    means the newest event matching `query`. An event in S3 is fetched into a
    temp folder that lives as long as the `with` block.
    """
    if text is not None and Path(text).is_dir():
        yield Path(text), text
        return
    source = resolve_source(source_arg)
    query = query or Query()
    ref = latest_event(source, query) if text is None else find_event(source, text, query)
    where = f"{source.url} ({ref.service}/{ref.day}/{ref.id})"
    folder = source.folder(ref)
    if folder is not None:
        yield folder, where
        return
    with tempfile.TemporaryDirectory(prefix="holmespy-") as temp:
        fetched = download(source, ref, Path(temp))
        for message in fetched.warnings:
            warn(message)
        yield fetched.path, where


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

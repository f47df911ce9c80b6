"""What an `event.json` promises: the files of its event, each with its size and sha256.

The uploader, the spool's size cap and `holmespy fetch` take a file of an
event only if its `event.json` lists it. This module is the one reader of
that list, and it trusts nothing in it: the JSON must be an object of
bounded size and depth, and every entry of `files` a plain file name (one
path component, in the alphabet holmespy's own names use), a non-negative
integer size and a sha256 in hex. Anything else is a `BadManifest` naming
what is wrong, never a `TypeError` halfway through a caller.
"""

from __future__ import annotations

import json
import re
import reprlib
from dataclasses import dataclass
from typing import Any

EVENT_FILE = "event.json"
MAX_EVENT_JSON = 4 << 20
"""Bytes; a real event.json is a few KiB (its history ring holds 10 samples)."""
MAX_DEPTH = 32
"""Nesting of objects and lists; a real event.json nests five deep."""
MAX_FILES = 64
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


class BadManifest(ValueError):
    """An event.json that cannot vouch for its event's files; the message says why."""


@dataclass(frozen=True)
class ListedFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    event: dict[str, Any]
    """The whole event.json, as parsed (its shape beyond `files` is unchecked)."""
    files: tuple[ListedFile, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.files)


def parse_manifest(raw: bytes) -> Manifest:
    """The event and the files it lists, or `BadManifest`."""
    if len(raw) > MAX_EVENT_JSON:
        raise BadManifest(f"{EVENT_FILE} is {len(raw)} bytes, more than {MAX_EVENT_JSON}")
    try:
        event = json.loads(raw)
    except RecursionError:
        raise BadManifest(f"{EVENT_FILE} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise BadManifest(f"{EVENT_FILE} is not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise BadManifest(f"{EVENT_FILE} is not a JSON object")
    _check_depth(event)
    listed = event.get("files")
    if not isinstance(listed, list):
        raise BadManifest(f'{EVENT_FILE} has no "files" list')
    if len(listed) > MAX_FILES:
        raise BadManifest(f"{EVENT_FILE} lists {len(listed)} files, more than {MAX_FILES}")
    files: list[ListedFile] = []
    for entry in listed:
        files.append(_listed_file(entry))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise BadManifest(f"{EVENT_FILE} lists a file twice")
    return Manifest(event, tuple(files))


def _listed_file(entry: object) -> ListedFile:
    if not isinstance(entry, dict):
        raise BadManifest(f"{EVENT_FILE} lists {_short.repr(entry)}, not a file entry")
    name, size, digest = entry.get("name"), entry.get("size"), entry.get("sha256")
    if not isinstance(name, str) or not FILE_NAME_RE.fullmatch(name) or name == EVENT_FILE:
        raise BadManifest(f"{EVENT_FILE} lists a file named {_short.repr(name)}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadManifest(f"{EVENT_FILE} gives {name} the size {_short.repr(size)}")
    if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
        raise BadManifest(f"{EVENT_FILE} gives {name} the sha256 {_short.repr(digest)}")
    return ListedFile(name, size, digest)


def _check_depth(value: dict[str, Any]) -> None:
    pending: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise BadManifest(f"{EVENT_FILE} nests deeper than {MAX_DEPTH} levels")
        values = item.values() if isinstance(item, dict) else item
        pending.extend((v, depth + 1) for v in values if isinstance(v, dict | list))

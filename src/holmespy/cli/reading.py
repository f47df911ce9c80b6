"""Reading files from elsewhere within bounds: sizes, nesting, numbers.

A bundle can come from any machine that writes to the bucket, so the CLI
reads each file as if it were hostile: a profile at most `--max-size` bytes
once decompressed (256 MiB by default, far above any real one), a text dump
at most as much, an `event.json` at most 4 MiB and 32 levels deep, whose
NaN, Infinity and numbers beyond a float are invalid values (None). Every
refusal is one line naming the file and the limit.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from holmespy import safefs
from holmespy.cli.errors import CLIError
from holmespy.config import parse_size
from holmespy.errors import ConfigError
from holmespy.event import BadEvent, load_json
from holmespy.manifest import MAX_DEPTH, MAX_EVENT_JSON

DEFAULT_MAX_SIZE = 256 << 20
"""The most bytes a profile or a text dump may have once decompressed, by default."""
EVENT_JSON_MAX = MAX_EVENT_JSON
"""The largest `event.json` read (4 MiB, as the uploader and `fetch` take): real ones
are a few KiB (its history is 11 samples)."""
EVENT_JSON_DEPTH = MAX_DEPTH
"""The deepest nesting of an `event.json` (32): real ones nest 5 levels."""


class TooLarge(CLIError):
    """A file beyond a reading limit: the message names the file and the limit."""


def add_max_size_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-size",
        type=_size,
        default=DEFAULT_MAX_SIZE,
        metavar="SIZE",
        help="refuse a profile or dump larger than SIZE once decompressed"
        " (default 256MiB; raise it only for a file you trust)",
    )


def _size(text: str) -> int:
    try:
        return parse_size("--max-size", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {exc.expected}") from None


def mib(size: int) -> str:
    return f"{size >> 20} MiB" if size % (1 << 20) == 0 else f"{size:,} bytes"


def read_bytes(path: Path, limit: int, flag: str = "") -> bytes:
    """The bytes of `path`, or TooLarge when there are more than `limit`.

    Checked on the open file, then read at most one byte past the limit: a
    file that grows meanwhile (or a FIFO) cannot make it read more.
    """
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise TooLarge(_too_large(path, limit, flag))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(_too_large(path, limit, flag))
    return data


def read_head(path: Path, limit: int) -> bytes:
    """The first `limit` bytes of `path` at most (enough to tell a file is too large)."""
    with path.open("rb") as f:
        return f.read(limit)


def read_text(path: Path, limit: int) -> str:
    """A text dump, bounded; undecodable bytes replaced, line endings kept as written."""
    return read_bytes(path, limit, "--max-size").decode("utf-8", "replace")


def read_member(folder: Path, name: str, limit: int, flag: str = "") -> bytes | None:
    """The file `name` of the bundle folder `folder`, at most `limit` bytes; None when there
    is none. Only a regular file is read, never through a link (so a FIFO cannot block the
    reader and a link cannot lead out of the bundle): anything else is a `CLIError`;
    `flag` is the option that raises `limit`, named when the file is larger."""
    path = folder / name
    try:
        with safefs.owned(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
            fd_, st = safefs.open_file(fd, name, path)
            with safefs.owned(fd_):
                if st.st_size > limit:
                    raise TooLarge(_too_large(Path(name), limit, flag))
                return safefs.read_open(fd_, st, path, limit=limit)
    except FileNotFoundError:
        return None
    except safefs.Refused as exc:  # the folder is said elsewhere: the name is enough here
        raise CLIError(f"{name}: refused: it {exc.problem}") from None
    except OSError as exc:
        raise CLIError(f"{name}: {exc.strerror or exc}") from None


def _too_large(path: Path, limit: int, flag: str) -> str:
    raise_it = f"; raise it with {flag} if you trust the file" if flag else ""
    return f"{path}: larger than {mib(limit)}, the most holmespy reads{raise_it}"


class BadJSON(ValueError):
    """An `event.json` refused: not JSON, too large or too deeply nested."""


def load_event_json(data: bytes) -> Any:
    """`data` as JSON within the `event.json` limits (`holmespy.event.load_json`)."""
    try:
        return load_json(data)
    except BadEvent as exc:
        raise BadJSON(str(exc)) from None

"""`threads.txt`: the Python stack of every thread, py-spy-dump style.

Runs on holmespy's worker thread inside the host process. It only reads
(`sys._current_frames()`, `threading.enumerate()`, source lines through
`linecache`), never raises (a failure is written into the text) and never
waits on anything.
"""

from __future__ import annotations

import datetime as dt
import linecache
import os
import sys
import threading
import time
import traceback
from collections.abc import Collection
from types import FrameType

from holmespy.nativeid import native_id
from holmespy.printable import printable
from holmespy.stackdump import Frame, ThreadDump, ThreadStack

__all__ = [
    "MAX_FRAMES",
    "dump_threads",
    "format_frame_line",
    "format_stack",
    "format_threads",
    "header_time",
    "one_line",
    "python_version",
    "source_line",
]

MAX_FRAMES = 200
"""Frames shown per thread (innermost first); deeper stacks end with an "omitted" line."""

CHUNK = 200
"""Threads formatted between two pauses that let the host's threads take the GIL."""

_SOURCE_MAX = 160


def header_time(now: dt.datetime | None) -> str:
    """`now` (default: the current time) in UTC, ISO-8601 with milliseconds: `...T12:00:00.123Z`."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)  # naive = local time
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "") + "Z"


def python_version() -> str:
    return f"{sys.implementation.name} {sys.version.split()[0]}"


def source_line(filename: str, lineno: int) -> str:
    """The stripped source text of `filename:lineno`, or "" (never loads via import hooks)."""
    try:
        text = linecache.getline(filename, lineno).strip()
    except Exception:
        return ""
    if len(text) > _SOURCE_MAX:
        text = text[: _SOURCE_MAX - 1] + "…"
    return text


def format_frame_line(qualname: str, filename: str, lineno: int, indent: str) -> list[str]:
    """`function (file:line)` plus the source line under it, indented four more spaces.

    Names, file names and source text are escaped (`holmespy.printable`): code
    can be compiled under any name, and a source line can hold raw control bytes.
    """
    lines = [f"{indent}{printable(qualname)} ({printable(filename)}:{lineno})"]
    text = source_line(filename, lineno)
    if text:
        lines.append(f"{indent}    {printable(text)}")
    return lines


class StackNotes:
    """What `format_stack` wrote, as data: the frames, how many were omitted, the error."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.omitted = 0
        self.error: str | None = None


def format_stack(
    frame: FrameType | None,
    *,
    indent: str = "    ",
    limit: int = MAX_FRAMES,
    notes: StackNotes | None = None,
) -> list[str]:
    """The stack ending at `frame`, innermost call first, as text lines (and, when
    `notes` is given, as data in it). Never raises."""
    lines: list[str] = []
    shown = 0
    try:
        while frame is not None:
            if shown >= limit:
                rest = 0
                while frame is not None:
                    rest += 1
                    frame = frame.f_back
                lines.append(f"{indent}... {rest} older frames omitted")
                if notes is not None:
                    notes.omitted = rest
                break
            code = frame.f_code
            lineno = frame.f_lineno or 0
            lines.extend(format_frame_line(code.co_qualname, code.co_filename, lineno, indent))
            if notes is not None:
                notes.frames.append(
                    Frame(printable(code.co_qualname), printable(code.co_filename), lineno)
                )
            shown += 1
            frame = frame.f_back
    except Exception as exc:
        lines.append(f"{indent}!! stack unreadable: {type(exc).__name__}: {exc}")
        if notes is not None:
            notes.error = f"{type(exc).__name__}: {exc}"
    if not lines:
        lines.append(f"{indent}(no Python frames)")
    return lines


def format_threads(*, exclude: Collection[int] = (), now: dt.datetime | None = None) -> str:
    """Every thread's Python stack, innermost call first, as `threads.txt` text.

    Threads come from `sys._current_frames()` (every thread that runs Python
    code, including ones started outside `threading`, which show as
    "<unknown>") joined with `threading.enumerate()` for names, daemon flags
    and native ids. The main thread comes first, then threads by name.
    Threads whose ident is in `exclude` (holmespy's own) are only named in the
    footer. Never raises: an error is reported in the text.
    """
    return dump_threads(exclude=exclude, now=now)[0]


def dump_threads(
    *, exclude: Collection[int] = (), now: dt.datetime | None = None
) -> tuple[str, ThreadDump | None]:
    """`threads.txt`'s text and the same dump as data (`threads.json`), taken in one pass.

    Never raises: on a failure the text says it and the data is None.
    """
    stacks: list[ThreadStack] = []
    excluded: list[str] = []
    try:
        text = _format_threads(exclude, now, stacks, excluded)
    except Exception:
        text = (
            f"holmespy thread dump: pid {os.getpid()}, at {header_time(None)}\n"
            "!! holmespy failed to dump threads:\n" + traceback.format_exc()
        )
        return text, None
    return text, ThreadDump(tuple(stacks), tuple(excluded))


def _format_threads(
    exclude: Collection[int],
    now: dt.datetime | None,
    stacks: list[ThreadStack],
    excluded: list[str],
) -> str:
    frames = sys._current_frames()
    known = {t.ident: t for t in threading.enumerate() if t.ident is not None}
    main_ident = threading.main_thread().ident
    excluded_set = set(exclude)

    def sort_key(ident: int) -> tuple[bool, str, int]:
        thread = known.get(ident)
        return (ident != main_ident, thread.name if thread else "\uffff", ident)

    idents = sorted(frames, key=sort_key)
    shown = [i for i in idents if i not in excluded_set]
    skipped = [i for i in idents if i in excluded_set]

    out = [
        f"holmespy thread dump: pid {os.getpid()}, {len(idents)} thread"
        f"{'' if len(idents) == 1 else 's'}"
        f" ({len(shown)} shown, {len(skipped)} excluded), at {header_time(now)},"
        f" {python_version()}",
        "Stacks are innermost call first: `function (file:line)`, then that line's source.",
    ]
    for n, ident in enumerate(shown, 1):
        if n % CHUNK == 0:
            time.sleep(0)
        out.append("")
        notes = StackNotes()
        thread = known.get(ident)
        try:
            out.append(_thread_header(ident, thread, main_ident))
            out.extend(format_stack(frames.get(ident), notes=notes))
        except Exception as exc:
            out.append(f"    !! thread {ident} unreadable: {type(exc).__name__}: {exc}")
            notes.error = f"{type(exc).__name__}: {exc}"
        name = one_line(thread.name) if thread is not None else "<unknown>"
        stacks.append(ThreadStack(name, ident, tuple(notes.frames), notes.omitted, notes.error))
    del frames  # drop the references to other threads' frames (and their locals) promptly
    excluded.extend(_short_name(i, known.get(i)) for i in skipped)
    if skipped:
        names = ", ".join(_short_name(i, known.get(i)) for i in skipped)
        out.append("")
        out.append(f"excluded (holmespy's own threads, not dumped): {names}")
    return "\n".join(out) + "\n"


def _thread_header(ident: int, thread: threading.Thread | None, main_ident: int | None) -> str:
    main = " (main thread)" if ident == main_ident else ""
    if thread is None:
        return f'Thread "<unknown>" ident={ident} native_id=? daemon=?{main}'
    found = native_id(thread)
    native = "?" if found is None else str(found)
    name = one_line(thread.name)
    return f'Thread "{name}" ident={ident} native_id={native} daemon={thread.daemon}{main}'


def _short_name(ident: int, thread: threading.Thread | None) -> str:
    name = one_line(thread.name) if thread is not None else "<unknown>"
    return f'"{name}" (ident {ident})'


def one_line(name: str) -> str:
    """A thread or task name on one line, bounded, every control, bidi and separator
    character escaped (`holmespy.printable`): names are chosen by the host's code,
    and the CLI prints them to someone's terminal."""
    return printable(name.replace('"', "'"), 120)

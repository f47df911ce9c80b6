"""The dumps of a bundle as `show`, `serve` and `diff` read them: from their JSON twins.

Each text dump (`threads.txt`, `tasks.txt`, `heap-types.txt`,
`heap-holders.txt`) has its objects beside it as JSON (`threads.json`, ...),
written in the same capture. Views read the JSON, leniently: a value of a
wrong type is left out and said as a `!!` line, the rest is shown. Nothing
parses the text back: a bundle written before the JSON existed, or whose
JSON is refused (too large, not JSON, a link or a FIFO in its place), shows
its text as written, escaped by whoever prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holmespy import census, heapholders, stackdump, taskdump
from holmespy.census import Census
from holmespy.cli.errors import CLIError
from holmespy.cli.reading import read_member
from holmespy.dumpjson import BadDump
from holmespy.heapholders import HeapHolders
from holmespy.manifest import MAX_EVENT_JSON
from holmespy.stackdump import ThreadDump
from holmespy.taskdump import TaskDump

__all__ = [
    "TWINS",
    "Dump",
    "StackGroup",
    "blocked_lines",
    "load_dump",
    "load_dump_at",
    "task_groups",
    "thread_groups",
]


def _threads(raw: bytes) -> tuple[Any, list[str]]:
    return ThreadDump.loads(raw), []


TWINS: dict[str, tuple[str, Callable[[bytes], tuple[Any, list[str]]]]] = {
    "threads.txt": (stackdump.FILE, _threads),
    taskdump.TEXT_FILE: (taskdump.FILE, TaskDump.loads),
    census.TEXT_FILE: (census.FILE, Census.loads),
    heapholders.TEXT_FILE: (heapholders.FILE, HeapHolders.loads),
}
"""Text dump -> (its JSON twin, the lenient reader of the twin)."""
JSON_TWINS = frozenset(twin for twin, _ in TWINS.values())

Read = Callable[[str, int], bytes | None]
"""Reads a file of the bundle, at most `limit` bytes; None when the bundle has none.
Raises `CLIError` (one line) for a file it refuses: too large, a link, a FIFO."""


@dataclass
class Dump:
    """One dump as a view gets it: its objects, or else its text as written."""

    name: str
    """The text dump's name (`tasks.txt`)."""
    data: Any = None
    """The objects of its JSON twin: a ThreadDump, TaskDump, Census or HeapHolders."""
    text: str | None = None
    """The text as written, when there are no objects to show."""
    problems: list[str] = field(default_factory=list)
    """One line each: what was left out of the JSON, or why it was not read."""


def load_dump(name: str, read: Read, max_size: int) -> Dump:
    """The dump `name` (a text dump of `TWINS`) from its JSON twin, else as text."""
    twin, loader = TWINS[name]
    dump = Dump(name)
    try:
        raw = read(twin, MAX_EVENT_JSON)
        if raw is not None:
            dump.data, dump.problems = loader(raw)
            return dump
    except (BadDump, CLIError) as exc:
        dump.problems.append(f"{exc}; {name} is shown as written")
    raw = read(name, max_size)
    if raw is None:
        raise CLIError(f"{name}: not in the bundle")
    dump.text = raw.decode("utf-8", "replace")
    return dump


def load_dump_at(path: Path, max_size: int) -> Dump:
    """The dump whose text is `path`, read from the bundle folder it is in (never through
    a link, never from a FIFO: `holmespy.cli.reading.read_member`)."""

    def read(name: str, limit: int) -> bytes | None:
        # --max-size raises the limit of a text dump; a JSON twin's is fixed, as event.json's.
        flag = "" if name in JSON_TWINS else "--max-size"
        return read_member(path.parent, name, limit, flag)

    return load_dump(path.name, read, max_size)


@dataclass
class StackGroup:
    """Threads (or tasks) stopped in one identical stack."""

    count: int
    frames: list[str]
    """Innermost first for threads; outermost first for task await chains (as the dumps print)."""
    names: list[str] = field(default_factory=list)
    where: str = ""


def thread_groups(dump: ThreadDump) -> list[StackGroup]:
    """Threads grouped by identical stack, the biggest group first."""
    return [StackGroup(g.count, g.frames, g.names) for g in dump.groups()]


def task_groups(dump: TaskDump) -> list[StackGroup]:
    """Tasks grouped by identical await chain, the biggest group first."""
    groups = []
    for group in dump.groups:
        if len(group.loops) == 1:
            where = f"on loop {group.loops[0][0]}"
        else:
            where = "on loops " + ", ".join(f"{n} ({c})" for n, c in group.loops)
        names = [f"{name} ({state})" for name, state in group.tasks]
        frames = [link.label for link in group.chain]
        groups.append(StackGroup(group.count, frames, names, where))
    groups.sort(key=lambda g: -g.count)
    return groups


def blocked_lines(dump: TaskDump) -> list[tuple[str, list[str]]]:
    """For each BLOCKED loop: a line saying so, and its thread's stack, innermost first."""
    out = []
    for loop in dump.blocked:
        thread = loop.thread or "<unknown>"
        if loop.blocked_since is not None:
            line = (
                f'LOOP BLOCKED: loop {loop.number} in thread "{thread}" has not yet run a probe'
                f" callback sent {loop.blocked_since:.1f} s ago; its thread is executing:"
            )
        else:
            line = (
                f'LOOP BLOCKED: loop {loop.number} in thread "{thread}" did not run a callback'
                f" within {loop.blocked_after or 0:g} s; its thread is executing:"
            )
        out.append((line, [f.label for f in loop.stack or ()]))
    return out

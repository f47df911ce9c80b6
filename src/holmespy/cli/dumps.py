"""Reading back the text dumps of a bundle: thread stacks, task groups, the type census.

The writers (`profilers/threads.py`, `tasks.py`, `heap.py`) define these
formats; the readers here take only what `show` and `diff` summarise, and
treat anything else in a file as text to skip, so a dump from a newer
holmespy or a damaged one yields less, never an exception.

Lines are split at line feeds only, as the writers write them: `splitlines`
also splits at form feeds, vertical tabs, U+2028 and more, which an older dump
could hold raw inside a thread name, and a name must never change a count.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from holmespy.cli.errors import CLIError
from holmespy.stackdump import ThreadDump

# Counts are ASCII digits of bounded length: int() of a 5,000-digit number raises.
_N = "[0-9,]{1,30}"
_THREAD = re.compile(r'Thread "(.*)" ident=')
_FRAME = re.compile(r"    (\S.*)")
_TASK_GROUP = re.compile(rf"\[([0-9]{{1,9}})\] ({_N}) tasks? (.*)")
_COUNT_ROW = re.compile(rf"\s*({_N})(?:\s+([+-]{_N}|0))?\s{{2}}(\S.*)")
_GROWER_ROW = re.compile(rf"\s*([+-]{_N})\s+({_N})\s{{2}}(\S.*)")
_OBJECTS = re.compile(rf"objects: ({_N}) in ({_N}) types")
_BYTES_ROW = re.compile(rf"\s*({_N}) B\s+({_N})\s{{2}}(\S.*)")
CENSUS_HEADER = "holmespy heap census"


def _lines(text: str) -> list[str]:
    return text.split("\n")


@dataclass
class StackGroup:
    """Threads (or tasks) stopped in one identical stack."""

    count: int
    frames: list[str]
    """Innermost first for threads; outermost first for task await chains (as the dumps print)."""
    names: list[str] = field(default_factory=list)
    where: str = ""


def groups_of(dump: ThreadDump) -> list[StackGroup]:
    """The groups of a `threads.json` (no text to parse: bundles from this holmespy on)."""
    return [StackGroup(g.count, g.frames, g.names) for g in dump.groups()]


def thread_groups(text: str) -> list[StackGroup]:
    """The groups of a `threads.txt`, for bundles written before `threads.json` existed."""
    stacks: dict[tuple[str, ...], list[str]] = defaultdict(list)
    name: str | None = None
    frames: list[str] = []

    def close() -> None:
        if name is not None:
            stacks[tuple(frames)].append(name)

    for line in _lines(text):
        header = _THREAD.match(line)
        if header:
            close()
            name, frames = header.group(1), []
        elif name is not None and (frame := _FRAME.fullmatch(line)):
            frames.append(frame.group(1))
        elif name is not None and not line.strip():
            close()
            name = None
    close()
    groups = [StackGroup(len(names), list(stack), names) for stack, names in stacks.items()]
    groups.sort(key=lambda g: -g.count)
    return groups


@dataclass
class TaskDump:
    groups: list[StackGroup]
    blocked: list[str]
    """`LOOP BLOCKED` lines: a loop that did not run a callback in time."""
    blocked_stacks: list[list[str]] = field(default_factory=list)
    """For each `blocked` line, what its thread was executing, innermost call first."""


def task_groups(text: str) -> TaskDump:
    groups: list[StackGroup] = []
    blocked: list[str] = []
    stacks: list[list[str]] = []
    stack: list[str] | None = None
    for line in _lines(text):
        if "LOOP BLOCKED" in line:
            blocked.append(line.strip())
            stack = []
            stacks.append(stack)
        elif stack is not None and (frame := _FRAME.fullmatch(line)):
            stack.append(frame.group(1))
        elif stack is not None and not line.startswith("        "):
            stack = None  # the stack ends at the first line that is neither frame nor source
    current: StackGroup | None = None
    for line in _lines(text):
        header = _TASK_GROUP.fullmatch(line)
        if header:
            current = StackGroup(int(header.group(2).replace(",", "")), [], where=header.group(3))
            groups.append(current)
        elif current is not None and (frame := _FRAME.fullmatch(line)):
            current.frames.append(frame.group(1))
        elif current is not None and line.startswith("  tasks: "):
            current.names = [n.strip() for n in line[len("  tasks: ") :].split(", ")]
        elif not line.strip():
            current = None
    groups.sort(key=lambda g: -g.count)
    return TaskDump(groups, blocked, stacks)


@dataclass
class Census:
    counts: dict[str, int]
    """Type -> live objects, for the types the file lists (its top N, not every type)."""
    growth: dict[str, int] | None
    """Type -> growth since the census before it, when the file has one."""
    objects: int | None
    types: int | None
    sizes: dict[str, int] = field(default_factory=dict)
    """Type -> shallow bytes, for the types the file lists by bytes (newer censuses)."""


def read_census(text: str, what: str) -> Census:
    if not text.startswith(CENSUS_HEADER):
        raise CLIError(f"{what}: not a holmespy heap census (heap-types.txt)")
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    growth: dict[str, int] | None = None
    section = ""
    objects = types = None
    for line in _lines(text):
        if match := _OBJECTS.match(line):
            objects, types = (int(g.replace(",", "")) for g in match.groups())
        if line.startswith("top growers"):
            section = "growers"
        elif line.startswith("top ") and "types by shallow bytes" in line:
            section = "bytes"
        elif section == "bytes" and (row := _BYTES_ROW.fullmatch(line)):
            sizes[row.group(3)] = int(row.group(1).replace(",", ""))
        elif line.startswith("top ") and "types by count" in line:
            section = "counts"
            if "with growth" in line:
                growth = {}
        elif section == "counts" and (row := _COUNT_ROW.fullmatch(line)):
            counts[row.group(3)] = int(row.group(1).replace(",", ""))
            if growth is not None and row.group(2) and row.group(2) != "0":
                growth[row.group(3)] = int(row.group(2).replace(",", ""))
        elif section == "growers" and growth is not None and (row := _GROWER_ROW.fullmatch(line)):
            growth[row.group(3)] = int(row.group(1).replace(",", ""))
            counts.setdefault(row.group(3), int(row.group(2).replace(",", "")))
    if not counts:
        raise CLIError(f"{what}: a heap census without a table of types (damaged?)")
    return Census(counts, growth, objects, types, sizes)

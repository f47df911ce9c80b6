"""The asyncio task dump as data: one `TaskDump`, written as `tasks.txt` and `tasks.json`.

`holmespy.profilers.tasks` walks the tasks into a `TaskDump`, then writes
its text (`render`, for people) and `to_json()` (for `show` and `serve`) in
the same capture, so no reader parses `tasks.txt` back. Names, file names
and function names are stored as the text writes them, escaped by
`holmespy.printable`.

Reading is strict (`from_json`: `BadDump` in one line) or lenient (`read`:
a loop or a group with a wrong value is left out and said), through
`holmespy.dumpjson`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from holmespy import dumpjson
from holmespy.dumpjson import BadDump, Reader, Twin, Wrong
from holmespy.stackdump import Frame

__all__ = ["FILE", "TEXT_FILE", "BadDump", "Link", "LoopState", "TaskDump", "TaskGroup"]

FILE = "tasks.json"
TEXT_FILE = "tasks.txt"
SCHEMA = 1
MAX_LOOPS = 10_000
MAX_GROUPS = 10_000
"""Groups read at most (the writer keeps 500)."""
MAX_CHAIN = 1_000
MAX_NAMES = 100
"""Task names per group read at most (the writer keeps 10)."""


@dataclass(frozen=True)
class Link:
    """One link of an await chain: a coroutine at its line, or an awaited task or future
    (no file) whose own chain goes on."""

    function: str
    file: str = ""
    line: int = 0
    task: bool = False
    """An awaited task: its coroutine continues the chain."""

    @property
    def label(self) -> str:
        """`function (file:line)`, as `tasks.txt` prints a link."""
        return f"{self.function} ({self.file}:{self.line})" if self.file else self.function


@dataclass(frozen=True)
class TaskGroup:
    """Tasks parked in one identical await chain."""

    count: int
    chain: tuple[Link, ...]
    """Outermost coroutine first."""
    loops: tuple[tuple[int, int], ...] = ()
    """(loop number, tasks of the group on it)."""
    tasks: tuple[tuple[str, str], ...] = ()
    """(name, state) of the first few tasks; `count` says how many there are."""
    error: str | None = None
    """Why the group could not be described."""


@dataclass(frozen=True)
class LoopState:
    """One event loop as the dump found it, and how it answered the probe."""

    number: int
    kind: str
    """Its class name: `_UnixSelectorEventLoop`, `Loop` (uvloop)."""
    tasks: int
    running: bool = True
    closed: bool = False
    thread: str | None = None
    """The name of the thread it runs in; None when unknown."""
    thread_ident: int | None = None
    probe_ms: float | None = None
    """How long a no-op callback took to run; None when it did not (or was not sent)."""
    own_thread: bool = False
    """Not probed: the dump ran on the loop's own thread."""
    blocked_after: float | None = None
    """Seconds the probe waited in vain: the loop is BLOCKED."""
    blocked_since: float | None = None
    """Seconds since an earlier dump's probe went unanswered: BLOCKED, not waited for again."""
    stack: tuple[Frame, ...] | None = None
    """A blocked loop's thread, innermost call first; None when the thread is unknown."""
    omitted: int = 0
    """Older frames of `stack` beyond the writer's limit."""

    @property
    def blocked(self) -> bool:
        return self.blocked_after is not None or self.blocked_since is not None


@dataclass(frozen=True)
class TaskDump(Twin):
    pid: int
    time: str
    """ISO 8601 UTC, milliseconds."""

    FILE = FILE
    python: str
    total: int = 0
    """Tasks in the process."""
    loops: tuple[LoopState, ...] = ()
    groups: tuple[TaskGroup, ...] = ()
    """Largest first; at most the writer's limit, the rest in `rest_groups` and `rest_tasks`."""
    grouped: int | None = None
    """Tasks walked before the dump was cut short; None when it was not."""
    rest_groups: int = 0
    rest_tasks: int = 0
    took_ms: float = 0.0
    probe_ms: float = 0.0
    unsupported: str | None = None
    """The Python version when it keeps no task registry holmespy can read."""
    error: str | None = None
    """Why the dump failed (a traceback), when it did."""

    @property
    def blocked(self) -> list[LoopState]:
        return [loop for loop in self.loops if loop.blocked]

    # -- tasks.json --

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "pid": self.pid,
            "time": self.time,
            "python": self.python,
            "total": self.total,
            "loops": [_loop_json(loop) for loop in self.loops],
            "groups": [_group_json(group) for group in self.groups],
            "grouped": self.grouped,
            "rest_groups": self.rest_groups,
            "rest_tasks": self.rest_tasks,
            "took_ms": self.took_ms,
            "probe_ms": self.probe_ms,
            "unsupported": self.unsupported,
            "error": self.error,
        }

    @classmethod
    def _read(cls, data: object, r: Reader) -> TaskDump:
        if not isinstance(data, dict):
            raise BadDump(f"{FILE}: not a JSON object")
        r.schema(data, SCHEMA)
        d = dumpjson
        return cls(
            pid=r.field(lambda: d.integer(data, "pid"), 0),
            time=r.field(lambda: d.optional_text(data, "time") or "?", "?"),
            python=r.field(lambda: d.optional_text(data, "python") or "?", "?"),
            total=r.field(lambda: d.integer(data, "total"), 0),
            loops=r.items(data, "loops", MAX_LOOPS, _loop),
            groups=r.items(data, "groups", MAX_GROUPS, _group),
            grouped=r.field(lambda: d.optional_int(data, "grouped"), None),
            rest_groups=r.field(lambda: d.integer(data, "rest_groups"), 0),
            rest_tasks=r.field(lambda: d.integer(data, "rest_tasks"), 0),
            took_ms=r.field(lambda: d.number(data, "took_ms"), 0.0),
            probe_ms=r.field(lambda: d.number(data, "probe_ms"), 0.0),
            unsupported=r.field(lambda: d.optional_text(data, "unsupported"), None),
            error=r.field(lambda: d.optional_text(data, "error"), None),
        )


def _frames_json(frames: tuple[Frame, ...]) -> list[list[Any]]:
    return [[f.function, f.file, f.line] for f in frames]


def _loop_json(loop: LoopState) -> dict[str, Any]:
    return {
        "number": loop.number,
        "kind": loop.kind,
        "tasks": loop.tasks,
        "running": loop.running,
        "closed": loop.closed,
        "thread": loop.thread,
        "thread_ident": loop.thread_ident,
        "probe_ms": loop.probe_ms,
        "own_thread": loop.own_thread,
        "blocked_after": loop.blocked_after,
        "blocked_since": loop.blocked_since,
        "stack": None if loop.stack is None else _frames_json(loop.stack),
        "omitted": loop.omitted,
    }


def _group_json(group: TaskGroup) -> dict[str, Any]:
    return {
        "count": group.count,
        "chain": [[link.function, link.file, link.line, link.task] for link in group.chain],
        "loops": [list(pair) for pair in group.loops],
        "tasks": [list(pair) for pair in group.tasks],
        "error": group.error,
    }


def _frames(value: object, where: str) -> tuple[Frame, ...]:
    frames = []
    for n, item in enumerate(dumpjson.array(value, where, MAX_CHAIN)):
        at = f"{where}[{n}]"
        if not isinstance(item, list) or len(item) != 3:
            raise dumpjson.wrong(at, item, "[function, file, line]")
        function, file, line = item
        if not isinstance(function, str) or not isinstance(file, str):
            raise dumpjson.wrong(at, item, "[function, file, line]")
        frames.append(Frame(function, file, dumpjson.as_int(line, at)))
    return tuple(frames)


def _loop(item: object, where: str) -> LoopState:
    d = dumpjson
    data = d.obj(item, where)
    at = where + "."
    stack = data.get("stack")
    return LoopState(
        number=d.integer(data, "number", at),
        kind=d.text(data, "kind", at),
        tasks=d.integer(data, "tasks", at),
        running=d.flag(data, "running", at),
        closed=d.flag(data, "closed", at),
        thread=d.optional_text(data, "thread", at),
        thread_ident=d.optional_int(data, "thread_ident", at),
        probe_ms=d.optional_number(data, "probe_ms", at),
        own_thread=d.flag(data, "own_thread", at),
        blocked_after=d.optional_number(data, "blocked_after", at),
        blocked_since=d.optional_number(data, "blocked_since", at),
        stack=None if stack is None else _frames(stack, at + "stack"),
        omitted=d.integer(data, "omitted", at),
    )


def _group(item: object, where: str) -> TaskGroup:
    d = dumpjson
    data = d.obj(item, where)
    at = where + "."
    chain = []
    for n, link in enumerate(d.array(data.get("chain"), at + "chain", MAX_CHAIN)):
        spot = f"{at}chain[{n}]"
        if not isinstance(link, list) or len(link) != 4:
            raise d.wrong(spot, link, "[function, file, line, task]")
        function, file, line, task = link
        if not isinstance(function, str) or not isinstance(file, str) or type(task) is not bool:
            raise d.wrong(spot, link, "[function, file, line, task]")
        chain.append(Link(function[: d.MAX_NAME], file[: d.MAX_NAME], d.as_int(line, spot), task))
    return TaskGroup(
        count=d.integer(data, "count", at),
        chain=tuple(chain),
        loops=tuple(_pair(p, f"{at}loops[{n}]") for n, p in enumerate(_list(data, "loops", at))),
        tasks=tuple(_named(p, f"{at}tasks[{n}]") for n, p in enumerate(_list(data, "tasks", at))),
        error=d.optional_text(data, "error", at),
    )


def _list(data: dict[str, Any], key: str, at: str) -> list[Any]:
    return dumpjson.array(data.get(key, []), at + key, MAX_NAMES)


def _pair(value: object, where: str) -> tuple[int, int]:
    numbers = dumpjson.ints(value, where, 2)
    if len(numbers) != 2:
        raise dumpjson.wrong(where, value, "[loop, tasks]")
    return numbers[0], numbers[1]


def _named(value: object, where: str) -> tuple[str, str]:
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, str) for v in value):
        raise Wrong(f"{where}: not [name, state]")
    return value[0][: dumpjson.MAX_NAME], value[1][: dumpjson.MAX_NAME]

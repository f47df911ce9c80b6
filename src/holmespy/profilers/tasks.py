"""`tasks.txt` and `tasks.json`: every asyncio task of every loop, grouped by await chain.

A server with a task leak has thousands of tasks parked at the same `await`;
grouping by identical await chain turns them into one entry with a count. Each
loop is also probed (one no-op callback, one shared deadline): a loop that does
not answer is reported as BLOCKED together with what its thread is executing,
which names the blocking call. A loop that has not answered the probe of an
earlier dump is known to be blocked: it is reported at once, without waiting.

Runs on holmespy's worker thread inside the host process; all asyncio
internals are read through `holmespy.loops`. `dump_tasks` takes the dump as
a `holmespy.taskdump.TaskDump`; `render` writes its text, and the capture
writes its `to_json()` beside it. Never raises (a failure is in the dump)
and never waits longer than `probe_timeout`.

A server with a task leak has hundreds of thousands of tasks, so the tasks
are walked in chunks of `CHUNK`, with a pause between chunks that lets the
host's threads take the GIL, and nothing is kept per task but the task
itself: the chain of each task is reduced to its group at once. Keeping
200,000 chains alive made them outlive the collector's young generations and
set off a full collection of the host's heap (a 300 ms freeze).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import operator
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from holmespy import loops
from holmespy.printable import printable
from holmespy.profilers.threads import (
    StackNotes,
    format_frame_line,
    format_stack,
    header_time,
    one_line,
    python_version,
)
from holmespy.taskdump import Link, LoopState, TaskDump, TaskGroup

__all__ = ["MAX_GROUPS", "MAX_NAMES", "dump_tasks", "format_tasks", "render"]

MAX_NAMES = 10
"""Task names listed per group; the rest are counted."""

MAX_GROUPS = 500
"""Groups written in full; smaller groups beyond this are summed up in one line."""

CHUNK = 500
"""Tasks walked between two pauses (~2 ms of work)."""

_ChainKey = tuple[tuple[str, str, int], ...]


class _Group:
    __slots__ = ("chain", "tasks")

    def __init__(self, chain: list[loops.ChainFrame]) -> None:
        self.chain = chain
        self.tasks: list[asyncio.Task[Any]] = []


def format_tasks(
    *,
    probe_timeout: float = 0.5,
    now: dt.datetime | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Every asyncio task in the process, grouped by await chain, as `tasks.txt` text
    (`render` of `dump_tasks`)."""
    return render(dump_tasks(probe_timeout=probe_timeout, now=now, cancel=cancel))


def dump_tasks(
    *,
    probe_timeout: float = 0.5,
    now: dt.datetime | None = None,
    cancel: threading.Event | None = None,
) -> TaskDump:
    """Every asyncio task in the process, grouped by await chain.

    Each loop is probed: how fast it ran a probe callback, or, when it does
    not within `probe_timeout` seconds, BLOCKED with its thread's current
    stack. The groups of tasks with an identical await chain come largest
    first: the count, the chain (outermost coroutine first) and up to
    `MAX_NAMES` task names with their states. When `cancel` is set (the
    process is going) the walk stops and the tasks seen so far are kept, with
    `grouped` saying how many. Never raises: a failure is in `error`.
    """
    try:
        return _dump_tasks(probe_timeout, now, cancel)
    except Exception:
        return TaskDump(
            os.getpid(), header_time(None), python_version(), error=traceback.format_exc()
        )


def _dump_tasks(
    probe_timeout: float, now: dt.datetime | None, cancel: threading.Event | None
) -> TaskDump:
    started = time.perf_counter()
    when = header_time(now)
    if not loops.tasks_supported():
        return TaskDump(os.getpid(), when, python_version(), unsupported=sys.version.split()[0])
    tasks = loops.all_tasks()
    infos = loops.running_loops(tasks)
    if not tasks:
        return TaskDump(os.getpid(), when, python_version(), loops=_loop_states(infos))

    # Chains and states first, so they describe the same moment as the task list.
    groups, seen = _group(tasks, cancel)
    running_now = _current_task_ids(infos)
    number = {id(info.loop): n for n, info in enumerate(infos, 1)}

    probe_started = time.perf_counter()
    blocked_since = {
        id(info.loop): since
        for info in infos
        if (since := loops.unanswered_since(info.loop)) is not None
    }
    delays = loops.probe_loops([info.loop for info in infos], probe_timeout)
    probe_ms = (time.perf_counter() - probe_started) * 1000
    # Taken after the probes: a loop that did not answer is still stuck now.
    frames = sys._current_frames()
    try:
        states = _loop_states(infos, delays, frames, probe_timeout, blocked_since)
    finally:
        del frames  # other threads' frames keep their locals alive
    described = []
    for group in groups[:MAX_GROUPS]:
        try:
            described.append(_describe(group, number, running_now))
        except Exception as exc:
            described.append(TaskGroup(len(group.tasks), (), error=f"{type(exc).__name__}: {exc}"))
    rest = groups[MAX_GROUPS:]
    return TaskDump(
        os.getpid(),
        when,
        python_version(),
        total=len(tasks),
        loops=states,
        groups=tuple(described),
        grouped=seen if seen < len(tasks) else None,
        rest_groups=len(rest),
        rest_tasks=sum(len(g.tasks) for g in rest),
        took_ms=(time.perf_counter() - started) * 1000,
        probe_ms=probe_ms,
    )


def _loop_states(
    infos: Sequence[loops.LoopInfo],
    delays: Sequence[float | None] = (),
    frames: dict[int, Any] | None = None,
    probe_timeout: float = 0.0,
    blocked_since: dict[int, float] | None = None,
) -> tuple[LoopState, ...]:
    me = threading.get_ident()
    states = []
    for n, info in enumerate(infos, 1):
        base = LoopState(
            number=n,
            kind=printable(type(info.loop).__name__),
            tasks=info.task_count,
            running=info.running,
            closed=info.closed,
            thread=one_line(info.thread_name) if info.thread_name else None,
            thread_ident=info.thread_id,
        )
        delay = delays[n - 1] if n <= len(delays) else None
        if not info.running or frames is None:
            states.append(base)
        elif delay is not None:
            states.append(replace(base, probe_ms=delay * 1000))
        elif info.thread_id is not None and info.thread_id == me:
            states.append(replace(base, own_thread=True))
        else:
            since = (blocked_since or {}).get(id(info.loop))
            frame = frames.get(info.thread_id) if info.thread_id is not None else None
            notes = StackNotes()
            if frame is not None:
                format_stack(frame, notes=notes)
            states.append(
                replace(
                    base,
                    blocked_after=probe_timeout if since is None else None,
                    blocked_since=None if since is None else time.monotonic() - since,
                    stack=None if frame is None else tuple(notes.frames),
                    omitted=notes.omitted,
                )
            )
    return tuple(states)


# -- tasks.txt --------------------------------------------------------------------------------


def render(dump: TaskDump) -> str:
    """`tasks.txt`: a header, one line per loop (BLOCKED ones with their thread's stack),
    then the groups, largest first."""
    if dump.error is not None:
        return (
            f"holmespy asyncio task dump: pid {dump.pid}, at {dump.time}\n"
            "!! holmespy failed to dump tasks:\n" + dump.error
        )
    if dump.unsupported is not None:
        return (
            f"holmespy asyncio task dump: pid {dump.pid}, at {dump.time}, {dump.python}\n"
            f"asyncio task listing is not supported on Python {dump.unsupported}:"
            " this version keeps no process-wide task registry that holmespy can read.\n"
        )
    header = (
        f"holmespy asyncio task dump: pid {dump.pid}, {_plural(len(dump.loops), 'loop')},"
        f" {_plural(dump.total, 'task')}, at {dump.time}, {dump.python}"
    )
    if not dump.total:
        return f"{header}\nno asyncio tasks\n"
    out = [header, *_loop_lines(dump.loops), ""]
    if dump.grouped is not None:
        out.append(
            f"!! dump cut short: the process was going; {dump.grouped:,} of {dump.total:,} tasks"
            " were grouped below"
        )
        out.append("")
    groups = len(dump.groups) + dump.rest_groups
    out.append(
        f"{_plural(dump.total, 'task')} in {_plural(groups, 'group')} of identical await"
        " chains, largest first; each chain is outermost coroutine first."
    )
    for index, group in enumerate(dump.groups, 1):
        out.append("")
        out.extend(_group_lines(index, group))
    if dump.rest_groups:
        out.append("")
        out.append(f"... {dump.rest_groups} smaller groups ({dump.rest_tasks} tasks) not shown")
    out.append("")
    out.append(f"dump took {dump.took_ms:.1f} ms, of which {dump.probe_ms:.1f} ms probing loops")
    return "\n".join(out) + "\n"


def _loop_lines(states: Sequence[LoopState]) -> list[str]:
    lines: list[str] = []
    for loop in states:
        lines.append("")
        n = loop.number
        if not loop.running:
            state = "closed" if loop.closed else "stopped"
            pending = _plural(loop.tasks, "pending task")
            lines.append(
                f"loop {n}: {loop.kind} not running ({state}), {pending}"
                " (they will never run unless the loop is restarted)"
            )
            continue
        if loop.thread_ident is None:
            where = "an unknown thread"
        else:
            where = f'thread "{loop.thread or "<unknown>"}" (ident {loop.thread_ident})'
        head = f"loop {n}: {loop.kind} running in {where}, {_plural(loop.tasks, 'task')}"
        if loop.probe_ms is not None:
            lines.append(f"{head}; ran a probe callback after {loop.probe_ms:.2f} ms")
            continue
        if loop.own_thread:
            lines.append(f"{head}; not probed (this dump runs on the loop's own thread)")
            continue
        lines.append(head)
        name = loop.thread or "<unknown>"
        if loop.blocked_since is not None:
            # Blocked since an earlier dump: this one did not wait for it again.
            lines.append(
                f'LOOP BLOCKED: loop in thread "{name}" has not yet run a probe callback'
                f" sent {loop.blocked_since:.1f} s ago; its thread is executing:"
            )
        else:
            lines.append(
                f'LOOP BLOCKED: loop in thread "{name}" did not run a callback'
                f" within {loop.blocked_after or 0:g} s; its thread is executing:"
            )
        if loop.stack is None:
            lines.append("    (its thread is unknown; threads.txt has every thread's stack)")
            continue
        for frame in loop.stack:
            lines.extend(format_frame_line(frame.function, frame.file, frame.line, "    "))
        if loop.omitted:
            lines.append(f"    ... {loop.omitted} older frames omitted")
        if not loop.stack and not loop.omitted:
            lines.append("    (no Python frames)")
    return lines


def _current_task_ids(infos: Sequence[loops.LoopInfo]) -> set[int]:
    """ids of the tasks each running loop is executing a step of right now."""
    ids: set[int] = set()
    for info in infos:
        if not info.running:
            continue
        try:
            task = asyncio.current_task(info.loop)
        except Exception:
            continue
        if task is not None:
            ids.add(id(task))
    return ids


_link_key = operator.itemgetter(0, 2, 3)  # ChainFrame -> (qualname, filename, lineno)


def _group(
    tasks: Sequence[asyncio.Task[Any]], cancel: threading.Event | None = None
) -> tuple[list[_Group], int]:
    """Tasks grouped by identical await chain, largest first; and how many were walked."""
    by_chain: dict[_ChainKey, _Group] = {}
    seen = 0
    for start in range(0, len(tasks), CHUNK):
        if cancel is not None and cancel.is_set():
            break
        chunk = tasks[start : start + CHUNK]
        # Within a chunk, tasks parked at the same await share the same link
        # objects: a tuple of their ids is a cheap key. Chunks are merged by value.
        local: dict[tuple[int, ...], tuple[list[loops.ChainFrame], list[asyncio.Task[Any]]]] = {}
        for task, chain in zip(chunk, loops.await_chains(chunk), strict=True):
            key = tuple(map(id, chain))
            entry = local.get(key)
            if entry is None:
                local[key] = (chain, [task])
            else:
                entry[1].append(task)
        for chain, members in local.values():
            value_key = tuple(map(_link_key, chain))
            group = by_chain.get(value_key)
            if group is None:
                group = by_chain[value_key] = _Group(chain)
            group.tasks.extend(members)
        seen += len(chunk)
        del chunk, local
        time.sleep(0)  # let host threads waiting for the GIL in between chunks
    groups = sorted(by_chain.values(), key=lambda g: (-len(g.tasks), [str(c) for c in g.chain]))
    return groups, seen


def _describe(group: _Group, number: dict[int, int], running_now: set[int]) -> TaskGroup:
    per_loop: dict[int, int] = {}
    for task in group.tasks:
        n = number.get(id(task.get_loop()), 0)
        per_loop[n] = per_loop.get(n, 0) + 1
    chain = tuple(
        Link(printable(link.qualname), printable(link.filename), link.lineno)
        if link.filename
        else Link(printable(link.qualname), task=link.kind == "task")
        for link in group.chain
    )
    # Shortest names first, then alphabetical: "handler-2" before "handler-10".
    named = ((_name(t), t) for t in group.tasks)
    first = heapq.nsmallest(MAX_NAMES, named, key=lambda p: (len(p[0]), p[0]))
    return TaskGroup(
        count=len(group.tasks),
        chain=chain,
        loops=tuple(sorted(per_loop.items())),
        tasks=tuple((one_line(name), _state(t, running_now)) for name, t in first),
    )


def _group_lines(index: int, group: TaskGroup) -> list[str]:
    if group.error is not None:
        return [f"[{index}] !! group unreadable: {group.error}"]
    if len(group.loops) == 1:
        where = f"on loop {group.loops[0][0]}"
    else:
        where = "on loops " + ", ".join(f"{n} ({c})" for n, c in group.loops)
    lines = [f"[{index}] {_plural(group.count, 'task')} {where}"]
    for link in group.chain:
        if link.file:
            lines.extend(format_frame_line(link.function, link.file, link.line, "    "))
        elif link.task:
            lines.append(f"    {link.function}  (awaited task; its coroutine continues the chain)")
        else:
            lines.append(f"    {link.function}")
    if not group.chain:
        lines.append("    (no await chain: the task has no coroutine)")
    shown = [f"{name} ({state})" for name, state in group.tasks]
    more = f", ... and {group.count - MAX_NAMES} more" if group.count > MAX_NAMES else ""
    lines.append("  tasks: " + ", ".join(shown) + more)
    return lines


def _name(task: asyncio.Task[Any]) -> str:
    try:
        return str(task.get_name())
    except Exception:
        return "<unnamed>"


def _state(task: asyncio.Task[Any], running_now: set[int]) -> str:
    try:
        if task.done():
            return "cancelled" if task.cancelled() else "done"
        state = "running" if id(task) in running_now else "pending"
        if task.cancelling():
            state += ", cancelling"
        return state
    except Exception:
        return "?"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

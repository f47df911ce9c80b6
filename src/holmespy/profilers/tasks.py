"""`tasks.txt`: every asyncio task of every loop, grouped by await chain.

A server with a task leak has thousands of tasks parked at the same `await`;
grouping by identical await chain turns them into one entry with a count. Each
loop is also probed (one no-op callback, one shared deadline): a loop that does
not answer is reported as BLOCKED together with what its thread is executing,
which names the blocking call. A loop that has not answered the probe of an
earlier dump is known to be blocked: it is reported at once, without waiting.

Runs on holmespy's worker thread inside the host process; all asyncio
internals are read through `holmespy.loops`. Never raises (a failure is written
into the text) and never waits longer than `probe_timeout`.

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
from typing import Any

from holmespy import loops
from holmespy.printable import printable
from holmespy.profilers.threads import (
    format_frame_line,
    format_stack,
    header_time,
    one_line,
    python_version,
)

__all__ = ["MAX_GROUPS", "MAX_NAMES", "format_tasks"]

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
    """Every asyncio task in the process, grouped by await chain, as `tasks.txt` text.

    Header: pid, loops, tasks, time. Then one line per loop (its thread, and
    how fast it ran a probe callback; a loop that does not within
    `probe_timeout` seconds gets a `LOOP BLOCKED` line and its thread's
    current stack). Then the groups of tasks with an identical await chain,
    largest first: the count, the chain (outermost coroutine first) and up to
    `MAX_NAMES` task names with their states. When `cancel` is set (the
    process is going) the walk stops and the tasks seen so far are written,
    with a line saying the dump was cut short.
    """
    try:
        return _format_tasks(probe_timeout, now, cancel)
    except Exception:
        return (
            f"holmespy asyncio task dump: pid {os.getpid()}, at {header_time(None)}\n"
            "!! holmespy failed to dump tasks:\n" + traceback.format_exc()
        )


def _format_tasks(
    probe_timeout: float, now: dt.datetime | None, cancel: threading.Event | None
) -> str:
    started = time.perf_counter()
    when = header_time(now)
    if not loops.tasks_supported():
        return (
            f"holmespy asyncio task dump: pid {os.getpid()}, at {when}, {python_version()}\n"
            f"asyncio task listing is not supported on Python {sys.version.split()[0]}:"
            " this version keeps no process-wide task registry that holmespy can read.\n"
        )
    tasks = loops.all_tasks()
    infos = loops.running_loops(tasks)
    header = (
        f"holmespy asyncio task dump: pid {os.getpid()}, {_plural(len(infos), 'loop')},"
        f" {_plural(len(tasks), 'task')}, at {when}, {python_version()}"
    )
    if not tasks:
        return f"{header}\nno asyncio tasks\n"

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
        loop_lines = _loop_section(infos, delays, frames, probe_timeout, blocked_since)
    finally:
        del frames  # other threads' frames keep their locals alive

    out = [header, *loop_lines, ""]
    if seen < len(tasks):
        out.append(
            f"!! dump cut short: the process was going; {seen:,} of {len(tasks):,} tasks"
            " were grouped below"
        )
        out.append("")
    out.append(
        f"{_plural(len(tasks), 'task')} in {_plural(len(groups), 'group')} of identical await"
        " chains, largest first; each chain is outermost coroutine first."
    )
    for index, group in enumerate(groups[:MAX_GROUPS], 1):
        out.append("")
        try:
            out.extend(_group_lines(index, group, number, running_now))
        except Exception as exc:
            out.append(f"[{index}] !! group unreadable: {type(exc).__name__}: {exc}")
    if len(groups) > MAX_GROUPS:
        rest = groups[MAX_GROUPS:]
        out.append("")
        out.append(
            f"... {len(rest)} smaller groups ({sum(len(g.tasks) for g in rest)} tasks) not shown"
        )
    took = (time.perf_counter() - started) * 1000
    out.append("")
    out.append(f"dump took {took:.1f} ms, of which {probe_ms:.1f} ms probing loops")
    return "\n".join(out) + "\n"


def _loop_section(
    infos: Sequence[loops.LoopInfo],
    delays: Sequence[float | None],
    frames: dict[int, Any],
    probe_timeout: float,
    blocked_since: dict[int, float],
) -> list[str]:
    me = threading.get_ident()
    lines: list[str] = []
    for n, (info, delay) in enumerate(zip(infos, delays, strict=True), 1):
        lines.append("")
        kind = printable(type(info.loop).__name__)
        if not info.running:
            state = "closed" if info.closed else "stopped"
            pending = _plural(info.task_count, "pending task")
            lines.append(
                f"loop {n}: {kind} not running ({state}), {pending}"
                " (they will never run unless the loop is restarted)"
            )
            continue
        where = _thread_label(info)
        head = f"loop {n}: {kind} running in {where}, {_plural(info.task_count, 'task')}"
        if delay is not None:
            lines.append(f"{head}; ran a probe callback after {delay * 1000:.2f} ms")
            continue
        if info.thread_id is not None and info.thread_id == me:
            lines.append(f"{head}; not probed (this dump runs on the loop's own thread)")
            continue
        lines.append(head)
        name = one_line(info.thread_name) if info.thread_name else "<unknown>"
        since = blocked_since.get(id(info.loop))
        if since is not None:
            # Blocked since an earlier dump: this one did not wait for it again.
            lines.append(
                f'LOOP BLOCKED: loop in thread "{name}" has not yet run a probe callback'
                f" sent {time.monotonic() - since:.1f} s ago; its thread is executing:"
            )
        else:
            lines.append(
                f'LOOP BLOCKED: loop in thread "{name}" did not run a callback'
                f" within {probe_timeout:g} s; its thread is executing:"
            )
        frame = frames.get(info.thread_id) if info.thread_id is not None else None
        if frame is None:
            lines.append("    (its thread is unknown; threads.txt has every thread's stack)")
        else:
            lines.extend(format_stack(frame))
    return lines


def _thread_label(info: loops.LoopInfo) -> str:
    if info.thread_id is None:
        return "an unknown thread"
    name = one_line(info.thread_name) if info.thread_name else "<unknown>"
    return f'thread "{name}" (ident {info.thread_id})'


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


def _group_lines(
    index: int, group: _Group, number: dict[int, int], running_now: set[int]
) -> list[str]:
    count = len(group.tasks)
    per_loop: dict[int, int] = {}
    for task in group.tasks:
        n = number.get(id(task.get_loop()), 0)
        per_loop[n] = per_loop.get(n, 0) + 1
    if len(per_loop) == 1:
        where = f"on loop {next(iter(per_loop))}"
    else:
        where = "on loops " + ", ".join(f"{n} ({c})" for n, c in sorted(per_loop.items()))
    lines = [f"[{index}] {_plural(count, 'task')} {where}"]
    for link in group.chain:
        if link.filename:
            lines.extend(format_frame_line(link.qualname, link.filename, link.lineno, "    "))
        elif link.kind == "task":
            lines.append(
                f"    {printable(link.qualname)}  (awaited task; its coroutine continues the chain)"
            )
        else:
            lines.append(f"    {printable(link.qualname)}")
    if not group.chain:
        lines.append("    (no await chain: the task has no coroutine)")
    # Shortest names first, then alphabetical: "handler-2" before "handler-10".
    named = ((_name(t), t) for t in group.tasks)
    first = heapq.nsmallest(MAX_NAMES, named, key=lambda p: (len(p[0]), p[0]))
    shown = [f"{one_line(name)} ({_state(t, running_now)})" for name, t in first]
    more = f", ... and {count - MAX_NAMES} more" if count > MAX_NAMES else ""
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

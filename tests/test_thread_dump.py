"""threads.txt: every thread's Python stack, innermost call first (like `py-spy dump`).

The tests start real threads parked at known lines and read the dump as a
person would: find the thread's header, then its frames below it.
"""

from __future__ import annotations

import _thread
import datetime as dt
import inspect
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from holmespy.profilers.threads import format_threads


def line_of(fn: Callable[..., Any], text: str) -> int:
    """The line number of the first line of `fn` containing `text`."""
    source, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(source) if text in line)


def park_here(stop: threading.Event) -> None:
    stop.wait(5)


def recurse_then_park(depth: int, stop: threading.Event) -> None:
    if depth:
        recurse_then_park(depth - 1, stop)
    else:
        stop.wait(5)


@contextmanager
def parked_thread(
    name: str,
    *,
    daemon: bool = True,
    target: Callable[..., None] = park_here,
    args: tuple[Any, ...] = (),
) -> Iterator[threading.Thread]:
    """A real thread named `name`, parked in `target` until the block ends (join is bounded)."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(*args, stop), name=name, daemon=daemon)
    thread.start()
    try:
        wait_until_parked(thread)
        yield thread
    finally:
        stop.set()
        thread.join(timeout=5)


def wait_until_parked(thread: threading.Thread) -> None:
    """Wait (bounded) until the thread's innermost call is the Event.wait it parks in."""
    deadline = time.monotonic() + 5
    while True:
        frame = sys._current_frames().get(thread.ident or 0)
        if frame is not None and frame.f_code.co_qualname == "Condition.wait":
            return
        assert time.monotonic() < deadline, "thread never reached its parking line"
        time.sleep(0.005)


def section(dump: str, name: str) -> list[str]:
    """The lines of one thread's entry: its header, then its frames ([] if absent)."""
    lines = dump.splitlines()
    header = f'Thread "{name}"'
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


def test_a_named_thread_shows_its_function_file_line_and_source() -> None:
    with parked_thread("worker-1") as thread:
        dump = format_threads()

    header, *frames = section(dump, "worker-1")
    assert header == (
        f'Thread "worker-1" ident={thread.ident} native_id={thread.native_id} daemon=True'
    )
    park_line = line_of(park_here, "stop.wait(5)")
    at = frames.index(f"    park_here ({__file__}:{park_line})")
    assert frames[at + 1] == "        stop.wait(5)"  # the source line, indented under it


def test_frames_are_innermost_first() -> None:
    with parked_thread("worker-1"):
        dump = format_threads()

    functions = [line.split(" (")[0].strip() for line in section(dump, "worker-1")[1::2]]
    # Event.wait -> Condition.wait are the innermost calls; Thread._bootstrap is the outermost.
    assert functions[:3] == ["Condition.wait", "Event.wait", "park_here"]
    assert functions[-1] == "Thread._bootstrap"


def test_daemon_flag_is_shown() -> None:
    with parked_thread("not-a-daemon", daemon=False), parked_thread("a-daemon", daemon=True):
        dump = format_threads()
    assert section(dump, "not-a-daemon")[0].endswith("daemon=False")
    assert section(dump, "a-daemon")[0].endswith("daemon=True")


def test_main_thread_comes_first_then_threads_by_name() -> None:
    with parked_thread("zeta"), parked_thread("alpha"):
        dump = format_threads()
    names = re.findall(r'^Thread "([^"]*)"', dump, flags=re.MULTILINE)
    assert names[0] == "MainThread"
    assert names.index("alpha") < names.index("zeta")
    assert section(dump, "MainThread")[0].endswith("(main thread)")


def test_excluded_threads_are_named_in_the_footer_but_not_dumped() -> None:
    with parked_thread("holmes-worker") as own, parked_thread("app-worker"):
        dump = format_threads(exclude={own.ident or 0})

    assert 'Thread "holmes-worker"' not in dump
    assert 'Thread "app-worker"' in dump
    footer = dump.rstrip("\n").splitlines()[-1]
    assert footer == (
        f'excluded (holmespy\'s own threads, not dumped): "holmes-worker" (ident {own.ident})'
    )


def test_header_gives_pid_thread_count_and_time() -> None:
    now = dt.datetime(2026, 5, 10, 12, 30, 0, 123000, tzinfo=dt.UTC)
    with parked_thread("worker-1"):
        dump = format_threads(exclude={threading.get_ident()}, now=now)
        total = len(threading.enumerate())

    first = dump.splitlines()[0]
    assert first.startswith(f"holmespy thread dump: pid {os.getpid()}, {total} threads")
    assert f"({total - 1} shown, 1 excluded)" in first
    assert "at 2026-05-10T12:30:00.123Z" in first
    assert len(re.findall(r"^Thread ", dump, flags=re.MULTILINE)) == total - 1


def test_threads_unknown_to_threading_are_shown_as_unknown() -> None:
    stop = threading.Event()
    started = threading.Event()

    def raw_thread() -> None:  # started with _thread: no threading.Thread object exists
        started.set()
        stop.wait(5)

    _thread.start_new_thread(raw_thread, ())
    try:
        assert started.wait(5)
        dump = format_threads()
    finally:
        stop.set()

    entry = "\n".join(section(dump, "<unknown>"))
    assert "native_id=? daemon=?" in entry
    assert "raw_thread" in entry


def test_deep_stacks_are_cut_and_say_how_many_frames_were_left_out() -> None:
    with parked_thread("deep", target=recurse_then_park, args=(300,)):
        dump = format_threads()

    entry = section(dump, "deep")
    assert re.fullmatch(r"    \.\.\. \d+ older frames omitted", entry[-1])
    assert sum("recurse_then_park (" in line for line in entry) == 200 - 2  # wait frames first


def test_thread_names_stay_on_one_line() -> None:
    with parked_thread('evil\nname "quoted"'):
        dump = format_threads()
    assert "Thread \"evil\\nname 'quoted'\"" in dump

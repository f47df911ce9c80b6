"""`holmespy show`: why an event fired, its history chart, and the top of each dump.

The dumps in these bundles are made by the real dumpers (thread stacks of
parked threads, task groups of a running loop, a type census) and profiles
with known numbers, so each assertion follows from what was set up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import (
    census_files,
    cli,
    cpu_profile,
    heap_profile,
    pprof,
    task_files,
    thread_files,
    write_bundle,
)

from holmespy import loops
from holmespy.cli.chart import bar_chart
from tests.loop_thread import LoopThread

PARKED = 3


def wait_for_reply(gate: threading.Event) -> None:
    gate.wait()


@pytest.fixture
def threads() -> Iterator[dict[str, bytes]]:
    """A thread dump (text and JSON) with three threads parked in `wait_for_reply`."""
    gate = threading.Event()
    workers = [
        threading.Thread(target=wait_for_reply, args=(gate,), name=f"reply-{n}", daemon=True)
        for n in range(PARKED)
    ]
    for t in workers:
        t.start()
    try:
        yield thread_files()
    finally:
        gate.set()
        for t in workers:
            t.join(5)


async def call_upstream() -> None:
    await asyncio.sleep(3600)


async def handle_request() -> None:
    await call_upstream()


@pytest.fixture
def tasks() -> Iterator[dict[str, bytes]]:
    """A task dump (text and JSON) of a loop with 7 requests stuck on the same upstream call,
    and one other."""
    with LoopThread("serving") as loop:
        for n in range(7):
            loop.spawn(handle_request(), name=f"request-{n}")
        loop.spawn(asyncio.sleep(3600), name="idle")
        loop.settle()
        yield task_files()


def test_the_header_says_why_it_fired(capsys, tmp_path):
    folder = write_bundle(tmp_path, rule="thread", baseline=4, value=40, host="web-3")

    result = cli(capsys, "show", folder.name, "--from", str(tmp_path))

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"event    {folder.name}"
    assert lines[1].startswith("service  checkout on web-3, pid ")
    assert "fired    thread = 40 threads  (OS threads)" in lines
    assert "reason   40 >= 5 = average 4 of the last 10 samples + diff 25%" in lines
    assert (
        "rule     min=10, diff=25, abs=70, cooldown=1h, limit=5/1h,"
        " average of the samples before: 4 threads"
    ) in lines


def test_the_history_chart_shows_the_spike_and_the_line_it_crossed(capsys, tmp_path):
    folder = write_bundle(tmp_path, rule="cpu", baseline=20, value=30)

    out = cli(capsys, "show", str(folder)).out.splitlines()

    start = out.index("history  CPU use, % of usable cores, 11 samples, the firing one last")
    chart = out[start + 1 : start + 9]
    assert chart[0].lstrip().startswith("30% ┤")
    bars = [line.split("┤", 1)[1] for line in chart]
    # Only the last sample reaches the top row; every sample stands on the bottom row.
    assert bars[0].replace("┈", " ").strip() == "██"
    assert bars[-1].count("██") == 11
    crossed = [line for line in chart if line.endswith("average + 25% = 25")]
    assert len(crossed) == 1
    assert "┈" in crossed[0]
    # Ten seconds from the oldest sample to the one that fired.
    assert out[start + 10].split() == ["-10.0s", "fired"]


def test_top_frames_of_each_profile(capsys, tmp_path):
    cpu = cpu_profile(
        {
            ("main", "serve", "render_report"): 3_000_000_000,
            ("main", "serve", "parse"): 1_000_000_000,
        }
    )
    folder = write_bundle(
        tmp_path, rule="cpu", baseline=20, value=30, files={"cpu.pb.gz": pprof(cpu)}
    )

    out = cli(capsys, "show", str(folder), "-n", "3").out

    section = out[out.index("── cpu.pb.gz") :].splitlines()
    assert section[0].startswith("── cpu.pb.gz: cpu, total 4.00 s ")
    assert section[1].split() == ["self", "self%", "cum", "cum%", "function"]
    assert section[2].split()[:6] == ["3.00", "s", "75.0%", "3.00", "s", "75.0%"]
    assert section[2].endswith("render_report  handlers.py")
    assert "parse  handlers.py" in section[3]
    assert section[4].split()[:6] == ["0", "ns", "0.0%", "4.00", "s", "100.0%"]
    assert len([line for line in section if "handlers.py" in line]) == 3


def test_thread_and_task_groups_biggest_first(capsys, tmp_path, threads, tasks):
    folder = write_bundle(tmp_path, rule="task", files={**threads, **tasks})

    out = cli(capsys, "show", str(folder)).out

    threads = out[out.index("── threads.txt") :].splitlines()
    assert "groups of identical stacks" in threads[0]
    biggest = threads[1]
    assert biggest.split()[:2] == [str(PARKED), "threads"]
    assert "reply-0" in biggest
    assert any("wait_for_reply (test_cli_show.py:" in line for line in threads[2:9])
    tasks = out[out.index("── tasks.txt") :].splitlines()
    assert "8 tasks in 2 groups of identical await chains" in tasks[0]
    assert tasks[1].split()[:3] == ["7", "tasks", "request-0"]
    chain = tasks[2:6]
    assert chain[0].strip().startswith("handle_request (test_cli_show.py:")
    assert chain[1].strip().startswith("call_upstream (test_cli_show.py:")
    assert tasks[tasks.index(next(t for t in tasks if "idle" in t))].split()[:2] == ["1", "task"]


def test_heap_profiles_types_and_what_grew_between_the_gcheap_pair(capsys, tmp_path):
    first = heap_profile({("main", "remember"): 1_000_000, ("main", "log"): 5_000})
    second = heap_profile({("main", "remember"): 3_000_000, ("main", "log"): 5_000})
    census = census_files({"dict": 500, "app.Session": 40_000}, growth={"app.Session": 12_000})
    folder = write_bundle(
        tmp_path,
        rule="gcheap",
        baseline=10,
        value=14,
        files={"heap.pb.gz": pprof(first), "heap-2.pb.gz": pprof(second), **census},
    )

    out = cli(capsys, "show", str(folder)).out

    grew = out[out.index("── heap.pb.gz → heap-2.pb.gz") :].splitlines()
    assert "2 sites held memory in both windows, 1 grew" in grew[0]
    # held, growth, after: remember() kept memory in both windows, and more in the second.
    assert grew[2].split()[:6] == ["976.6", "KiB", "+1.9", "MiB", "2.9", "MiB"]
    assert "remember (cache.py:21)" in grew[2]
    types = out[out.index("── heap-types.txt") :].splitlines()
    assert "40,500 objects; fastest growing types" in types[0]
    assert types[2].split() == ["+12,000", "40,000", "app.Session"]


def test_a_corrupt_profile_is_reported_in_its_place(capsys, tmp_path, threads):
    folder = write_bundle(
        tmp_path,
        rule="cpu",
        baseline=20,
        value=30,
        files={"cpu.pb.gz": b"\x1f\x8b\x08\x00garbage", **threads},
    )

    result = cli(capsys, "show", str(folder))

    assert result.code == 0
    assert "!! " + str(folder / "cpu.pb.gz") + ": corrupt pprof profile" in result.out
    assert "── threads.txt" in result.out
    assert "Traceback" not in result.out + result.err


def test_an_older_bundle_without_json_shows_its_text_as_written(capsys, tmp_path):
    written = b"holmespy heap census: pid 7\n\x1b]0;owned\x07 1,234  app.Session\n"
    folder = write_bundle(tmp_path, rule="mem", files={"heap-types.txt": written})

    out = cli(capsys, "show", str(folder)).out.splitlines()

    title = "── heap-types.txt: as written (no heap-types.json: an older holmespy) ─"
    at = next(n for n, line in enumerate(out) if line.startswith(title))
    assert out[at + 1 : at + 3] == [
        "  holmespy heap census: pid 7",
        "  \\x1b]0;owned\\x07 1,234  app.Session",
    ]


def test_a_long_text_dump_is_shown_up_to_its_first_lines(capsys, tmp_path):
    written = "".join(f"line {n}\n" for n in range(1000)).encode()
    folder = write_bundle(tmp_path, rule="task", files={"tasks.txt": written})

    out = cli(capsys, "show", str(folder)).out.splitlines()

    assert "  line 39" in out
    assert "  line 40" not in out
    assert "  … 960 more lines in tasks.txt" in out


def test_a_failed_capture_and_a_missing_file_are_said(capsys, tmp_path):
    folder = write_bundle(
        tmp_path,
        rule="cpu",
        baseline=20,
        value=30,
        captures={"cpu": {"error": "py-spy: Permission denied"}},
        files={"threads.txt": b""},
    )
    (folder / "threads.txt").unlink()

    out = cli(capsys, "show", str(folder)).out

    assert "!! cpu capture failed: py-spy: Permission denied" in out
    assert "!! listed in event.json but missing: threads.txt" in out


def test_latest_with_filters(capsys, tmp_path):
    now = dt.datetime.now(dt.UTC)
    write_bundle(tmp_path, service="a", rule="thread", when=now - dt.timedelta(minutes=5))
    newest = write_bundle(tmp_path, service="a", rule="mem", when=now - dt.timedelta(minutes=1))
    write_bundle(tmp_path, service="b", rule="cpu", baseline=20, value=30, when=now)

    out = cli(capsys, "show", "--latest", "--service", "a", "--from", str(tmp_path)).out

    assert out.splitlines()[0] == f"event    {newest.name}"


@pytest.mark.parametrize(
    ("setup", "message", "code"),
    [
        ("missing", "no such event", 1),
        ("corrupt", "corrupt event.json: not JSON", 1),
        ("folder", "not an event bundle (it has no event.json)", 1),
    ],
)
def test_errors_are_one_line(capsys, tmp_path, setup, message, code):
    folder = write_bundle(tmp_path / "dumps", rule="thread")
    if setup == "missing":
        target = "19990101T000000.000Z-cpu-0000000000"
    elif setup == "corrupt":
        (folder / "event.json").write_text("[1, 2")
        target = folder.name
    else:
        (tmp_path / "empty").mkdir()
        target = str(tmp_path / "empty")

    result = cli(capsys, "show", target, "--from", str(tmp_path / "dumps"))

    assert result.code == code
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_show_without_an_event_is_bad_usage(capsys, tmp_path):
    result = cli(capsys, "show", "--from", str(tmp_path))

    assert result.code == 2


def test_it_reads_a_fetched_copy_the_same_way(capsys, tmp_path, threads):
    folder = write_bundle(tmp_path / "dumps", rule="thread", files=threads)
    fetched = Path(
        cli(
            capsys,
            "fetch",
            folder.name,
            "--from",
            str(tmp_path / "dumps"),
            "-o",
            str(tmp_path / "o"),
        ).out.strip()
    )

    from_source = cli(capsys, "show", folder.name, "--from", str(tmp_path / "dumps")).out
    from_copy = cli(capsys, "show", str(fetched)).out

    def body(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("from ")]

    assert body(from_copy) == body(from_source)


@pytest.mark.parametrize(
    "values", [[0.0] * 11, [5.0] * 11, [-3.0, -1.0, 2.0], [1e-9, 2e-9], [1e12, 3e12]]
)
def test_the_chart_draws_any_history_it_is_given(values):
    lines = bar_chart(values, lines=[("line", values[0])], rows=4)

    assert len(lines) == 4 + 2
    bottom = lines[3].split("┤", 1)[1]
    # Every value stands on the floor: one two-cell bar each, none blank.
    bars = [bottom[i * 3 : i * 3 + 2] for i in range(len(values))]
    assert all(len(set(bar)) == 1 and bar[0] in "▁▂▃▄▅▆▇█" for bar in bars), bottom


def stall_the_loop(release: threading.Event) -> None:
    """A callback that blocks its loop, as a stray time.sleep() in a handler does."""
    while not release.is_set():
        time.sleep(0.01)


@pytest.mark.skipif(not loops.tasks_supported(), reason="no task registry on this Python")
def test_a_blocked_loop_is_shown_with_the_stack_that_blocks_it(capsys, tmp_path):
    release = threading.Event()
    with LoopThread("stuck") as loop:
        loop.spawn(asyncio.sleep(3600), name="idle")
        loop.settle()
        try:
            loop.loop.call_soon_threadsafe(stall_the_loop, release)
            dump = task_files(probe_timeout=0.2)
        finally:
            release.set()
    folder = write_bundle(tmp_path, rule="task", files=dump)

    out = cli(capsys, "show", str(folder)).out.splitlines()

    at = next(n for n, line in enumerate(out) if line.startswith("!! LOOP BLOCKED"))
    assert out[at].endswith("its thread is executing:")
    # Innermost call first: the callback that blocks, then the loop that called it.
    assert out[at + 1].strip().startswith("stall_the_loop (test_cli_show.py:")
    assert any("run_forever" in line for line in out[at + 2 : at + 8])


def test_a_partial_event_says_why_and_which_engine_took_its_profile(capsys, tmp_path):
    why = "auto: py-spy could not attach (exit status 1); used the in-process sampler"
    folder = write_bundle(
        tmp_path,
        rule="cpu",
        partial=True,
        partial_reason="SIGTERM received; cut short: cpu",
        captures={"cpu": {"engine": "sampler", "why": why, "cut_short": True}},
    )

    out = cli(capsys, "show", str(folder)).out.splitlines()

    assert "!! partial: SIGTERM received; cut short: cpu" in out
    assert f"cpu      profiled by sampler: {why}" in out

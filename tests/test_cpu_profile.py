"""CPU profiles of the running process: py-spy, the in-process sampler, yappi.

Every test profiles this very process while real threads run in it: one
spinning in `burn_cpu`, one asleep, and one busy thread standing for
holmespy's own, which is excluded by ident. Failing py-spys are small shell
scripts passed as `pyspy=`.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from holmespy.formats.profile import Profile
from holmespy.naming import ModuleNames, ThreadTable
from holmespy.profilers.cpu import CpuCapture, capture_cpu
from holmespy.profilers.cpu._pyspy import (
    PR_SET_PTRACER_ANY,
    find_pyspy,
    parse_raw,
    ptrace_allowed,
    set_ptracer,
)

PYSPY = find_pyspy(None)[0]
needs_pyspy = pytest.mark.skipif(PYSPY is None, reason="py-spy is not installed")

PERMISSION_DENIED = (
    "Permission Denied: Try running again with elevated permissions by going "
    "'sudo env \"PATH=$PATH\" !!'"
)


def burn_cpu(n: int = 20_000) -> int:
    """The hot function: arithmetic only, so it is the innermost frame while it runs."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def excluded_work(n: int = 20_000) -> int:
    """What the excluded thread burns: must never show up in a profile."""
    total = 0
    for i in range(n):
        total -= i * i
    return total


@dataclass
class Host:
    hot: threading.Thread
    sleeper: threading.Thread
    own: threading.Thread
    """Busy, but "holmespy's own": excluded by ident."""

    @property
    def exclude(self) -> set[int]:
        # The capturing thread (this test's) is holmespy's worker in production.
        return {self.own.ident or 0, threading.get_ident()}


@pytest.fixture
def host() -> Iterator[Host]:
    stop = threading.Event()

    def spin(work: object) -> None:
        while not stop.is_set():
            work()  # type: ignore[operator]

    threads = Host(
        hot=threading.Thread(target=spin, args=(burn_cpu,), name="cpu-hot", daemon=True),
        sleeper=threading.Thread(target=stop.wait, name="sleeper", daemon=True),
        own=threading.Thread(target=spin, args=(excluded_work,), name="holmespy-own", daemon=True),
    )
    for thread in (threads.hot, threads.sleeper, threads.own):
        thread.start()
    try:
        yield threads
    finally:
        stop.set()
        for thread in (threads.hot, threads.sleeper, threads.own):
            thread.join(5)


def cpu_ns(profile: Profile) -> int:
    return [t.type for t in profile.sample_types].index("cpu")


def cpu_by_thread(profile: Profile) -> dict[str, int]:
    col = cpu_ns(profile)
    out: dict[str, int] = {}
    for sample in profile.samples:
        name = sample.labels["thread"]
        out[name] = out.get(name, 0) + sample.values[col]
    return out


def self_cpu_by_function(profile: Profile) -> dict[str, int]:
    col = cpu_ns(profile)
    out: dict[str, int] = {}
    for sample in profile.samples:
        if sample.stack:
            name = sample.stack[0].function
            out[name] = out.get(name, 0) + sample.values[col]
    return out


def assert_hot_thread_profiled(capture: CpuCapture, host: Host) -> None:
    profile = capture.profile
    assert profile is not None, capture.why
    by_thread = cpu_by_thread(profile)
    total = sum(by_thread.values())
    assert total > 0, capture.facts

    # The hot thread carries the CPU; the sleeping thread weighs (almost) nothing.
    assert by_thread.get("cpu-hot", 0) / total > 0.8, by_thread
    assert by_thread.get("sleeper", 0) / total < 0.02, by_thread

    # The hottest function, by self CPU time, is burn_cpu, named with its module.
    by_function = self_cpu_by_function(profile)
    hottest = max(by_function, key=by_function.__getitem__)
    assert hottest == f"{burn_cpu.__module__}.burn_cpu", by_function

    # Its frames carry the file and a line inside burn_cpu.
    code = burn_cpu.__code__
    frame = next(s.stack[0] for s in profile.samples if s.stack and s.stack[0].function == hottest)
    assert frame.filename == code.co_filename
    assert code.co_firstlineno <= frame.line <= code.co_firstlineno + 5

    # Excluded threads never appear: not by name, not by what they run.
    assert "holmespy-own" not in by_thread
    assert "MainThread" not in by_thread
    assert not any(f.function.endswith("excluded_work") for s in profile.samples for f in s.stack)


def live_group_members(pgid: int) -> list[int]:
    """Processes (zombies aside) still in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def fake_pyspy(tmp_path: Path, body: str) -> str:
    script = tmp_path / "py-spy"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


# -- the engines --------------------------------------------------------------


@needs_pyspy
def test_pyspy_profiles_the_hot_thread_from_outside(host: Host) -> None:
    capture = capture_cpu(1.5, engine="pyspy", exclude_threads=host.exclude)

    assert capture.engine == "pyspy", capture.why
    assert_hot_thread_profiled(capture, host)
    profile = capture.profile
    assert profile is not None
    assert [(t.type, t.unit) for t in profile.sample_types] == [
        ("samples", "count"),
        ("cpu", "nanoseconds"),
    ]
    assert profile.period == 10_000_000  # 100 Hz
    # Each thread's samples share the CPU time its own clock measured over the window.
    assert capture.facts["samples_scaled_to_measured_cpu"] == capture.facts["samples"]
    assert capture.facts["cpu_seconds"] == pytest.approx(
        capture.facts["cpu_seconds_measured"], rel=0.1
    )
    assert capture.facts["samples_excluded"] > 0  # the busy excluded thread was seen, and dropped
    assert capture.facts["idle_threads"].startswith("excluded")


@pytest.fixture
def contending() -> Iterator[list[threading.Thread]]:
    """Four CPU-bound Python threads: at any moment three of them wait for the GIL."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            burn_cpu(2000)

    threads = [threading.Thread(target=spin, name=f"gil-{n}", daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)


@needs_pyspy
@pytest.mark.parametrize("engine", ["pyspy", "sampler"])
def test_a_profiles_cpu_total_is_the_cpu_the_process_used(
    contending: list[threading.Thread], engine: str
) -> None:
    # py-spy counts a thread waiting for the GIL as running: unweighed, 4
    # contending threads gave 7.27 s of samples for 5.03 s of CPU.
    process_before, own_before = time.process_time(), time.thread_time()
    capture = capture_cpu(2, engine=engine, exclude_threads={threading.get_ident()})
    process_used = time.process_time() - process_before - (time.thread_time() - own_before)

    assert capture.engine == engine, capture.why
    assert capture.profile is not None
    total = sum(cpu_by_thread(capture.profile).values()) / 1e9
    # What the threads' own clocks say they used over the window...
    measured = capture.facts["cpu_seconds_measured"]
    assert total == pytest.approx(measured, rel=0.1), capture.facts
    # ...is CPU this process really used: the window is inside the call.
    assert 0.5 * process_used < measured <= process_used, (measured, process_used)


def test_sampler_weighs_stacks_by_thread_cpu_time(host: Host) -> None:
    capture = capture_cpu(1.5, engine="sampler", exclude_threads=host.exclude)

    assert capture.engine == "sampler", capture.why
    assert_hot_thread_profiled(capture, host)
    profile = capture.profile
    assert profile is not None
    # Stacks are innermost first and complete down to the thread's bootstrap.
    deepest = max(profile.samples, key=lambda s: len(s.stack))
    assert deepest.stack[-1].function == "threading.Thread._bootstrap"
    # The sampler names its own thread's absence: it is never in the profile.
    assert "holmespy-cpu-sampler" not in cpu_by_thread(profile)


def test_yappi_gives_self_time_per_function_and_caller(host: Host) -> None:
    pytest.importorskip("yappi")
    capture = capture_cpu(1.0, engine="yappi", exclude_threads=host.exclude)

    assert capture.engine == "yappi", capture.why
    assert_hot_thread_profiled(capture, host)
    profile = capture.profile
    assert profile is not None
    # yappi knows where functions start, not which line ran: frames are
    # (function, caller) at most, with the function's first line.
    assert all(1 <= len(s.stack) <= 2 for s in profile.samples)
    hot = next(s.stack[0] for s in profile.samples if s.stack[0].function.endswith("burn_cpu"))
    assert hot.line == hot.start_line == burn_cpu.__code__.co_firstlineno


def test_sampler_reports_the_rate_it_achieved() -> None:
    quiet = capture_cpu(1.0, engine="sampler", rate=100)

    facts = quiet.facts
    assert 80 <= facts["rate_achieved"] <= 105, facts
    assert facts["ticks"] == pytest.approx(facts["rate_achieved"] * facts["seconds"], abs=2)


def test_sampler_under_busy_threads_says_the_gil_slowed_it(host: Host) -> None:
    busy = capture_cpu(1.0, engine="sampler", rate=1000, exclude_threads=host.exclude)

    facts = busy.facts
    assert 5 <= facts["rate_achieved"] < 900, facts
    assert "GIL" in facts["rate_note"]


# -- auto: py-spy when it can, the sampler otherwise --------------------------


@needs_pyspy
def test_auto_uses_pyspy_when_it_attaches(host: Host) -> None:
    capture = capture_cpu(1, exclude_threads=host.exclude)

    assert capture.engine == "pyspy"
    assert capture.why == f"auto: py-spy attached to pid {os.getpid()}"
    assert capture.facts["pyspy_exit"] == "exit status 0"


def test_auto_falls_back_when_pyspy_may_not_trace_us(host: Host, tmp_path: Path) -> None:
    denied = fake_pyspy(tmp_path, f"echo '{PERMISSION_DENIED}' >&2\nexit 1")

    capture = capture_cpu(1.5, pyspy=denied, exclude_threads=host.exclude)

    assert capture.engine == "sampler"
    assert capture.why.startswith("auto: py-spy could not attach (exit status 1: Permission Denied")
    # The sampler covered the window from its start, whenever py-spy failed:
    # no second window after the failure (and no wording that depends on when).
    assert capture.why.endswith("used the in-process sampler that ran alongside from the start")
    assert capture.facts["seconds_asked"] == 1.5
    assert_hot_thread_profiled(capture, host)


@pytest.mark.timeout(120)  # a hang guard only: the deadline is proven below, not timed
def test_a_hung_pyspy_is_killed_and_reaped_by_the_deadline(host: Host, tmp_path: Path) -> None:
    hung = fake_pyspy(tmp_path, "trap '' TERM INT HUP\nwhile :; do sleep 1; done")

    capture = capture_cpu(1, pyspy=hung, margin=1, exclude_threads=host.exclude)

    # The fake ignores SIGINT and never ends by itself: returning at all, with
    # py-spy killed by us, proves the deadline; the limit it was given counts
    # from py-spy's start, so it is at most the window 1 s + margin 1 s.
    assert capture.facts["pyspy_attempt"]["pyspy_exit"] == "killed by holmespy"
    limit = re.search(r"py-spy did not finish within (\d+\.\d) s", capture.why)
    assert limit is not None, capture.why
    assert 0 < float(limit.group(1)) <= 1 + 1
    # A py-spy that is slow or stuck (thousands of threads) still leaves a CPU
    # profile: the sampler's, taken alongside over the same window.
    assert capture.engine == "sampler"
    assert "py-spy did not finish within " in capture.why
    assert "killed it and its process group (SIGKILL) and reaped it" in capture.why
    assert capture.why.endswith("used the in-process sampler that ran alongside from the start")
    assert_hot_thread_profiled(capture, host)
    pid = capture.facts["pyspy_attempt"]["pyspy_pid"]
    with pytest.raises(ChildProcessError):  # already reaped: no zombie of ours
        os.waitpid(pid, os.WNOHANG)
    assert live_group_members(pid) == []  # its `sleep` died with it


def test_only_pyspy_asked_and_hung_gives_no_profile_and_says_why(
    host: Host, tmp_path: Path
) -> None:
    hung = fake_pyspy(tmp_path, "trap '' TERM INT HUP\nwhile :; do sleep 1; done")

    capture = capture_cpu(0.5, engine="pyspy", pyspy=hung, margin=0.5, exclude_threads=host.exclude)

    assert capture.engine == "none"
    assert capture.profile is None
    assert capture.why.startswith("pyspy: py-spy did not finish within ")
    assert "killed it and its process group (SIGKILL) and reaped it" in capture.why


def test_the_pyspy_window_ends_its_length_after_the_launch_whatever_pyspy_counts(
    tmp_path: Path,
) -> None:
    # py-spy's -d counts from when it has attached, seconds late on a loaded
    # machine; this one never ends by itself: only the SIGINT at the end of
    # the window (it then writes what it has) gives a profile before the deadline.
    # A Python fake, not sh: a shell that starts with SIGINT ignored (any
    # background job of a non-interactive shell, as CI may run us) cannot trap it.
    slow_to_count = tmp_path / "py-spy"
    slow_to_count.write_text(
        f"""#!{sys.executable}
import signal, sys, time
out = sys.argv[sys.argv.index("--output") + 1]
def finish(*_):
    with open(out, "w") as f:
        f.write("thread (1): MainThread;work (/app/w.py:3) 7\\n")
    print("Samples: 7 Errors: 0", flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, finish)
print("py-spy> Sampling process 100 times a second. Press Control-C to exit.", flush=True)
while True:
    time.sleep(0.05)
"""
    )
    slow_to_count.chmod(0o755)

    capture = capture_cpu(1.0, pyspy=str(slow_to_count), engine="pyspy", margin=2)

    assert capture.engine == "pyspy", capture.why
    assert capture.facts["stopped_with"] == "SIGINT at the end of the window"
    assert capture.facts["pyspy_reported_samples"] == 7
    assert capture.profile is not None
    assert [s.values[0] for s in capture.profile.samples] == [7]


def test_a_crashing_pyspy_is_reported_and_the_sampler_takes_over(
    host: Host, tmp_path: Path
) -> None:
    crashing = fake_pyspy(tmp_path, "echo 'about to crash' >&2\nkill -SEGV $$")

    capture = capture_cpu(1, pyspy=crashing, exclude_threads=host.exclude)

    assert capture.engine == "sampler"
    assert capture.why.startswith("auto: py-spy crashed (killed by SIGSEGV): about to crash")
    assert capture.facts["pyspy_attempt"]["pyspy_exit"] == "killed by SIGSEGV"
    assert_hot_thread_profiled(capture, host)


def test_missing_pyspy_means_the_sampler_and_an_install_hint(host: Host, tmp_path: Path) -> None:
    nowhere = str(tmp_path / "no-such-py-spy")

    auto = capture_cpu(1, pyspy=nowhere, exclude_threads=host.exclude)
    assert auto.engine == "sampler"
    assert auto.why == (
        f"auto: py-spy is not installed (looked at {nowhere}); "
        "pip install holmespy[profile] adds it; used the in-process sampler"
    )
    assert_hot_thread_profiled(auto, host)

    only_pyspy = capture_cpu(1, engine="pyspy", pyspy=nowhere)
    assert only_pyspy.engine == "none"
    assert only_pyspy.profile is None
    assert "pip install holmespy[profile]" in only_pyspy.why


def test_bad_arguments_are_reported_not_raised() -> None:
    assert "not an engine" in capture_cpu(1, engine="perf").why
    assert "positive" in capture_cpu(float("nan")).why
    assert capture_cpu(-1, engine="sampler").engine == "none"


# -- ptrace permission --------------------------------------------------------


def test_prctl_never_raises_on_this_kernel(tmp_path: Path) -> None:
    # Without Yama the kernel answers EINVAL: harmless, and not an exception.
    assert isinstance(set_ptracer(PR_SET_PTRACER_ANY), str)
    assert isinstance(set_ptracer(0), str)

    with ptrace_allowed() as status:
        assert isinstance(status, str)

    # Where Yama's ptrace_scope is 1 the tracer is allowed for the block only.
    scope = tmp_path / "ptrace_scope"
    scope.write_text("1\n")
    with ptrace_allowed(scope) as status:
        assert status.startswith("Yama ptrace_scope=1: PR_SET_PTRACER_ANY for the capture")


# -- py-spy's raw output ------------------------------------------------------


def test_raw_output_becomes_innermost_first_stacks_with_thread_names() -> None:
    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="jobs; (batch)", daemon=True)
    worker.start()
    raw = "\n".join(
        [
            # A thread name may contain ';': the name threading knows wins.
            f"thread ({worker.native_id}): jobs; (batch);outer (/srv/app/jobs.py:10);"
            "Report.render (/srv/app/jobs.py:42) 7",
            # A thread threading does not know, without a name: labelled by its id.
            "thread (999999);<module> (<frozen runpy>:88) 2",
            "not a py-spy line",
        ]
    )
    threads = ThreadTable()
    threads.update()
    release.set()
    worker.join()

    stacks, counts = parse_raw(raw, ModuleNames(), threads, frozenset(), period=10_000_000)

    assert counts == {"samples": 9, "samples_excluded": 0, "unparsed_lines": 1}
    by_thread = {label: (stack, values) for (label, stack), values in stacks.items()}
    stack, values = by_thread["jobs; (batch)"]
    assert [f.function for f in stack] == ["jobs.Report.render", "jobs.outer"]
    assert (stack[0].filename, stack[0].line) == ("/srv/app/jobs.py", 42)
    assert values == [7, 70_000_000]  # samples, and samples x period of CPU
    stack, _ = by_thread["<unknown 999999>"]
    assert [f.function for f in stack] == ["runpy.<module>"]


def child_processes() -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid():
                children.append(int(entry.name))
    return children


@pytest.fixture(autouse=True)
def _leaves_no_threads_or_children() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name == "holmespy-cpu-sampler"]
    assert child_processes() == []


def test_a_triggered_capture_samples_at_the_configured_rate(tmp_path: Path) -> None:
    from holmespy.config import Config
    from holmespy.profilers import CaptureContext, capture_cpu_profile

    config = Config(cpu_engine="sampler", cpu_profile_seconds=0.3, cpu_profile_rate=20)
    ctx = CaptureContext(directory=tmp_path, rule="cpu", config=config)

    facts = capture_cpu_profile(ctx)

    assert facts["engine"] == "sampler"
    assert facts["rate_asked"] == 20
    assert (tmp_path / "cpu.pb.gz").exists()

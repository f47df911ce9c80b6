"""py-spy as a child process recording this process, and its output as a Profile.

The child runs `py-spy record --nonblocking -f raw --threads --full-filenames
--pid <our pid>`: it reads our memory from outside without pausing us
(REFERENCE: 0-3 % slowdown, against 4-12 % when it pauses the process), and it
is another process, so its own work never shows in the profile. Idle threads
are left out (py-spy's default without `--idle`), which makes the profile one
of CPU use. `--nonblocking` can tear a stack that changes while it is read:
such samples show a partial stack (no thread bootstrap frames) and are kept.

The raw format is one line per distinct stack, outermost frame first:

    thread (13224): hot;Thread.run (/usr/lib/python3.11/threading.py:982);burn (/app/m.py:6) 88

The root element is `thread (<native tid>)`, or a hex pthread id where py-spy
has no tid, followed by `: <thread name>` when py-spy could read the name;
then `qualname (file:line)` frames; then the sample count.

py-spy counts a thread as busy while it only waits for the GIL (4 threads
contending for it gave 7.27 s of samples for 5.03 s of CPU), so each
thread's samples are weighed by the CPU time its own clock says it used over
the window: the profile's total is the CPU the process really used.

Supervision: the child gets a hard deadline and is killed with its whole
process group (it runs in a session of its own) and reaped when it passes
it; its stdout/stderr go to files beside its output, of which only the
tails are read. When the process starts to go
(`cut`), the child gets SIGINT, writes what it sampled (~50 ms) and that is
the profile. Its output goes to a hidden folder of the event being captured,
so if this process is killed outright py-spy still writes its samples there
(it stops when its target exits) and the next start salvages them.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holmespy.formats.profile import Frame, Profile
from holmespy.lazyimport import importing
from holmespy.naming import ModuleNames, ThreadTable, label_name, unknown_thread
from holmespy.profilers.cpu._common import Stacks, add_stacks, sampling_profile
from holmespy.safefs import make_temp_dir_in
from holmespy.teardown import Cut
from holmespy.tempdir import temp_root
from holmespy.threadclocks import thread_cpu_ns, used_between

PYSPY_NAME = "py-spy"
WORKDIR_NAME = ".pyspy"
"""py-spy's folder inside the event's temp folder; `RAW_NAME` in it is its output."""
RAW_NAME = "raw.txt"
TEMP_PREFIX = "holmespy-pyspy-"
"""Outside an event (a direct `capture_cpu` call): `<tmp>/holmespy-pyspy-<pid>-*`."""

MAX_OUTPUT_BYTES = 64 * 1024 * 1024
"""Raw output read at most (a 5 s record of hundreds of threads stays far below)."""

_TAIL_BYTES = 8192
_POLL = 0.05
"""How often a running child is checked: an early exit is seen within this."""
_REAP_TIMEOUT = 1.0
"""SIGKILL is reaped at once; only a child stuck in the kernel could make us wait this long."""
_CUT_RESERVE = 0.15
"""Seconds of a cut's budget kept for reading py-spy's output and writing the event."""

# -- finding py-spy -----------------------------------------------------------


def find_pyspy(explicit: str | None) -> tuple[str | None, list[str]]:
    """(the py-spy executable to run or None, the places looked at).

    An explicit path is the only candidate. Otherwise: next to
    `sys.executable` (a virtualenv's bin, where `pip install` put it even
    when the venv is not activated), the interpreter's scripts folder, PATH.
    """
    if explicit is not None:
        return (explicit if _is_executable(explicit) else None), [explicit]
    looked: list[str] = []
    with importing:  # sysconfig imports its _sysconfigdata module on first use
        scripts = sysconfig.get_path("scripts")
    for folder in (os.path.dirname(sys.executable), scripts):
        if not folder:
            continue
        candidate = os.path.join(folder, PYSPY_NAME)
        if candidate in looked:
            continue
        looked.append(candidate)
        if _is_executable(candidate):
            return candidate, looked
    looked.append("PATH")
    return shutil.which(PYSPY_NAME), looked


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


# -- Yama ---------------------------------------------------------------------
#
# Under Yama ptrace_scope=1 (Ubuntu's default) a process may only be traced by
# its ancestors unless it names a tracer, and py-spy is our child, not our
# parent. PR_SET_PTRACER is process-wide and cannot be read back: restoring
# means clearing it, which also clears a tracer the host itself had declared.
# We therefore only touch it where Yama asks for it, and only for the capture.

PR_SET_PTRACER = 0x59616D61
PR_SET_PTRACER_ANY = ctypes.c_ulong(-1).value
YAMA_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")

_ptracer_lock = threading.Lock()
_ptracer_users = 0
_prctl: Any = None


def set_ptracer(value: int) -> str:
    """`prctl(PR_SET_PTRACER, value)`; says what happened, never raises.

    On a kernel without Yama the call fails with EINVAL, which is harmless.
    """
    global _prctl
    try:
        if _prctl is None:
            # A CDLL of our own: setting argtypes on it changes no one else's prctl.
            func = ctypes.CDLL(None, use_errno=True).prctl
            func.restype = ctypes.c_int
            func.argtypes = [ctypes.c_int, *([ctypes.c_ulong] * 4)]
            _prctl = func
        ctypes.set_errno(0)
        if _prctl(PR_SET_PTRACER, value, 0, 0, 0) == 0:
            return "ok"
        err = ctypes.get_errno()
        name = os.strerror(err) if err else "unknown error"
        return f"EINVAL (no Yama): {name}" if err == 22 else f"errno {err}: {name}"
    except Exception as exc:  # no libc symbol, not Linux...
        return f"unavailable: {type(exc).__name__}: {exc}"


def yama_scope(path: Path = YAMA_SCOPE) -> int | None:
    """Yama's ptrace_scope, or None without Yama; -1 when the file exists but is unreadable."""
    try:
        return int(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return -1


@contextlib.contextmanager
def ptrace_allowed(path: Path = YAMA_SCOPE) -> Iterator[str]:
    """Let a child trace us while the block runs, where Yama requires it; yields what was done."""
    global _ptracer_users
    scope = yama_scope(path)
    if scope is None:
        yield "no Yama: nothing to allow"
        return
    if scope == 0:
        yield "Yama ptrace_scope=0: nothing to allow"
        return
    if scope >= 2:
        yield f"Yama ptrace_scope={scope}: only a privileged py-spy can attach"
        return
    with _ptracer_lock:
        _ptracer_users += 1
        status = set_ptracer(PR_SET_PTRACER_ANY)
    try:
        yield f"Yama ptrace_scope={scope}: PR_SET_PTRACER_ANY for the capture ({status})"
    finally:
        with _ptracer_lock:
            _ptracer_users -= 1
            if _ptracer_users == 0:
                set_ptracer(0)


# -- running py-spy -----------------------------------------------------------


@dataclass
class PySpyResult:
    profile: Profile | None
    failure: str | None
    """Why there is no profile, for the user; None on success."""
    attached: bool
    """py-spy said anything on stdout (it prints its banner once sampling starts)."""
    facts: dict[str, Any] = field(default_factory=dict)


class _Tail:
    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > _TAIL_BYTES:
            del self.data[: len(self.data) - _TAIL_BYTES]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def record(
    pyspy: str,
    seconds: float,
    rate: int,
    exclude: frozenset[int],
    deadline: float,
    *,
    cut: Cut | None = None,
    folder: Path | None = None,
) -> PySpyResult:
    """Record this process with py-spy for `seconds`; the child is gone when this returns.

    `deadline` (time.monotonic) is when the child is killed if still running.
    The window is `seconds` of wall time from the child's start: py-spy's
    own `-d` counts from when it has attached (0.2 s later here, seconds on
    a loaded machine) and takes whole seconds, so the child gets one second
    more than the window as a backstop and is stopped with SIGINT (it then
    writes what it has) when the window ends, or when `cut` is set. Its
    start-up thus comes out of the window instead of adding to the event's
    time. Its output goes to `folder/.pyspy` (an event's temp folder), else
    to a temp folder named after our pid; either is removed before this
    returns.
    """
    threads = ThreadTable()
    threads.update()
    names = ModuleNames()
    if folder is not None:
        workdir = os.path.join(folder, WORKDIR_NAME)
        os.mkdir(workdir, 0o700)
    else:
        workdir = str(make_temp_dir_in(temp_root(), f"{TEMP_PREFIX}{os.getpid()}-"))
    output = os.path.join(workdir, RAW_NAME)
    whole = math.ceil(seconds) + 1
    argv = [
        pyspy,
        "record",
        "--nonblocking",
        "--rate",
        str(rate),
        "--duration",
        str(whole),
        "--format",
        "raw",
        "--threads",
        "--full-filenames",
        "--output",
        RAW_NAME,  # in its cwd, the work folder
        "--pid",
        str(os.getpid()),
    ]
    facts: dict[str, Any] = {"pyspy": pyspy, "idle_threads": "excluded (py-spy without --idle)"}
    exclude_native = threads.natives(exclude)
    try:
        with ptrace_allowed() as ptrace:
            facts["ptrace"] = ptrace
            clocks_before = thread_cpu_ns(exclude_native)
            time_nanos = time.time_ns()
            started = time.monotonic()
            # Its stdout and stderr are files beside its output, not pipes: if this
            # process is killed, a pipe without reader would kill py-spy (EPIPE)
            # before it wrote the samples the next start salvages.
            out_path = os.path.join(workdir, "stdout.txt")
            err_path = os.path.join(workdir, "stderr.txt")
            try:
                with _private(out_path) as out_file, _private(err_path) as err_file:
                    # cwd: a crashing child dumps core into our private folder.
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out_file,
                        stderr=err_file,
                        cwd=workdir,
                        start_new_session=True,
                    )
            except OSError as exc:
                return PySpyResult(None, f"could not start {pyspy}: {exc}", False, facts)
            facts["pyspy_pid"] = proc.pid
            sigint_at = started + seconds
            killed = _supervise(proc, sigint_at, deadline, facts, cut)
            ended = time.monotonic()
            out, err = _tail_of(out_path), _tail_of(err_path)
            measured = used_between(clocks_before, thread_cpu_ns(exclude_native))
        facts["seconds"] = round(ended - started, 3)
        if cut is not None and cut.is_set() and "cut_short" in facts:
            facts["cut_short"] = f"stopped after {ended - started:.2f} s: {cut.reason}"
        failure, attached = _judge(
            proc.returncode, out.text(), err.text(), killed, deadline - started, facts
        )
        if failure is not None:
            return PySpyResult(None, failure, attached, facts)
        threads.update()  # name the threads that started during the window too
        profile = sampling_profile(rate, time_nanos)
        profile.duration_nanos = int((ended - started) * 1e9)
        try:
            text = _read_output(output, facts)
        except OSError as exc:
            return PySpyResult(None, f"py-spy exited 0 but wrote no output ({exc})", True, facts)
        stacks, counts = parse_raw(text, names, threads, exclude, profile.period, measured)
        add_stacks(profile, stacks)
        facts.update(counts)
        facts["cpu_seconds"] = round(sum(v[1] for v in stacks.values()) / 1e9, 3)
        facts["cpu_seconds_measured"] = round(sum(measured.values()) / 1e9, 3)
        facts["weighting"] = (
            "py-spy's samples of each thread, scaled to the CPU time the thread's own clock"
            " says it used over the window (py-spy also counts threads waiting for the GIL)"
        )
        facts["rate_asked"] = rate
        ticks = facts.get("pyspy_reported_samples")
        if isinstance(ticks, int) and ended > started:
            facts["rate_achieved"] = round(ticks / (ended - started), 1)
        profile.comments.append(
            f"py-spy record --nonblocking at {rate} Hz from outside the process; "
            "idle threads excluded; each thread's samples weighed by its measured CPU time"
        )
        return PySpyResult(profile, None, True, facts)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _supervise(
    proc: subprocess.Popen[bytes],
    sigint_at: float | None,
    deadline: float,
    facts: dict[str, Any],
    cut: Cut | None = None,
) -> bool:
    """Wait for the child; kill its group at `deadline`; True if it had to be killed.

    When `cut` is set the child gets SIGINT at once and only what is left of
    the cut's budget (less a reserve for writing the event) to write its output.
    """
    killed = False
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if cut is not None and cut.is_set() and "cut_short" not in facts:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                facts["cut_short"] = True
                facts["stopped_with"] = f"SIGINT: {cut.reason}"
                sigint_at = None
                deadline = min(deadline, cut.deadline - _CUT_RESERVE)
            if now >= deadline:
                _kill_group(proc.pid)
                killed = True
                break
            if sigint_at is not None and now >= sigint_at:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                facts["stopped_with"] = "SIGINT at the end of the window"
                sigint_at = None
            wake = min(deadline, sigint_at) if sigint_at is not None else deadline
            timeout = max(0.0, min(_POLL, wake - now))
            if cut is not None and "cut_short" not in facts:
                cut.wait(timeout)  # wakes at once on a cut
            else:
                time.sleep(timeout)
        if killed:
            try:
                proc.wait(_REAP_TIMEOUT)
                facts["pyspy_reaped"] = True
            except subprocess.TimeoutExpired:
                facts["pyspy_reaped"] = False
    finally:
        if proc.returncode is None and not killed:  # we are unwinding from an error
            _kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_REAP_TIMEOUT)
    if not killed and proc.returncode != 0:
        # A failed child may have started helpers in its group (a wrapper
        # script); its pgid cannot be reused while any of them lives.
        _kill_group(proc.pid)
    return killed


@contextlib.contextmanager
def _private(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)


def _tail_of(path: str) -> _Tail:
    tail = _Tail()
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL_BYTES))
            tail.add(fh.read(_TAIL_BYTES))
    except OSError:
        pass
    return tail


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def error_tail(text: str, limit: int = 400) -> str:
    """py-spy's error message on one line: backtraces cut, the end kept."""
    for marker in ("Stack backtrace:", "stack backtrace:", "note: "):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    one = " | ".join(lines)
    return one if len(one) <= limit else "…" + one[-(limit - 1) :]


_REPORTED = re.compile(r"Samples: (\d+) Errors: (\d+)")


def _judge(
    rc: int | None, stdout: str, stderr: str, killed: bool, limit: float, facts: dict[str, Any]
) -> tuple[str | None, bool]:
    """(why the run gave no profile or None, whether py-spy had started sampling)."""
    attached = bool(stdout.strip())
    facts["pyspy_exit"] = "killed by holmespy" if killed else _exit_text(rc)
    if stderr.strip():
        facts["pyspy_stderr"] = stderr[-2000:]
    reported = _REPORTED.search(stdout)
    if reported:
        facts["pyspy_reported_samples"] = int(reported.group(1))
        facts["pyspy_reported_errors"] = int(reported.group(2))
    tail = error_tail(stderr)
    detail = f": {tail}" if tail else ""
    if killed:
        reaped = "reaped it" if facts.get("pyspy_reaped") else "could not reap it"
        return (
            f"py-spy did not finish within {limit:.1f} s; killed it and its process group "
            f"(SIGKILL) and {reaped}{detail}",
            attached,
        )
    if rc == -signal.SIGINT and "stopped_with" in facts:
        return "py-spy was stopped at the end of the window before it had attached", attached
    if rc is None or rc < 0:
        signame = _signal_name(-rc) if rc is not None else "an unknown signal"
        return f"py-spy crashed (killed by {signame}){detail}", attached
    if rc != 0:
        what = "failed while recording" if attached else "could not attach"
        return f"py-spy {what} (exit status {rc}{detail})", attached
    return None, attached


def _read_output(path: str, facts: dict[str, Any]) -> str:
    with open(path, "rb") as fh:
        raw = fh.read(MAX_OUTPUT_BYTES + 1)
    if len(raw) > MAX_OUTPUT_BYTES:
        raw = raw[: raw.rfind(b"\n", 0, MAX_OUTPUT_BYTES) + 1]
        facts["output_truncated_at_bytes"] = len(raw)
    return raw.decode("utf-8", "replace")


def _exit_text(rc: int | None) -> str:
    if rc is None:
        return "still running"
    return f"killed by {_signal_name(-rc)}" if rc < 0 else f"exit status {rc}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- the raw format -----------------------------------------------------------

_THREAD_ROOT = re.compile(r"thread \((0x[0-9a-fA-F]+|\d+)\)")
_FRAME = re.compile(r"(?P<func>.+?) \((?P<file>.+):(?P<line>\d+)\)")


def parse_raw(
    text: str,
    names: ModuleNames,
    threads: ThreadTable,
    exclude: frozenset[int],
    period: int,
    measured: dict[int, int] | None = None,
) -> tuple[Stacks, dict[str, int]]:
    """py-spy's raw (collapsed) output as stacks, innermost first, by thread label.

    Each sample stands for `period` nanoseconds of CPU (py-spy only samples
    threads that are running), unless `measured` (native id -> CPU ns the
    thread used over the window) knows the thread: then its samples share
    what it measured, in proportion to their counts.

    Threads whose ident is in `exclude` (or whose native id belongs to such
    an ident) are dropped and counted. Lines that do not parse are counted,
    never fatal.
    """
    exclude_native = threads.natives(exclude)
    counted: dict[tuple[int | None, str, tuple[Frame, ...]], int] = {}
    per_native: dict[int, int] = {}
    frames: dict[str, Frame] = {}
    samples = excluded = unparsed = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        body, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            unparsed += 1
            continue
        thread, native, frames_text, skip = _split_thread(body, threads, exclude, exclude_native)
        if skip:
            excluded += count
            continue
        stack: list[Frame] = []
        for token in frames_text.split(";") if frames_text else ():
            frame = frames.get(token)
            if frame is None:
                frame = frames[token] = _parse_frame(token, names)
            stack.append(frame)
        stack.reverse()
        key = (native, thread, tuple(stack))
        counted[key] = counted.get(key, 0) + count
        if native is not None:
            per_native[native] = per_native.get(native, 0) + count
        samples += count
    stacks: Stacks = {}
    scaled = 0
    for (native, thread, frames_key), count in counted.items():
        cpu = count * period
        if measured is not None and native is not None and native in measured:
            cpu = measured[native] * count // per_native[native]
            scaled += count
        entry = stacks.setdefault((thread, frames_key), [0, 0])
        entry[0] += count
        entry[1] += cpu
    counts = {"samples": samples, "samples_excluded": excluded, "unparsed_lines": unparsed}
    if measured is not None:
        counts["samples_scaled_to_measured_cpu"] = scaled
    return stacks, counts


def _split_thread(
    body: str, threads: ThreadTable, exclude: frozenset[int], exclude_native: set[int]
) -> tuple[str, int | None, str, bool]:
    """(thread label, its native id if known, the frames part, whether it is excluded)."""
    match = _THREAD_ROOT.match(body)
    if match is None:
        return "<unknown>", None, body, False
    raw_id = match.group(1)
    rest = body[match.end() :]
    native: int | None = None
    if raw_id.startswith("0x"):
        ident = int(raw_id, 16)
        known = threads.by_ident.get(ident)
        native = threads.native_of.get(ident)
        skip = ident in exclude
    else:
        native = int(raw_id)
        known = threads.by_native.get(native)
        skip = native in exclude_native
    if rest.startswith(": "):
        rest = rest[2:]
        # A thread name may itself contain ';': cut after the name we know.
        if known is not None and (rest == known or rest.startswith(known + ";")):
            pyspy_name, rest = known, rest[len(known) + 1 :]
        else:
            pyspy_name, _, rest = rest.partition(";")
    else:
        pyspy_name, rest = None, rest.removeprefix(";")
    name = known if known is not None else pyspy_name
    label = label_name(name) if name is not None else unknown_thread(raw_id)
    return label, native, rest, skip


def _parse_frame(token: str, names: ModuleNames) -> Frame:
    match = _FRAME.fullmatch(token)
    if match is None:
        return Frame(token, "", 0)
    filename = match.group("file")
    return Frame(names.qualify(match.group("func"), filename), filename, int(match.group("line")))

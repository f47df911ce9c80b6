"""A CPU profile of this process for a few seconds, from the capture worker thread.

Engines, cheapest first:

* `pyspy`: the py-spy executable as a child process reading our memory
  without pausing us (0-3 % slowdown); needs py-spy installed
  (`pip install holmespy[profile]`) and permission to trace us.
* `sampler`: a thread of ours reading `sys._current_frames()`, each stack
  weighted by the CPU time its thread used (~1 % at 100 Hz, fewer ticks
  than asked when busy threads hold the GIL).
* `yappi`: deterministic, exact per-function times, but the host runs 8-18x
  slower meanwhile: only when asked for by name.

`auto` (the default) runs py-spy when it is installed and, from the same
moment, the sampler as a fallback: py-spy's profile wins when py-spy finishes
properly; when it cannot attach (a worker that changed user is not
dumpable), is slow (thousands of threads) or is killed, the sampler's
profile of the whole window is there. `why` says which and why.

Whichever engine took it, a profile's CPU total is the CPU time the
profiled threads' own clocks say they used (`cpu_seconds` and
`cpu_seconds_measured` in the facts). When the process starts to go
(`cut`), the window ends at once and the samples taken so far are the
profile.

`capture_cpu` runs inside a production host: it never raises (failures are
described in `CpuCapture.why`), returns by a hard deadline (`seconds` +
`margin`), leaves no child process or thread behind and restores what it
changes (Yama's ptracer, yappi's settings).
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holmespy.formats.profile import Profile
from holmespy.profilers.cpu._common import INSTALL_HINT, EngineFailed
from holmespy.profilers.cpu._pyspy import find_pyspy, record
from holmespy.profilers.cpu._sampler import SamplerRun, sample_cpu
from holmespy.profilers.cpu._yappi import profile_yappi
from holmespy.teardown import Cut

__all__ = [
    "DEADLINE_MARGIN",
    "ENGINES",
    "CpuCapture",
    "capture_cpu",
]

ENGINES = ("auto", "pyspy", "sampler", "yappi")

DEADLINE_MARGIN = 10.0
"""Seconds past the window before a capture gives up (py-spy startup, parsing, a stuck child)."""

MAX_RATE = 1000
"""py-spy at 1000 Hz already slows the host by 30-55 % (REFERENCE)."""

AUTO_PYSPY_GRACE = 2.0
"""Under `auto`, seconds py-spy may run past the window before the sampler's profile is used:
the sampler already covered the window, so waiting longer only delays the event."""


@dataclass(frozen=True)
class CpuCapture:
    profile: Profile | None
    """None only if every engine tried failed."""
    engine: str
    """The engine that produced the profile: "pyspy", "sampler", "yappi", or "none"."""
    why: str
    """Why this engine, and what failed on the way, for the user."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Rate asked/achieved, samples, seconds, errors, py-spy's exit and stderr..."""


def capture_cpu(
    seconds: float,
    *,
    engine: str = "auto",
    exclude_threads: Collection[int] = (),
    pyspy: str | None = None,
    rate: int = 100,
    margin: float = DEADLINE_MARGIN,
    cut: Cut | None = None,
    workdir: Path | None = None,
) -> CpuCapture:
    """Profile this process's CPU use for `seconds`; never raises.

    `exclude_threads` are thread idents (holmespy's own) left out of the
    profile. `pyspy` is the py-spy executable (default: next to
    `sys.executable`, else on PATH). `rate` is in samples per second. The
    call returns within `seconds + margin` whatever happens, and soon after
    `cut` is set. `workdir` is the event's temp folder (py-spy writes there).
    """
    began = time.monotonic()
    facts: dict[str, Any] = {"engine_asked": engine, "seconds_asked": seconds, "rate_asked": rate}
    try:
        capture = _capture(
            seconds, engine, frozenset(exclude_threads), pyspy, rate, margin, facts, cut, workdir
        )
    except Exception as exc:  # a bug of ours must not reach the host
        facts["error"] = traceback.format_exc(limit=8)[-2000:]
        capture = CpuCapture(
            None, "none", f"{engine}: the CPU capture failed: {type(exc).__name__}: {exc}", facts
        )
    capture.facts["wall_seconds"] = round(time.monotonic() - began, 3)
    return capture


def _capture(
    seconds: float,
    engine: str,
    exclude: frozenset[int],
    pyspy: str | None,
    rate: int,
    margin: float,
    facts: dict[str, Any],
    cut: Cut | None,
    workdir: Path | None,
) -> CpuCapture:
    began = time.monotonic()
    if engine not in ENGINES:
        return _none(f"{engine!r} is not an engine ({', '.join(ENGINES)})", facts)
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        return _none(f"{engine}: seconds must be a positive number, not {seconds!r}", facts)
    used_rate = min(max(int(rate), 1), MAX_RATE)
    if used_rate != rate:
        facts["rate_used"] = used_rate
    if not math.isfinite(margin) or margin < 0:
        margin = DEADLINE_MARGIN
    deadline = began + seconds + margin
    facts["excluded_threads"] = len(exclude)

    if engine == "sampler":
        return _sampler(
            seconds, used_rate, exclude, deadline, "sampler: asked for by name", facts, cut
        )
    if engine == "yappi":
        try:
            profile, yappi_facts = profile_yappi(seconds, exclude, deadline)
        except EngineFailed as exc:
            return _none(f"yappi: {exc}", facts)
        facts.update(yappi_facts)
        why = "yappi: asked for by name (deterministic, CPU clock; slows the host while it runs)"
        return CpuCapture(profile, "yappi", why, facts)

    path, looked = find_pyspy(pyspy)
    if path is None:
        missing = f"py-spy is not installed (looked at {', '.join(looked)}); {INSTALL_HINT} adds it"
        if engine == "pyspy":
            return _none(f"pyspy: {missing}", facts)
        why = f"auto: {missing}; used the in-process sampler"
        return _sampler(seconds, used_rate, exclude, deadline, why, facts, cut)

    backup = None
    pyspy_deadline = deadline
    if engine == "auto":
        backup = SamplerRun(seconds, used_rate, exclude, deadline, cut).start()
        pyspy_deadline = min(deadline, began + seconds + AUTO_PYSPY_GRACE)
    result = record(
        path,
        seconds,
        used_rate,
        exclude | {backup.ident} if backup is not None else exclude,
        pyspy_deadline,
        cut=cut,
        folder=workdir,
    )
    if result.profile is not None:
        if backup is not None:
            backup.close()
            facts["fallback"] = "the in-process sampler ran alongside; py-spy's profile was used"
        facts.update(result.facts)
        why = f"{engine}: py-spy attached to pid {os.getpid()}"
        return CpuCapture(result.profile, "pyspy", why, facts)
    facts["pyspy_attempt"] = result.facts
    failure = f"{result.failure}{_not_dumpable_hint(result)}"
    if backup is None:
        return _none(f"pyspy: {failure}", facts)
    why = f"auto: {failure}; used the in-process sampler that ran alongside from the start"
    try:
        profile, sampler_facts = backup.result()
    except EngineFailed as exc:
        return _none(f"{why}; then {exc}", facts)
    facts.update(sampler_facts)
    return CpuCapture(profile, "sampler", why, facts)


def _not_dumpable_hint(result: Any) -> str:
    """Why py-spy may not read us: a process that changed user is not dumpable (Linux)."""
    if getattr(result, "attached", True):
        return ""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            status = fh.read()
    except OSError:
        return ""
    uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
    if len(set(uids)) > 1:
        return " (this process changed user: it is not dumpable, so py-spy may not read it)"
    return ""


def _sampler(
    seconds: float,
    rate: int,
    exclude: frozenset[int],
    deadline: float,
    why: str,
    facts: dict[str, Any],
    cut: Cut | None = None,
) -> CpuCapture:
    try:
        profile, sampler_facts = sample_cpu(seconds, rate, exclude, deadline, cut)
    except EngineFailed as exc:
        return _none(f"{why}; then {exc}", facts)
    facts.update(sampler_facts)
    return CpuCapture(profile, "sampler", why, facts)


def _none(why: str, facts: dict[str, Any]) -> CpuCapture:
    return CpuCapture(None, "none", why, facts)

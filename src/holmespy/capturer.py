"""Taking an event's captures and publishing its bundle, on two lanes.

Captures come in two kinds. *Instant* ones (thread stacks, the task dump)
describe the moment the rule fired and take milliseconds; *windows* (a CPU
profile, a heap tracing window, the type census after it) take seconds. Each
kind has its own thread (a lane), so a thread dump never waits behind
another event's 5 s CPU window: an event's instant captures run first on the
instant lane, then the event moves to the window lane for the rest, and is
published when its last capture is done. An event without windows is
published by the instant lane at once.

The task dump is instant but may wait: its probe gives each event loop up
to half a second to run a callback, and a blocked loop (what a CPU event is
often about) takes all of it. When a window follows, the event moves to the
window lane *before* the task dump, which then runs on the instant lane
beside the window: the wait falls inside the window instead of before it,
and the window lane publishes once both are done.

While an event is being captured its temp folder holds `event.partial.json`,
so a process killed mid-capture still leaves an event the next start can
salvage. When the process goes (`cut`), a running capture stops at once and
returns what it has, a capture not started yet is skipped, and the event is
published marked `"partial": true` with the reason.

Each capture's facts in `event.json` say when it started and ended, in
seconds after the rule fired (`started_after`, `ended_after`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from holmespy.bundle import BundleWriter, describe_os_error
from holmespy.config import Config
from holmespy.profilers import CAPTURES, LAST, PAUSES_PROCESS, Capture, CaptureContext
from holmespy.teardown import Cut
from holmespy.worker import CaptureWorker

if TYPE_CHECKING:
    from holmespy.recorder import Recording
    from holmespy.watchdog import Watchdog

log = logging.getLogger("holmespy")

INSTANT = frozenset({"threads", "tasks"})
"""Captures that describe the moment of the trigger and take milliseconds."""

BESIDE_WINDOW = frozenset({"tasks"})
"""Instant captures whose time is mostly waiting: they run beside the event's window."""

BESIDE_GRACE = 30.0
"""Seconds past its window the window lane waits for the capture beside it to end."""


class CaptureHost(Protocol):
    """What the capturer needs from the watcher."""

    @property
    def config(self) -> Config: ...

    def dump_path(self) -> Path: ...

    def exclude_threads(self) -> frozenset[int]: ...

    def admit(self, rule: str, event_id: str) -> bool:
        """False when the event must not be captured now (the CPU-max guard)."""
        ...

    def internal_error(self, where: str, exc: BaseException) -> None: ...

    def published(self, path: Path) -> None: ...

    def watchdog(self) -> Watchdog | None:
        """The loop watchdog, for a loop event's stalls (None: the loop rule is off)."""
        ...

    def pausing(self) -> AbstractContextManager[None]:
        """Entered around a capture that pauses the whole process (its stalls are not news)."""
        ...


@dataclass
class EventJob:
    id: str
    rule: str
    event: dict[str, Any]
    """event.json as the watcher built it when the rule fired."""
    fired: float
    """time.monotonic() when the rule fired."""
    bundle: BundleWriter | None = None
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    beside_done: threading.Event = field(default_factory=threading.Event)
    """Set when the instant captures taken beside the window have ended."""
    beside_error: OSError | None = None
    recording: Recording | None = None
    """The flight recorder's ring when the rule fired (None: the recorder is off)."""

    def captures(self, instant: bool) -> list[tuple[str, Capture]]:
        listed = CAPTURES[self.rule]
        windows = any(n not in INSTANT and n not in LAST for n, _ in listed)

        def is_instant(name: str) -> bool:
            return name in INSTANT or (name in LAST and not windows)

        return [(n, c) for n, c in listed if is_instant(n) == instant]

    def document(self, cut: Cut) -> dict[str, Any]:
        """event.json as it stands: the captures so far, and whether the event is partial."""
        doc = {**self.event, "captures": dict(self.facts)}
        stopped = [n for n, f in self.facts.items() if f.get("cut_short")]
        skipped = [n for n, f in self.facts.items() if f.get("skipped")]
        if stopped or (skipped and cut.is_set()):
            parts = [cut.reason or "the process was exiting"]
            if stopped:
                parts.append("cut short: " + ", ".join(stopped))
            if skipped:
                parts.append("not taken: " + ", ".join(skipped))
            doc["partial"] = True
            doc["partial_reason"] = "; ".join(parts)
        return doc


class Capturer:
    def __init__(self, host: CaptureHost) -> None:
        self.host = host
        self.cut = Cut()
        self.instant = CaptureWorker("holmespy-capture", maxsize=4)
        self.window = CaptureWorker("holmespy-window", maxsize=2)
        self.memory: dict[str, Any] = {}
        """What captures keep between events of this process (the last type census)."""
        self.events = 0
        self.partial = 0
        self.failures = 0
        self.windows_dropped = 0
        self.last_event: str | None = None
        self.last_error: str | None = None

    @property
    def idents(self) -> tuple[int | None, int | None]:
        return self.instant.ident, self.window.ident

    @property
    def dropped(self) -> int:
        return self.instant.dropped + self.windows_dropped

    def submit(self, job: EventJob) -> bool:
        """Queue `job`'s instant captures; False if that lane is full (the event is dropped)."""
        return self.instant.submit(lambda: self._run_instant(job))

    def stop(self, timeout: float) -> bool:
        """Let both lanes finish what they hold within `timeout`; True if they did."""
        deadline = time.monotonic() + timeout
        first = self.instant.stop(timeout)
        second = self.window.stop(max(0.0, deadline - time.monotonic()))
        return first and second

    # -- the lanes --

    def _run_instant(self, job: EventJob) -> None:
        if not self.cut.is_set() and not self.host.admit(job.rule, job.id):
            return
        beside = self._instant(job)
        if beside is not None:  # the window lane has the event: these run beside its window
            self._take_beside(job, beside)

    def _instant(self, job: EventJob) -> list[tuple[str, Capture]] | None:
        """The instant captures; those left to take beside the window, if it was handed over."""
        try:
            job.bundle = BundleWriter(self.host.dump_path(), job.event["service"], job.id).open()
            job.bundle.checkpoint(job.document(self.cut))
            windows = job.captures(instant=False)
            instants = job.captures(instant=True)
            beside = [c for c in instants if windows and c[0] in BESIDE_WINDOW]
            self._take(job, [c for c in instants if c not in beside])
            if windows and not self.cut.is_set():
                job.bundle.checkpoint(job.document(self.cut))
                if self.window.submit(lambda: self._run_window(job, windows)):
                    return beside
                self.windows_dropped += 1
                reason = "another event's capture window was already running and queued"
                for name, _ in windows:
                    job.facts[name] = {"skipped": reason, "error": f"not taken: {reason}"}
                log.warning("holmespy %s event %s: %s", job.rule, job.id, reason)
                self._take(job, beside)
            else:
                self._take(job, beside)  # all skipped: the process is going
                self._take(job, windows)
            self._publish(job)
        except OSError as exc:
            self._lost(job, exc)
        except BaseException:
            self._discard(job)
            raise
        return None

    def _take_beside(self, job: EventJob, captures: list[tuple[str, Capture]]) -> None:
        """Take `captures` while the window lane has `job`; it publishes (or discards) it."""
        try:
            self._take(job, captures)
        except OSError as exc:
            job.beside_error = exc  # the window lane loses the event, as for its own
        finally:
            job.beside_done.set()

    def _run_window(self, job: EventJob, windows: list[tuple[str, Capture]]) -> None:
        try:
            self._take(job, windows)
            self._wait_beside(job)
            self._publish(job)
        except OSError as exc:
            self._lost(job, exc)
        except BaseException:
            self._discard(job)
            raise

    def _wait_beside(self, job: EventJob) -> None:
        """Wait for the captures beside the window (bounded: a task dump waits 0.5 s at most)."""
        if job.beside_done.wait(BESIDE_GRACE):
            if job.beside_error is not None:
                raise job.beside_error
            return
        reason = f"still running {BESIDE_GRACE:g} s after the window ended"
        for name in BESIDE_WINDOW & set(n for n, _ in CAPTURES[job.rule]):
            if name not in job.facts:
                job.facts[name] = {"error": f"not in this event: {reason}"}
        self.host.internal_error("capture beside the window", TimeoutError(reason))

    def _take(self, job: EventJob, captures: list[tuple[str, Capture]]) -> None:
        assert job.bundle is not None
        config = self.host.config
        for name, capture in captures:
            started = time.monotonic()
            if self.cut.is_set():
                job.facts[name] = {"skipped": f"not started: {self.cut.reason}"}
                continue
            ctx = CaptureContext(
                directory=job.bundle.directory,
                rule=job.rule,
                config=config,
                exclude_threads=self.host.exclude_threads(),
                memory=self.memory,
                cut=self.cut,
                recording=job.recording,
                watchdog=self.host.watchdog(),
                others_waiting=lambda: self.window.pending() > 0,
            )
            pausing = self.host.pausing() if name in PAUSES_PROCESS else contextlib.nullcontext()
            try:
                with pausing:
                    facts = capture(ctx)
            except OSError:
                raise  # a full or read-only disk fails the whole event
            except Exception as exc:
                facts = {"error": f"{type(exc).__name__}: {exc}"}
                self.host.internal_error(f"{name} capture", exc)
            ended = time.monotonic()
            if started < self.cut.at <= ended:
                facts["cut_short"] = True
            facts["started_after"] = round(started - job.fired, 3)
            facts["ended_after"] = round(ended - job.fired, 3)
            facts["seconds"] = round(ended - started, 6)
            job.facts[name] = facts

    def _publish(self, job: EventJob) -> None:
        assert job.bundle is not None
        document = job.document(self.cut)
        path = job.bundle.publish(document)
        self.events += 1
        if document.get("partial"):
            self.partial += 1
        self.last_event = str(path)
        partial = f" (partial: {document['partial_reason']})" if document.get("partial") else ""
        log.warning("holmespy wrote event %s%s", path, partial)
        self.host.published(path)

    def _lost(self, job: EventJob, exc: OSError) -> None:
        self._discard(job)
        self.failures += 1
        message = describe_os_error(exc, self.host.dump_path())
        self.last_error = message
        log.error("holmespy lost event %s: %s", job.id, message)

    def _discard(self, job: EventJob) -> None:
        if job.bundle is not None:
            job.bundle.discard()

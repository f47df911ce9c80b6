"""The watcher: samples every interval, asks the rules, hands events to the capturer.

Its thread never waits for a capture and never lets an exception out: what
goes wrong is logged on the `holmespy` logger and counted in `status()`.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from holmespy._log import DEBUG, INFO, log
from holmespy.config import RULE_NAMES, Config
from holmespy.gcwatch import GCWatch
from holmespy.lazyimport import importing
from holmespy.limits import Limits, detect_limits
from holmespy.procstat import ProcStatReader
from holmespy.registry import METRICS, RULES
from holmespy.rules import FIRE, LIMITED, Decision, RuleState, Verdict
from holmespy.sampling import Sample, Sampler
from holmespy.stackwatch import StackWatch

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    import logging
    from contextlib import AbstractContextManager
    from pathlib import Path
    from typing import Any

    from holmespy.capturer import Capturer
    from holmespy.statusview import Status
    from holmespy.storage.uploader import Uploader
    from holmespy.watchdog import Watchdog

# The capture lanes (with the profilers and the bundle writer), salvage and
# storage are imported when first needed: the first event, one interval after
# start, or HOLMES_STORAGE at start. A tick needs none of them. Each import on
# our threads is made `with importing:` (a fork waits for it: holmespy.lazyimport).

UNITS: dict[str, str] = {metric.name: metric.unit for metric in METRICS}
SALVAGE_RETRY = 2.0
"""Seconds before a leftover whose py-spy is still writing is looked at again."""
ERROR_LOG_EVERY = 60.0
"""Seconds between two log lines about the same recurring internal error."""
_ACTED_ON = frozenset({FIRE, LIMITED})
"""Verdicts the watcher does something about (an event, a log line) besides a debug line."""


class Watcher:
    """A running holmespy instance; `holmespy.start()` returns it."""

    def __init__(self, config: Config, *, proc_root: str = "/proc", root: str = "/") -> None:
        self.config = config
        self.pid = os.getpid()
        self._proc_root, self._root = proc_root, root
        self._wake = threading.Event()
        self._stopping = False
        self._started = False
        self.limits = self._detect_limits(config)
        self.gc_watch = GCWatch(f"{proc_root}/{self.pid}/statm")
        stat = ProcStatReader(f"{proc_root}/{self.pid}/stat")
        # The flight recorder and the loop watchdog: one always-on sampling thread.
        self.stacks = StackWatch(config, on_error=self.internal_error)
        self.sampler = Sampler(
            self.limits, stat=stat, gc_watch=self.gc_watch, loop_stall=self.stacks.loop_stall_ms
        )
        self.states: dict[str, RuleState] = {}
        self._active: tuple[tuple[RuleState, str], ...] = ()  # (state, Sample field), by `_bind`
        self._bound: Config | None = None
        self._capturer: Capturer | None = None
        self._uploader: Uploader | None = None  # ships to HOLMES_STORAGE, applies HOLMES_SPOOL_MAX
        self._uploader_config = config
        self._made_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="holmespy-watcher", daemon=True)
        self.ticks = 0
        self.errors = 0
        self.salvaged = 0
        self.stale_removed = 0
        self.last_error: str | None = None
        self.last_sample: Sample | None = None
        self._salvage_again_at: float | None = None
        self._error_logged_at: dict[str, float] = {}
        self._limit_logged: set[str] = set()

    # -- lifecycle --

    def start(self) -> Watcher:
        if self._started:
            return self
        self._started = True
        self._apply_log_level()
        if self.config.gcheap is not None:
            self.gc_watch.install()
        if self.config.storage is not None:  # ship what earlier runs left, from now on
            self.uploader.start()
        self.stacks.start()
        self._thread.start()
        announce(
            f"holmespy watching pid {self.pid} as service {self.config.service!r} every"
            f" {self.config.interval:g}s; dumps in {self.config.dump_folder()}",
            self.config.log_level,
        )
        return self

    @property
    def active(self) -> bool:
        """Started and not stopped (true in a forked child too, where its threads are gone)."""
        return self._started and not self._stopping

    @property
    def capturer(self) -> Capturer:
        """The capture lanes, made at the first event (their threads start with it)."""
        capturer = self._capturer
        if capturer is None:
            with importing:
                from holmespy.capturer import Capturer

            with self._made_lock:
                if self._capturer is None:
                    self._capturer = Capturer(self)
                capturer = self._capturer
        return capturer

    @property
    def uploader(self) -> Uploader:
        """The uploader, made on first use: storage is imported only when something is stored."""
        uploader = self._uploader
        if uploader is None:
            with importing:
                from holmespy.storage.uploader import Uploader

            with self._made_lock:
                if self._uploader is None:
                    self._uploader = Uploader(self._uploader_config)
                uploader = self._uploader
        return uploader

    @property
    def made_uploader(self) -> Uploader | None:
        """The uploader if it was made (never makes it)."""
        return self._uploader

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def stop(
        self,
        timeout: float = 2.0,
        reason: str = "holmespy.stop() was called",
        *,
        exiting: bool = False,
    ) -> None:
        """Stop sampling; a capture in progress stops at once and is published as partial.

        Everything holmespy does here is over within `timeout` seconds: what
        the lanes have not published by then is lost (its temp folder is
        salvaged by the next start), what the uploader has not shipped waits
        in the spool. `exiting`: the process is ending; the sampling thread,
        which holds nothing worth saving, is told to stop but not waited for.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._stopping = True
        capturer = self._capturer
        if capturer is not None:
            capturer.cut.cut(reason, timeout)
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(_left(deadline))
        capturer = self._capturer  # (made meanwhile by a last tick's event, maybe)
        if capturer is not None:
            capturer.cut.cut(reason, timeout)
            capturer.stop(_left(deadline))
        # Its sleeps between ticks cannot be cut short (see stackwatch._Bell): joined, it
        # would hold an exiting host back for up to one tick period.
        self.stacks.stop(0.0 if exiting else _left(deadline))
        if self._uploader is not None:
            self._uploader.stop(_left(deadline))
        self.gc_watch.uninstall()
        self.sampler.close()

    def abandon_after_fork(self) -> None:
        """In a forked child: drop what belongs to the parent without touching its threads."""
        self._stopping = True
        if self._uploader is not None:
            self._uploader.abandon_after_fork()
        self.stacks.abandon_after_fork()
        self.gc_watch.uninstall()
        self.sampler.close()

    def reconfigure(self, config: Config | None = None, **changes: Any) -> Config:
        """Swap in a new configuration (like holmes' `Set`); rings and cooldowns carry over."""
        new = (config or self.config).replace(**changes) if changes else (config or self.config)
        old, self.config = self.config, new
        if (new.cpu_cores, new.mem_limit) != (old.cpu_cores, old.mem_limit):
            self.limits = self.sampler.limits = self._detect_limits(new)
        if new.gcheap is not None and self._started and not self._stopping:
            self.gc_watch.install()
        elif new.gcheap is None:
            self.gc_watch.uninstall()
        if not self._stopping:
            self.stacks.configure(new)
        self._apply_log_level()
        self._wake.set()  # a new interval applies now, not after the old one
        log.info("holmespy reconfigured")
        return new

    def status(self) -> Status:
        with importing:  # a dataclass, made while no thread of ours imports `typing`
            from holmespy.statusview import Status

        skipped = {
            name: {verdict.value: count for verdict, count in state.skipped.items()}
            for name, state in self.states.items()
            if state.skipped
        }
        capturer = self._capturer
        return Status(
            enabled=True,
            running=self.running,
            pid=self.pid,
            ticks=self.ticks,
            events=capturer.events if capturer else 0,
            last_event=capturer.last_event if capturer else None,
            dropped=capturer.dropped if capturer else 0,
            partial=capturer.partial if capturer else 0,
            salvaged=self.salvaged,
            stale_removed=self.stale_removed,
            capture_failures=capturer.failures if capturer else 0,
            errors=self.errors + self.gc_watch.failures,
            last_error=(capturer.last_error if capturer else None) or self.last_error,
            skipped=skipped,
            last_sample=self.last_sample.as_dict() if self.last_sample else None,
            limits=self.limits.as_dict(),
            task_stride=self.sampler.task_stride,
            storage=self._storage_status(),
            stacks=self.stacks.status(),
        )

    def _storage_status(self) -> dict[str, int | str | None]:
        try:
            return self.uploader.status()
        except Exception as exc:  # status() never raises
            return {"error": f"{type(exc).__name__}: {exc}"}

    # -- the watcher thread --

    def _run(self) -> None:
        next_at = time.monotonic()
        rounds = 0
        while not self._stopping:
            try:
                self.tick()
            except Exception as exc:
                self.internal_error("tick", exc)
            rounds += 1
            if rounds == 2:
                # One interval in, not at start: a short process ends without paying for
                # the bundle writer and salvage (an event's own write checks the folder).
                try:
                    self._check_dump_root()
                except Exception as exc:
                    self.internal_error("dump folder check", exc)
                self._salvage()
            if self._salvage_again_at is not None and time.monotonic() >= self._salvage_again_at:
                self._salvage()
            interval = self.config.interval
            now = time.monotonic()
            next_at += interval
            if next_at < now:  # fell behind (suspended, or a slow tick): don't burst
                next_at = now + interval
            self._wake.wait(next_at - now)
            if self._wake.is_set():
                self._wake.clear()
                next_at = time.monotonic()

    def _check_dump_root(self) -> None:
        """Say now, not at the first event hours later, that the dump folder will be refused."""
        with importing:
            from holmespy.bundle import describe_os_error, open_dump_root

        root = self.config.dump_root()
        try:
            fd = open_dump_root(root, create=False)  # a missing one is made by the first event
        except OSError as exc:
            message = describe_os_error(exc, root)
            log.error("holmespy cannot write dumps: %s", message)
            self.last_error = message
            return
        if fd is not None:
            os.close(fd)

    def tick(self) -> list[tuple[str, Decision]]:
        """Sample once and run every enabled rule; returns the decisions taken."""
        sample = self.sampler.sample()
        self.last_sample = sample
        self.ticks += 1
        config = self.config
        if config is not self._bound:
            self._bind(config)
        mono, wall, cpu, cpu_max = time.monotonic(), sample.time, sample.cpu, config.cpu_max
        decisions: list[tuple[str, Decision]] = []
        # What a tick costs is mostly this loop (benchmarks/tick_cost.py): a
        # decision is acted on only when it fires, is limited, or debug logs it.
        debug = log.isEnabledFor(DEBUG)
        for state, field in self._active:
            value = getattr(sample, field)
            if value is None:  # tasks not counted this tick
                continue
            if field == "gcheap":  # one value per full GC since the previous tick
                for each in value:
                    decision = state.step(each, mono, wall, cpu, cpu_max)
                    decisions.append((state.name, decision))
                    if decision.verdict in _ACTED_ON or debug:
                        self._act(state.name, state, decision, sample)
                continue
            decision = state.step(float(value), mono, wall, cpu, cpu_max)
            decisions.append((state.name, decision))
            if decision.verdict in _ACTED_ON or debug:
                self._act(state.name, state, decision, sample)
        return decisions

    def _bind(self, config: Config) -> None:
        """The enabled rules' states, in order, for `config` (done again when it changes)."""
        active: list[tuple[RuleState, str]] = []
        for name in RULE_NAMES:
            rule = config.rule(name)
            if rule is None:
                self.states.pop(name, None)
                continue
            state = self.states.get(name)
            if state is None:
                state = self.states[name] = RuleState(name, rule)
            state.rule = rule  # its ring and cooldowns carry over
            active.append((state, RULES[name].sample_field))
        self._active = tuple(active)
        self._bound = config

    def _act(self, name: str, state: RuleState, decision: Decision, sample: Sample) -> None:
        if decision.verdict is Verdict.LIMITED and name not in self._limit_logged:
            self._limit_logged.add(name)
            log.warning(
                "holmespy %s rule: %s; further skips are counted in status()", name, decision.reason
            )
        if not decision.fire:
            if log.isEnabledFor(DEBUG):  # the reason is built only when read
                log.debug("holmespy %s rule: %s", name, decision.reason)
            return
        with importing:
            from holmespy.bundle import new_event_id
            from holmespy.capturer import EventJob

        fired = time.monotonic()
        event_id = new_event_id(name)
        event = self._event(event_id, name, state, decision, sample)
        log.warning(
            "holmespy %s rule fired: %s; capturing event %s", name, decision.reason, event_id
        )
        # The recorder's window as of now: it keeps moving while the capture waits.
        recording = self.stacks.recording(sample.time)
        job = EventJob(event_id, name, event, fired, recording=recording)
        if not self.capturer.submit(job):
            log.warning("holmespy dropped %s event %s: captures are already queued", name, event_id)

    def _event(
        self, event_id: str, name: str, state: RuleState, decision: Decision, sample: Sample
    ) -> dict[str, Any]:
        with importing:
            from holmespy.bundle import host_facts
            from holmespy.event import Event, Point, ProcessLimits, Thresholds, Versions

        rule = state.rule
        facts = host_facts()
        limits = self.limits
        event = Event(
            id=event_id,
            service=self.config.service,
            rule=name,
            host=facts["host"],
            pid=facts["pid"],
            versions=Versions(**facts["versions"]),
            reason=decision.reason,
            value=decision.value,
            unit=UNITS[name],
            thresholds=Thresholds(
                min=rule.min,
                diff=rule.diff,
                abs=rule.abs,
                max=rule.max,
                cooldown=rule.cooldown,
                limit=str(rule.limit),
                average=decision.average,
                cpu_max=self.config.cpu_max,
            ),
            time=_iso(sample.time),
            history=tuple(Point(_iso(t), v) for t, v in state.history),
            sample={
                k: v if isinstance(v, int | float) else None for k, v in sample.as_dict().items()
            },
            limits=ProcessLimits(
                limits.cpu_cores, limits.cpu_source, limits.mem_bytes, limits.mem_source
            ),
        )
        return event.to_json()

    def _salvage(self) -> None:
        """Publish what dead processes left in the dump folder; remove the rest (never raises)."""
        try:
            with importing:
                from holmespy.salvage import remove_dead_pyspy_folders, salvage

            found = salvage(self.dump_path())
            remove_dead_pyspy_folders()
        except Exception as exc:
            self.internal_error("salvage", exc)
            return
        self.salvaged += len(found.published)
        self.stale_removed += len(found.removed)
        # A dead worker's py-spy may still be writing its samples: look again soon.
        self._salvage_again_at = time.monotonic() + SALVAGE_RETRY if found.deferred else None
        for path in found.published:
            log.warning("holmespy salvaged a partial event a dead process left: %s", path)
            self.uploader.notify(path)
        for error in found.errors[:3]:
            log.warning("holmespy could not salvage %s", error)

    # -- what the capturer asks of the watcher (capturer.CaptureHost) --

    def admit(self, rule: str, event_id: str) -> bool:
        config = self.config
        cpu = self.last_sample.cpu if self.last_sample else None
        if config.cpu_max is None or cpu is None or cpu <= config.cpu_max:
            return True
        # The guard again, now: CPU may have risen while this job waited in the queue.
        state = self.states.get(rule)
        if state is not None:
            state.skipped[Verdict.CPU_MAX] = state.skipped.get(Verdict.CPU_MAX, 0) + 1
        log.warning(
            "holmespy skipped %s event %s: CPU %.1f%% > HOLMES_CPU_MAX %g%%",
            rule,
            event_id,
            cpu,
            config.cpu_max,
        )
        return False

    def exclude_threads(self) -> frozenset[int]:
        uploader = self._uploader
        ours = (
            self._thread.ident,
            *self.capturer.idents,
            uploader.ident if uploader else None,
            self.stacks.ident,
        )
        return frozenset(i for i in ours if i is not None)

    def dump_path(self) -> Path:
        """Where events go now: the default follows the user this process is now."""
        return self.config.dump_root()

    def published(self, path: Path) -> None:
        self.uploader.notify(path)

    def watchdog(self) -> Watchdog | None:
        return self.stacks.watchdog

    def pausing(self) -> AbstractContextManager[None]:
        """Around a capture that pauses the whole process: the stalls it causes are ours."""
        return self.stacks.excused()

    # -- helpers --

    def _detect_limits(self, config: Config) -> Limits:
        return detect_limits(
            proc_root=self._proc_root,
            root=self._root,
            cpu_cores=config.cpu_cores,
            mem_limit=config.mem_limit,
        )

    def _apply_log_level(self) -> None:
        log.setLevel(self.config.log_level)

    def internal_error(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{where}: {type(exc).__name__}: {exc}"
        now = time.monotonic()
        last = self._error_logged_at.get(where)
        if last is None or now - last >= ERROR_LOG_EVERY:
            self._error_logged_at[where] = now
            log.error("holmespy %s failed (counted in status().errors)", where, exc_info=exc)


_LEVELS = {"DEBUG": DEBUG, "INFO": INFO, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def announce(line: str, level: str = "INFO") -> None:
    """Say `line` at INFO where the host's log shows it.

    A host that configured logging (the `holmespy` logger or one above it has
    a handler other than holmespy's own NullHandler) gets a log record.
    Otherwise the line goes to stderr, which is what gunicorn, uvicorn and
    supervisors collect. HOLMES_LOG_LEVEL=WARNING (`level`) silences it.
    """
    logger = log.get()
    if logger is None:
        # `logging` was never imported, so no handler exists: stderr, unless silenced.
        if _LEVELS.get(level, INFO) <= INFO:
            _to_stderr(line)
        return
    if not logger.isEnabledFor(INFO):
        return
    if _host_configured_logging(logger):
        logger.info("%s", line)
        return
    _to_stderr(line)


def _to_stderr(line: str) -> None:
    try:
        stream = sys.stderr
        if stream is not None:
            stream.write(line + "\n")
            stream.flush()
    except Exception:  # a closed or broken stderr is the host's business, not a crash of ours
        pass


def _host_configured_logging(start: logging.Logger) -> bool:
    import logging

    logger: logging.Logger | None = start
    while logger is not None:
        if any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _iso(epoch: float) -> str:
    with importing:
        import datetime as dt

    return (
        dt.datetime.fromtimestamp(epoch, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def __getattr__(name: str) -> object:
    # `holmespy.watcher.Status`, where it lived before it got its own module.
    if name == "Status":
        with importing:
            from holmespy.statusview import Status

        return Status
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

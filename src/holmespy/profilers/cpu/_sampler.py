"""The in-process sampler: a CPU profile without any other process.

A daemon thread reads every thread's stack (`sys._current_frames()`) RATE
times a second and weighs each stack by the CPU time its thread used since the
previous tick, read from the thread's own CPU clock. A thread blocked in
sleep, select or a lock uses no CPU and so adds nothing: the result is a CPU
profile, not a wall-clock one.

The sampler needs the GIL for every tick. While CPU-bound threads hold it the
ticks come late and fewer than asked (REFERENCE: ~13 Hz of 100 with 20 busy
threads); the CPU weights stay exact because they come from the kernel's
clocks, only the stacks they are attached to are sampled more coarsely. The
rate achieved is reported in the facts. We do not lower
`sys.setswitchinterval` to help it: that would change how the host's own
threads share the GIL.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from typing import Any

from holmespy.formats.profile import Frame, Profile
from holmespy.naming import ModuleNames, ThreadTable
from holmespy.profilers.cpu._common import EngineFailed, Stacks, add_stacks, sampling_profile
from holmespy.teardown import Cut
from holmespy.threadclocks import (
    ThreadClocks,
    cpu_ns_of,
    task_ids,
    thread_cpu_ns,
    used_between,
)

MAX_DEPTH = 256
"""Frames kept per stack, innermost first; deeper stacks end in a `<truncated>` frame."""

_JOIN_GRACE = 0.5

_FrameKey = tuple[int, int]
_TRUNCATED_KEY: _FrameKey = (0, -1)
_TRUNCATED = Frame("<truncated>", "", 0)


class _Sampler:
    def __init__(self, rate: int, exclude: frozenset[int], end: float, cut: Cut | None) -> None:
        self.rate = rate
        self.exclude = exclude
        self.end = end
        self.cut = cut
        self.stop = threading.Event()
        self.threads = ThreadTable()
        self.clocks = ThreadClocks(self.threads)
        self.names = ModuleNames()
        self.prev_cpu: dict[int, int] = {}
        self.frames: dict[_FrameKey, tuple[types.CodeType | None, Frame]] = {
            _TRUNCATED_KEY: (None, _TRUNCATED)
        }
        self.acc: dict[tuple[int, tuple[_FrameKey, ...]], list[int]] = {}
        self.ticks = 0
        self.started = 0.0
        self.finished = 0.0
        self.own_cpu_ns = 0
        self.measured_ns = 0
        """What the threads' own clocks say they used over the window, read by this thread."""
        self.error: str | None = None

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            self.threads.update()
            # The window's clocks are read here, right before the first tick and after the
            # last: read by the caller's thread they would be late by its wait for the GIL
            # (0.2 s of a 2 s window with four CPU-bound threads on a loaded machine).
            skip = frozenset(self.threads.natives(self.exclude)) | {threading.get_native_id()}
            before = thread_cpu_ns(skip)
            after = self._loop(threading.get_ident(), skip)
            self.measured_ns = sum(used_between(before, after).values())
        except Exception as exc:  # reported in the facts; the host must not see it
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished = time.monotonic()
            self.own_cpu_ns = time.thread_time_ns()

    def _loop(self, me: int, skip_tids: frozenset[int]) -> dict[int, int]:
        """Tick until the end; returns the threads' CPU clocks read right after the last tick."""
        skip = self.exclude | {me}
        interval = 1.0 / self.rate
        next_tick = time.monotonic()
        cut = self.cut
        while not self.stop.is_set() and not (cut is not None and cut.is_set()):
            now = time.monotonic()
            if now >= self.end:
                break
            self._tick(skip)
            self.ticks += 1
            next_tick += interval
            now = time.monotonic()
            if next_tick < now:  # late (GIL): resume the rhythm from now rather than burst
                next_tick = now
            wait = min(next_tick, self.end) - now
            if wait > 0:
                self.stop.wait(wait)
        # Listing the threads lets the others run (it waits for the GIL again, 0.2 s with
        # four CPU-bound threads on a loaded machine): done before the last tick, so the
        # clocks that close the window are read right after the tick's own.
        tids = task_ids(skip_tids)
        if self.ticks:
            # The CPU used since the last tick, up to the end (or the cut), counts too.
            self._tick(skip)
            self.ticks += 1
        return cpu_ns_of(tids)

    def _tick(self, skip: frozenset[int] | set[int]) -> None:
        frames = sys._current_frames()
        prev = self.prev_cpu
        acc = self.acc
        self.clocks.new_round()
        for ident, frame in frames.items():
            if ident in skip:
                continue
            cpu = self.clocks.read(ident)
            if cpu is None:  # the thread ended (or its ident now belongs to a new thread)
                prev.pop(ident, None)
                continue
            last = prev.get(ident)
            prev[ident] = cpu
            if last is None:
                continue  # first sight: only a baseline for the next tick
            used = cpu - last
            if used <= 0:
                continue  # idle since the last tick, or a new thread reusing the ident
            key = (ident, self._stack_key(frame))
            entry = acc.get(key)
            if entry is None:
                acc[key] = [1, used]
            else:
                entry[0] += 1
                entry[1] += used

    def _stack_key(self, frame: types.FrameType | None) -> tuple[_FrameKey, ...]:
        # Keys are (id(code), line): hashing ints is cheap, and the cache keeps
        # each code object alive for the whole capture, so an id cannot be reused.
        keys: list[_FrameKey] = []
        cache = self.frames
        while frame is not None:
            if len(keys) >= MAX_DEPTH:
                keys.append(_TRUNCATED_KEY)
                break
            code = frame.f_code
            key = (id(code), frame.f_lineno or 0)
            if key not in cache:
                cache[key] = (code, self._frame(frame, code, key[1]))
            keys.append(key)
            frame = frame.f_back
        return tuple(keys)

    def _frame(self, frame: types.FrameType, code: types.CodeType, line: int) -> Frame:
        name = self.names.of_frame(frame, code)
        return Frame(name, code.co_filename, line, code.co_firstlineno)

    def stacks(self) -> Stacks:
        self.threads.update()
        out: Stacks = {}
        frames = self.frames
        for (ident, keys), (count, cpu_ns) in list(self.acc.items()):
            thread = self.threads.label_for_ident(ident)
            stack = tuple(frames[k][1] for k in keys)
            entry = out.setdefault((thread, stack), [0, 0])
            entry[0] += count
            entry[1] += cpu_ns
        return out


class SamplerRun:
    """The sampler on its own daemon thread: started, then asked for its profile.

    It stops at the end of its window, at `deadline`, when `stop()` is called
    or when `cut` is set (the process is going), whichever comes first.
    """

    def __init__(
        self,
        seconds: float,
        rate: int,
        exclude: frozenset[int],
        deadline: float,
        cut: Cut | None = None,
    ) -> None:
        self.rate = rate
        self.deadline = deadline
        self.begun = time.monotonic()
        self.sampler = _Sampler(rate, exclude, min(self.begun + seconds, deadline), cut)
        self.time_nanos = time.time_ns()
        self.thread = threading.Thread(
            target=self.sampler.run, name="holmespy-cpu-sampler", daemon=True
        )

    def start(self) -> SamplerRun:
        self.thread.start()
        return self

    @property
    def ident(self) -> int:
        return self.thread.ident or 0

    def stop(self) -> None:
        self.sampler.stop.set()

    def close(self) -> None:
        """Stop and wait for the thread, discarding what it sampled (no thread outlives us)."""
        self.sampler.stop.set()
        self.thread.join(max(_JOIN_GRACE, self.deadline - time.monotonic()))

    def result(self) -> tuple[Profile, dict[str, Any]]:
        """Wait for the window to end (never past the deadline); raises EngineFailed if empty."""
        sampler, thread = self.sampler, self.thread
        thread.join(max(0.0, self.deadline - time.monotonic()))
        if thread.is_alive():
            sampler.stop.set()
            thread.join(_JOIN_GRACE)
        measured = sampler.measured_ns
        ended = sampler.finished or time.monotonic()
        elapsed = max(1e-9, ended - (sampler.started or self.begun))
        if sampler.ticks == 0:
            raise EngineFailed(
                f"the in-process sampler took no sample ({sampler.error or 'no time'})"
            )
        rate = self.rate
        profile = sampling_profile(rate, self.time_nanos)
        stacks = sampler.stacks()
        add_stacks(profile, stacks)
        profile.duration_nanos = int(elapsed * 1e9)
        achieved = sampler.ticks / elapsed
        cpu_by_thread: dict[str, int] = {}
        for (thread_name, _), (_, cpu_ns) in stacks.items():
            cpu_by_thread[thread_name] = cpu_by_thread.get(thread_name, 0) + cpu_ns
        facts: dict[str, Any] = {
            "seconds": round(elapsed, 3),
            "rate_asked": rate,
            "rate_achieved": round(achieved, 1),
            "ticks": sampler.ticks,
            "samples": sum(v[0] for v in stacks.values()),
            "cpu_seconds": round(sum(cpu_by_thread.values()) / 1e9, 3),
            "cpu_seconds_measured": round(measured / 1e9, 3),
            "cpu_seconds_by_thread": {k: round(v / 1e9, 3) for k, v in cpu_by_thread.items()},
            "sampler_cpu_seconds": round(sampler.own_cpu_ns / 1e9, 3),
            "weighting": "per-thread CPU time since the previous tick (idle threads weigh nothing)",
            "excluded_threads": len(sampler.exclude),
        }
        if achieved < 0.9 * rate:
            facts["rate_note"] = (
                "each tick needs the GIL: while CPU-bound threads hold it the sampler ticks less "
                "often than asked; the CPU times stay exact, the stacks are sampled more coarsely"
            )
        if sampler.error:
            facts["error"] = sampler.error
        if thread.is_alive():
            facts["sampler_thread"] = "still running after the deadline; told to stop"
        cut = sampler.cut
        if cut is not None and cut.is_set():
            facts["cut_short"] = f"stopped after {elapsed:.2f} s: {cut.reason}"
        profile.comments.append(
            f"holmespy in-process sampler: {achieved:.1f} of {rate} Hz asked, "
            "stacks weighted by each thread's CPU time"
        )
        return profile, facts


def sample_cpu(
    seconds: float, rate: int, exclude: frozenset[int], deadline: float, cut: Cut | None = None
) -> tuple[Profile, dict[str, Any]]:
    """Sample this process for `seconds` (never past the monotonic `deadline`, nor past `cut`).

    Runs the sampler on its own daemon thread and waits for it; the thread
    has ended when this returns (or is told to stop and ends at its next tick).
    Raises EngineFailed only when not a single tick could be taken.
    """
    return SamplerRun(seconds, rate, exclude, deadline, cut).start().result()

"""The flight recorder's ring: CPU and wall weights, the idle-thread shortcut, a bounded window."""

from __future__ import annotations

import gc
import threading
import time
import types

import pytest

from holmespy.formats.pprof import decode, encode
from holmespy.naming import ThreadTable
from holmespy.recorder import BUDGET, MAX_STRIDE, Recorder, Tick, recorder_profile
from tests.parked import Parked, names, park_elsewhere


class FakeClocks:
    """Thread CPU clocks a test sets by hand (ns), with the names `threading` would give."""

    def __init__(self, *threads: Parked) -> None:
        self.threads = ThreadTable()
        for parked in threads:
            self.threads.by_ident[parked.ident] = parked.thread.name
        self.cpu: dict[int, int] = {}
        self.refreshes = 0

    def new_round(self) -> None:
        pass

    def read(self, ident: int) -> int | None:
        return self.cpu.get(ident)


def recorder(
    clocks: FakeClocks, frames: dict[int, types.FrameType], seconds: float = 30.0, rate: float = 10
) -> Recorder:
    return Recorder(
        seconds,
        rate,
        clocks=clocks,  # type: ignore[arg-type]
        current_frames=lambda: dict(frames),
        wall=lambda: 1_000.0,
    )


def per_thread(ticks: list[Tick]) -> dict[str, tuple[int, int]]:
    """Thread label -> (CPU ns, samples) over the ticks."""
    out: dict[str, tuple[int, int]] = {}
    for tick in ticks:
        for label, _, cpu in tick.samples:
            cpu_sum, n = out.get(label, (0, 0))
            out[label] = (cpu_sum + cpu, n + 1)
    return out


def test_each_sample_weighs_the_cpu_its_thread_used_and_idle_threads_weigh_nothing() -> None:
    with Parked("busy") as busy, Parked("idle") as idle:
        clocks = FakeClocks(busy, idle)
        rec = recorder(clocks, {busy.ident: busy.frame(), idle.ident: idle.frame()})
        for now, busy_cpu in ((0.0, 1_000), (0.1, 6_000_000), (0.2, 13_000_000)):
            clocks.cpu = {busy.ident: busy_cpu, idle.ident: 42}
            rec.tick(now)
    # The first tick is only a baseline for the CPU; every tick is a wall sample.
    assert per_thread(rec.snapshot()) == {"busy": (13_000_000 - 1_000, 3), "idle": (0, 3)}


def test_a_thread_whose_clock_did_not_move_keeps_its_stack_without_a_walk() -> None:
    with Parked("worker") as worker, Parked("elsewhere", park_elsewhere) as other:
        clocks = FakeClocks(worker)
        frames = {worker.ident: worker.frame()}
        rec = recorder(clocks, frames)
        clocks.cpu = {worker.ident: 500}
        rec.tick(0.0)
        # Handed another stack but with the same CPU time: it cannot have run, so the
        # recorder trusts its clock over the frames and does not walk them.
        frames[worker.ident] = other.frame()
        rec.tick(0.1)
        clocks.cpu = {worker.ident: 900}  # it ran: now the stack is read again
        rec.tick(0.2)
    first, same, moved = (tick.samples[0][1] for tick in rec.snapshot())
    assert same is first
    assert "park_here" in names(first.frames)
    assert "park_elsewhere" in names(moved.frames)


def test_the_ring_keeps_its_window_and_forgets_the_stacks_that_left_it() -> None:
    with Parked("worker") as worker, Parked("elsewhere", park_elsewhere) as other:
        clocks = FakeClocks(worker)
        frames = {worker.ident: worker.frame()}
        rec = recorder(clocks, frames, seconds=1.0, rate=10)
        for i in range(30):  # 3 s in the first place
            clocks.cpu = {worker.ident: i * 1000}
            rec.tick(i / 10)
        first_place = rec.status()
        frames[worker.ident] = other.frame()
        for i in range(30, 60):  # then 3 s in the other
            clocks.cpu = {worker.ident: i * 1000}
            rec.tick(i / 10)
    status = rec.status()
    assert first_place["ticks_held"] == status["ticks_held"] == 11  # 1 s at 10 Hz, both ends
    assert status["samples_held"] == 11
    assert status["stacks_interned"] == 1  # the first place's stack has left the window
    held = {f.function for t in rec.snapshot() for _, s, _ in t.samples for f in s.frames}
    assert "tests.parked.park_here" not in held


def test_holmespy_threads_are_left_out() -> None:
    with Parked("app") as app, Parked("holmespy-capture") as ours:
        clocks = FakeClocks(app, ours)
        clocks.cpu = {app.ident: 1, ours.ident: 1}
        rec = recorder(clocks, {app.ident: app.frame(), ours.ident: ours.frame()})
        rec.tick(0.0)
    assert [label for label, _, _ in rec.snapshot()[0].samples] == ["app"]


def test_a_recording_keeps_the_window_of_the_trigger_and_adds_what_came_after() -> None:
    with Parked("worker") as worker:
        clocks = FakeClocks(worker)
        rec = recorder(clocks, {worker.ident: worker.frame()}, seconds=1.0, rate=10)
        for i in range(20):
            clocks.cpu = {worker.ident: i}
            rec.tick(i / 10)
        recording = rec.recording(trigger_wall=1_000.0)
        for i in range(20, 40):  # the capture takes 2 s: longer than the ring's window
            clocks.cpu = {worker.ident: i}
            rec.tick(i / 10)
    ticks = recording.ticks()
    assert [t.mono for t in ticks] == pytest.approx([i / 10 for i in range(9, 40)])


def test_the_profile_has_cpu_and_wall_per_thread_and_second_and_round_trips() -> None:
    with Parked("worker") as worker, Parked("idle") as idle:
        clocks = FakeClocks(worker, idle)
        rec = Recorder(
            30.0,
            10.0,
            clocks=clocks,  # type: ignore[arg-type]
            current_frames=lambda: {worker.ident: worker.frame(), idle.ident: idle.frame()},
            wall=lambda: 1_000.0 + rec.ticks / 10,
        )
        for i in range(30):
            clocks.cpu = {worker.ident: i * 2_000_000, idle.ident: 7}
            rec.tick(i / 10)
    profile = decode(encode(recorder_profile(rec.snapshot(), trigger_wall=1_002.0, rate=10)))
    assert [vt.type for vt in profile.sample_types] == ["samples", "cpu", "wall"]
    assert profile.default_sample_type == "cpu"
    cpu = {s.labels["thread"]: 0 for s in profile.samples}
    for s in profile.samples:
        cpu[s.labels["thread"]] += s.values[1]
    assert cpu == {"worker": 29 * 2_000_000, "idle": 0}
    assert {s.labels["second"] for s in profile.samples} == {"T-2", "T-1", "T+0"}
    walls = sum(s.values[2] for s in profile.samples if s.labels["thread"] == "idle")
    assert walls == pytest.approx(3.0e9, rel=0.01)  # 30 ticks of 0.1 s


def test_ticks_that_cost_more_than_the_budget_are_spread_out_and_come_back() -> None:
    rec = Recorder(30.0, 10.0)
    for _ in range(200):
        rec._pace(int(BUDGET * 4 / 10 * 1e9))  # four times the budget at 10 Hz
    assert rec.stride == 4
    assert rec.status()["effective_hz"] == 2.5
    for _ in range(200):
        rec._pace(int(BUDGET * 1e9 * 1000))
    assert rec.stride == MAX_STRIDE
    for _ in range(200):
        rec._pace(1_000)
    assert rec.stride == 1


def test_real_clocks_tell_a_busy_thread_from_a_parked_one() -> None:
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=burn, name="spinner", daemon=True)
    spinner.start()
    rec = Recorder(30.0, 10.0)
    try:
        with Parked("parked"):
            deadline = time.monotonic() + 30
            while per_thread(rec.snapshot()).get("spinner", (0, 0))[0] < 20_000_000:
                assert time.monotonic() < deadline, "the spinner never showed 20 ms of CPU"
                rec.tick(time.monotonic())
                time.sleep(0.01)
            parked_cpu, parked_samples = per_thread(rec.snapshot())["parked"]
    finally:
        stop.set()
        spinner.join(5)
    assert parked_samples >= 2
    assert parked_cpu < 2_000_000  # waking once to park costs microseconds, not the spin


def test_a_recording_nobody_reads_stops_collecting_once_dropped() -> None:
    # A capture dropped from a full queue never reads its recording: it must not
    # keep collecting ticks for ever.
    with Parked("worker") as worker:
        clocks = FakeClocks(worker)
        rec = recorder(clocks, {worker.ident: worker.frame()})
        rec.tick(0.0)
        recording = rec.recording(trigger_wall=1_000.0)
        rec.tick(0.1)
        assert len(recording.later) == 1
        del recording
        gc.collect()
        rec.tick(0.2)
    assert len(rec._open) == 0

"""Real programs: a handler that blocks its loop with time.sleep, and a CPU burst over before
another rule fires. Each runs once per module in a subprocess; the tests read its bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from holmespy.cli.show import render
from holmespy.formats.pprof import read_pprof
from holmespy.formats.profile import Profile
from tests.conftest import EXAMPLES, ROOT, Bundle, go_pprof_top
from tests.loop_thread import needs_loop_discovery

pytestmark = pytest.mark.timeout(180)


def run(program: Path, dump_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    proc = subprocess.run(
        [sys.executable, str(program)],
        env={**clean, "HOLMES_DUMP_PATH": str(dump_path), "PYTHONPATH": str(ROOT / "src"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=dump_path.parent,
        check=False,
    )
    assert proc.returncode == 0, f"program failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def bundles(dump_path: Path, rule: str) -> list[Bundle]:
    found = [Bundle(p.parent) for p in sorted(dump_path.glob("*/*/*/event.json"))]
    return [b for b in found if b.event["rule"] == rule]


def innermost_share(profile: Profile, function: str, column: str) -> float:
    """Share of the profile's `column` whose innermost frame is `function`."""
    index = [vt.type for vt in profile.sample_types].index(column)
    total = sum(s.values[index] for s in profile.samples)
    hit = sum(
        s.values[index]
        for s in profile.samples
        if s.stack and s.stack[0].function.endswith(f".{function}")
    )
    return hit / total if total else 0.0


# -- a time.sleep in a handler: the loop rule ------------------------------------------


@pytest.fixture(scope="module")
def loop_event(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    dump_path = tmp_path_factory.mktemp("loop-sleep") / "dumps"
    proc = run(EXAMPLES / "loop_sleep.py", dump_path)
    found = bundles(dump_path, "loop")
    assert len(found) == 1, f"expected one loop event:\n{proc.stdout}\n{proc.stderr}"
    return found[0]


@needs_loop_discovery
def test_a_sleeping_handler_fires_the_loop_rule_with_little_cpu(loop_event: Bundle) -> None:
    event = loop_event.event
    assert event["unit"] == "ms"
    assert event["value"] >= event["thresholds"]["min"] == 500
    assert {"loop.txt", "loop.pb.gz", "tasks.txt", "threads.txt", "recorder.pb.gz"} <= {
        f["name"] for f in event["files"]
    }


@needs_loop_discovery
def test_loop_txt_names_the_handler_and_the_blocking_line(loop_event: Bundle) -> None:
    text = loop_event.text("loop.txt")
    assert "stall 1 of 1: 1." in text  # the whole stall: the capture waited for its end
    seen_most = text.split("stack seen most", 1)[1]
    lines = seen_most.splitlines()
    assert "__main__.lookup_customer (" in lines[1]
    assert "time.sleep(STALL_SECONDS)" in lines[2]  # the blocking call, with its source line
    assert "__main__.handle_request (" in lines[3]
    assert 'thread    "MainThread"' in text


@needs_loop_discovery
def test_loop_pb_gz_names_the_handler_in_nearly_every_sample(loop_event: Bundle) -> None:
    profile = read_pprof(loop_event.path / "loop.pb.gz")
    assert innermost_share(profile, "lookup_customer", "samples") >= 0.9
    assert all(
        "handle_request" in {f.function.rsplit(".", 1)[-1] for f in s.stack}
        for s in profile.samples
        if s.stack[0].function.endswith("lookup_customer")
    )


@needs_loop_discovery
def test_go_pprof_reads_the_stall_samples(loop_event: Bundle) -> None:
    rows = go_pprof_top(loop_event.path / "loop.pb.gz")
    assert rows[0].function == "__main__.lookup_customer"
    assert rows[0].flat_percent >= 90


@needs_loop_discovery
def test_show_renders_the_stalls_and_both_profiles(loop_event: Bundle) -> None:
    out = render(loop_event.path, str(loop_event.path))
    part = out.split("── loop.txt: 1 stall, longest 1.", 1)[1]
    assert "thread MainThread" in part.splitlines()[1]
    assert "__main__.lookup_customer (loop_sleep.py:" in part.splitlines()[2]
    assert "── loop.pb.gz: wall" in out
    assert "── recorder.pb.gz:" in out


# -- a CPU burst that ended before another rule fired: the flight recorder ---------------

BURST = """
import os, threading, time
import holmespy

holmespy.start()


def crunch_numbers(cpu_seconds):
    end = time.thread_time() + cpu_seconds
    total = 0
    while time.thread_time() < end:
        for i in range(2000):
            total += i * i


while holmespy.status().ticks < 12:  # the rules' warm-up
    time.sleep(0.05)
crunch_numbers(1.0)
burst_ended = time.time()
time.sleep(2.0)
gate = threading.Event()
leaked = [threading.Thread(target=gate.wait, daemon=True) for _ in range(40)]
for t in leaked:
    t.start()
deadline = time.monotonic() + 60
while holmespy.status().events == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
print(burst_ended)
gate.set()
"""


@pytest.fixture(scope="module")
def burst_event(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, float]:
    folder = tmp_path_factory.mktemp("burst")
    program = folder / "burst.py"
    program.write_text(BURST)
    proc = run(
        program,
        folder / "dumps",
        HOLMES_INTERVAL="200ms",
        HOLMES_CPU="off",  # the burst itself must not be what fires
    )
    found = bundles(folder / "dumps", "thread")
    assert len(found) == 1, f"expected one thread event:\n{proc.stdout}\n{proc.stderr}"
    return found[0], float(proc.stdout.split()[-1])


def test_the_burst_ended_two_seconds_before_the_event(burst_event: tuple[Bundle, float]) -> None:
    bundle, burst_ended = burst_event
    fired = json.loads((bundle.path / "event.json").read_text())["sample"]["time"]
    assert fired - burst_ended >= 2.0


def test_the_recorder_names_the_burst_that_the_event_came_too_late_for(
    burst_event: tuple[Bundle, float],
) -> None:
    bundle, _ = burst_event
    profile = read_pprof(bundle.path / "recorder.pb.gz")
    assert innermost_share(profile, "crunch_numbers", "cpu") >= 0.5
    # Its samples are labelled with their second: all of them before the trigger.
    seconds = {
        int(s.labels["second"][1:])
        for s in profile.samples
        if s.stack[0].function.endswith(".crunch_numbers") and s.values[1]
    }
    assert seconds
    assert max(seconds) <= -2
    assert "MainThread" in {s.labels["thread"] for s in profile.samples if s.values[1]}
    facts = bundle.event["captures"]["recorder"]
    assert facts["seconds_before_trigger"] >= 3.0


def test_go_pprof_reads_the_recorder(burst_event: tuple[Bundle, float]) -> None:
    bundle, _ = burst_event
    rows = go_pprof_top(bundle.path / "recorder.pb.gz", sample_index="cpu")
    assert rows[0].function == "__main__.crunch_numbers"
    assert rows[0].flat_percent >= 50
    wall = go_pprof_top(bundle.path / "recorder.pb.gz", sample_index="wall")
    assert wall  # every thread's wall time, idle ones included

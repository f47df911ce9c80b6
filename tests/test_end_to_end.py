"""Real programs with the two lines and HOLMES_* set: one per rule, each finds its bundle."""

from __future__ import annotations

import os
import re
import stat

import pytest

from tests.conftest import EXAMPLES, Run, RunProgram

pytestmark = pytest.mark.timeout(120)


def only_bundle(run: Run, rule: str):
    bundles = run.bundles(rule)
    assert len(bundles) == 1, f"expected one {rule} event, got {run.bundles()}\n{run.proc.stderr}"
    return bundles[0]


def test_thread_leak_writes_a_thread_event_with_the_leaked_stacks(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "thread_leak.py")
    bundle = only_bundle(run, "thread")
    event = bundle.event
    assert event["value"] >= 10  # the rule's min: it fires while the leak is still under way
    assert "> abs" in event["reason"] or "average" in event["reason"]
    threads = bundle.text("threads.txt")
    # The dump follows the trigger, and leaked threads never end: at least as many show.
    baseline = 4  # the main thread and holmespy's three (watcher, capture, recorder)
    assert threads.count("wait_for_reply") >= event["value"] - baseline
    assert '"leaked-0"' in threads


def test_task_pileup_writes_a_task_event_grouped_by_await_chain(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "task_pileup.py")
    bundle = only_bundle(run, "task")
    value = bundle.event["value"]
    assert value >= 100
    tasks = bundle.text("tasks.txt")
    # The largest group is the pile-up: at least every piled-up task counted
    # when the rule fired (the value less the 20 keep-alives and main()), one
    # await chain, outermost coroutine first.
    largest = tasks.split("\n\n[1] ", 1)[1].split("\n\n", 1)[0]
    head = re.match(r"(\d+) tasks on loop 1\n", largest)
    assert head is not None, tasks
    assert int(head.group(1)) >= value - 21
    assert largest.index("handle_request") < largest.index("call_upstream") < largest.index("sleep")
    assert "request-" in largest.splitlines()[-1]


def test_cpu_spike_writes_a_cpu_event_naming_the_hot_function(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "cpu_spike.py")
    bundle = run.bundles("cpu")[0]
    assert bundle.event["value"] >= 10  # the rule's min; a loaded machine gives the loop less
    assert "checksum" in bundle.text("threads.txt")


def test_blocked_event_loop_is_said_in_the_task_dump(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "blocked_loop.py")
    bundle = run.bundles("cpu")[0]
    tasks = bundle.text("tasks.txt")
    assert "LOOP BLOCKED" in tasks
    assert "render_report" in tasks


def test_memory_growth_writes_a_mem_event(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "mem_leak.py")
    bundle = only_bundle(run, "mem")
    assert bundle.event["unit"] == "%"
    assert bundle.event["limits"]["mem_source"] == "HOLMES_MEM_LIMIT"


def test_heap_after_full_gc_growth_writes_a_gcheap_event(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "gcheap_growth.py")
    bundle = only_bundle(run, "gcheap")
    assert "average" in bundle.event["reason"] or "> abs" in bundle.event["reason"]


def test_event_json_carries_the_contract_fields(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "thread_leak.py", HOLMES_SERVICE="checkout")
    bundle = only_bundle(run, "thread")
    event = bundle.event
    for key in ("id", "service", "host", "pid", "rule", "reason", "value", "thresholds", "time"):
        assert key in event
    assert event["service"] == "checkout"
    assert bundle.path.name == event["id"]
    assert bundle.path.parent.name == event["time"][:10]  # <service>/<YYYY-MM-DD>/<id>
    assert bundle.path.parent.parent.name == "checkout"
    assert event["time"].endswith("Z")
    # The ten samples the average was taken over, then the one that fired.
    assert len(event["history"]) == 11
    assert event["history"][-1]["value"] == event["value"]
    assert event["thresholds"]["min"] == 10
    assert event["thresholds"]["abs"] == 70
    assert event["versions"]["holmespy"]
    assert event["versions"]["python"]
    # What this Python cannot give holmespy (docs/versions.md), one key per feature.
    assert isinstance(event["versions"]["lacks"], dict)
    assert all(isinstance(v, str) and v for v in event["versions"]["lacks"].values())
    names = {f["name"] for f in event["files"]}
    assert names == {p.name for p in bundle.path.iterdir()} - {"event.json"}
    assert all(len(f["sha256"]) == 64 for f in event["files"])


def test_bundles_are_private_and_complete(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "thread_leak.py")
    bundle = only_bundle(run, "thread")
    for folder in (bundle.path, bundle.path.parent, bundle.path.parent.parent):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for file in bundle.path.iterdir():
        assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    leftovers = [p for p in run.dump_path.rglob(".tmp-*")]
    assert leftovers == []


def test_kill_switch_makes_holmespy_a_no_op(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "thread_leak.py", HOLMES_ENABLE="0")
    assert run.bundles() == []
    assert not run.dump_path.exists()


def test_a_bad_setting_stops_start_with_a_clear_error(run_program: RunProgram) -> None:
    program = """
import holmespy
try:
    holmespy.start()
except holmespy.ConfigError as e:
    print(e)
"""
    run = run_program(program, HOLMES_INTERVAL="fast")
    assert "HOLMES_INTERVAL='fast' is invalid: expected a duration" in run.proc.stdout

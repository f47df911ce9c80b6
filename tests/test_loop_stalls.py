"""loop.txt, loop.pb.gz and show's loop part, from stalls made by hand: exact and hostile ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from holmespy.cli.reading import DEFAULT_MAX_SIZE
from holmespy.cli.show import loop_part
from holmespy.formats.pprof import decode, encode
from holmespy.profilers.loopstalls import format_stalls, stall_facts, stalls_profile
from holmespy.stacktable import Stack, StackTable
from holmespy.watchdog import StallView
from tests.parked import Parked, park_elsewhere


@pytest.fixture(scope="module")
def stacks() -> Iterator[tuple[Stack, Stack]]:
    table = StackTable()
    with Parked("a") as a, Parked("b", park_elsewhere) as b:
        yield table.intern(a.frame()), table.intern(b.frame())


def stall(stacks: tuple[Stack, Stack], **changes: object) -> StallView:
    here, elsewhere = stacks
    fields: dict[str, object] = {
        "loop": "_UnixSelectorEventLoop at 0x7f00",
        "thread": "MainThread",
        "thread_id": 140,
        "start_wall": 1_796_000_000.25,
        "seconds": 1.5,
        "ended": True,
        "detected_after": 0.5,
        "samples": ((here, 45, 900_000_000), (elsewhere, 5, 100_000_000)),
        "sample_count": 50,
        "capped": False,
        "excused": False,
    }
    fields.update(changes)
    return StallView(**fields)  # type: ignore[arg-type]


def test_each_stall_says_loop_thread_start_length_and_the_stack_seen_most(stacks) -> None:
    text = format_stalls([stall(stacks)], threshold=0.5)
    block = text.split("\n\n", 1)[1]
    lines = block.splitlines()
    assert lines[0] == "stall 1 of 1: 1.50 s"
    assert lines[1] == "  loop      _UnixSelectorEventLoop at 0x7f00"
    assert lines[2] == '  thread    "MainThread" ident=140'
    assert lines[3].startswith("  start     2026-")
    assert "stack seen most (45 of 50 samples, 90 %)" in block
    seen_most = block.split("innermost call first:\n", 1)[1].splitlines()
    assert seen_most[0].startswith("    threading.Condition.wait (")
    assert "park_here" in block.split("also seen")[0]
    also = block.split("also seen (innermost frame):\n", 1)[1].splitlines()
    assert also[0].startswith("        5 samples: threading.Condition.wait (")


def test_a_stall_still_going_on_and_one_of_holmespys_own_are_said_so(stacks) -> None:
    text = format_stalls(
        [stall(stacks, ended=False, seconds=3.0), stall(stacks, excused=True)], threshold=0.5
    )
    assert "stall 1 of 2: 3.00 s so far: still stalled when this was written" in text
    assert "stall 2 of 2: 1.50 s  (holmespy's own: during a heap capture)" in text
    assert "the loop rule does not count them" in text


def test_a_stall_without_samples_says_why(stacks) -> None:
    text = format_stalls([stall(stacks, samples=(), thread_id=None, thread=None)], threshold=0.5)
    assert "no stack: the thread could not be sampled: the loop's thread is not known" in text


def test_a_thread_name_cannot_forge_lines(stacks) -> None:
    forged = "MainThread\nstall 9 of 9: 99.00 s"
    text = format_stalls([stall(stacks, thread=forged)], threshold=0.5)
    assert not any(line.startswith("stall 9") for line in text.splitlines())
    assert "stall 9 of 9" in text  # still there, escaped on its own line's end


def test_the_profile_has_every_sample_labelled_by_stall_and_thread(stacks) -> None:
    views = [stall(stacks), stall(stacks, thread="worker-loop")]
    profile = decode(encode(stalls_profile(views)))
    assert [vt.type for vt in profile.sample_types] == ["samples", "wall"]
    assert profile.default_sample_type == "wall"
    assert sum(s.values[0] for s in profile.samples) == 100
    assert {(s.labels["stall"], s.labels["thread"]) for s in profile.samples} == {
        ("1", "MainThread"),
        ("2", "worker-loop"),
    }


def test_show_prints_the_stalls_from_event_json(stacks, tmp_path: Path) -> None:
    path = tmp_path / "loop.txt"
    path.write_text(format_stalls([stall(stacks)], threshold=0.5))
    facts = json.loads(json.dumps(stall_facts([stall(stacks)])))
    out = loop_part(path, 5, DEFAULT_MAX_SIZE, facts)
    assert out[0].startswith("── loop.txt: 1 stall, longest 1.50 s, newest first")
    assert "1.50 s  thread MainThread, from 2026-" in out[1]
    assert "(50 samples, 90% in this stack)" in out[1]
    assert out[2].strip().startswith("threading.Condition.wait (threading.py:")


@pytest.mark.parametrize(
    "facts",
    [None, "many", [None, 3, {"seconds": "long", "stack": [1, None]}], [{}]],
    ids=["missing", "a string", "junk entries", "an empty stall"],
)
def test_show_survives_hostile_stall_facts(stacks, tmp_path: Path, facts: object) -> None:
    path = tmp_path / "loop.txt"
    path.write_text(format_stalls([stall(stacks)], threshold=0.5))
    out = loop_part(path, 5, DEFAULT_MAX_SIZE, facts)
    assert out[0].startswith("── loop.txt: ")


def test_without_stall_facts_show_prints_loop_txt_as_written_not_parsed(
    stacks, tmp_path: Path
) -> None:
    # An event.json with no stall facts (another writer, or a hand-made bundle): the
    # text is shown as it is, escaped, never read back into numbers.
    path = tmp_path / "loop.txt"
    text = format_stalls([stall(stacks)], threshold=0.5) + "stall \x1b[31mforged\n"
    path.write_text(text)
    out = loop_part(path, 5, DEFAULT_MAX_SIZE, None)
    assert out[0].startswith("── loop.txt: as written (event.json lists no stalls)")
    assert out[1] == "  " + text.split("\n")[0]
    assert not any("\x1b" in line for line in out)

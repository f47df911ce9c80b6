"""Collapsed stacks (flamegraph.pl) and speedscope JSON, made from one Profile."""

from __future__ import annotations

import json
from typing import Any

import pytest

from holmespy.formats.collapsed import to_collapsed
from holmespy.formats.profile import Frame, Profile, ValueType
from holmespy.formats.speedscope import SCHEMA, to_speedscope

MAIN = Frame("app.main", "app.py", 10, 8)
HANDLE = Frame("app.handle", "app.py", 20, 18)
QUERY = Frame("db.query", "db.py", 5, 1)
IDLE = Frame("loop.idle", "loop.py", 3, 2)


def cpu_profile() -> Profile:
    """Two threads plus an unlabelled sample; worker-1's stack is sampled twice."""
    p = Profile(
        (ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        default_sample_type="cpu",
    )
    p.add((IDLE, MAIN), (4, 40_000_000), thread="MainThread")
    p.add((QUERY, HANDLE, MAIN), (7, 70_000_000), thread="worker-1")
    p.add((HANDLE, MAIN), (1, 10_000_000), thread="worker-1")
    p.add((QUERY, HANDLE, MAIN), (2, 20_000_000), thread="worker-1")
    p.add((QUERY, HANDLE, MAIN), (3, 30_000_000), thread="worker-2")
    p.add((QUERY,), (1, 1_000_000))
    return p


# --------------------------------------------------------------------------- collapsed


def test_collapsed_stacks_of_a_known_profile() -> None:
    assert to_collapsed(cpu_profile()) == (
        "db.query (db.py:5) 1000000\n"
        "thread:MainThread;app.main (app.py:10);loop.idle (loop.py:3) 40000000\n"
        "thread:worker-1;app.main (app.py:10);app.handle (app.py:20) 10000000\n"
        "thread:worker-1;app.main (app.py:10);app.handle (app.py:20);db.query (db.py:5) 90000000\n"
        "thread:worker-2;app.main (app.py:10);app.handle (app.py:20);db.query (db.py:5) 30000000\n"
    )


def test_without_thread_roots_the_threads_merge() -> None:
    assert to_collapsed(cpu_profile(), thread_roots=False) == (
        "app.main (app.py:10);app.handle (app.py:20) 10000000\n"
        "app.main (app.py:10);app.handle (app.py:20);db.query (db.py:5) 120000000\n"
        "app.main (app.py:10);loop.idle (loop.py:3) 40000000\n"
        "db.query (db.py:5) 1000000\n"
    )


def test_sample_type_picks_the_value_column() -> None:
    counts = to_collapsed(cpu_profile(), sample_type="samples", thread_roots=False)
    assert counts.splitlines()[1].endswith(";db.query (db.py:5) 12")


def test_without_a_default_sample_type_the_last_column_is_used() -> None:
    p = cpu_profile()
    p.default_sample_type = ""
    assert to_collapsed(p) == to_collapsed(p, sample_type="cpu")


def test_an_unknown_sample_type_names_the_ones_available() -> None:
    with pytest.raises(ValueError, match=r"'wall' is not in the profile \(it has samples, cpu\)"):
        to_collapsed(cpu_profile(), sample_type="wall")


def test_separators_inside_names_cannot_break_a_line() -> None:
    p = Profile((ValueType("samples", "count"),))
    p.add((Frame("odd;name\nsplit\x1b[2J", "dir;x/f.py", 1),), (2,), thread="pool;1")
    assert to_collapsed(p) == "thread:pool,1;odd,name\\nsplit\\x1b[2J (dir,x/f.py:1) 2\n"


def test_unknown_parts_of_a_frame_are_left_out() -> None:
    p = Profile((ValueType("samples", "count"),))
    p.add((Frame("<native>", ""), Frame("main", "m.py")), (1,))
    p.add((), (5,))
    assert to_collapsed(p) == "[unknown] 5\nmain (m.py);<native> 1\n"


def test_zero_totals_and_empty_profiles_give_no_lines() -> None:
    p = Profile((ValueType("inuse_space", "bytes"),))
    assert to_collapsed(p) == ""
    p.add((QUERY,), (0,))
    assert to_collapsed(p) == ""


def test_frames_that_print_alike_are_summed_into_one_line() -> None:
    p = Profile((ValueType("samples", "count"),))
    p.add((Frame("f", "a.py", 3, start_line=1),), (1,))
    p.add((Frame("f", "a.py", 3, start_line=2),), (1,))
    assert to_collapsed(p) == "f (a.py:3) 2\n"


# --------------------------------------------------------------------------- speedscope

UNITS = {"none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"}


def assert_valid_speedscope(doc: dict[str, Any]) -> None:
    """The parts of speedscope's file-format-schema.json that a sampled file uses."""
    assert json.loads(json.dumps(doc)) == doc, "plain JSON types only"
    assert doc["$schema"] == SCHEMA
    assert doc["exporter"] == "holmespy"
    assert isinstance(doc["name"], str)
    frames = doc["shared"]["frames"]
    for frame in frames:
        assert set(frame) <= {"name", "file", "line", "col"}
        assert isinstance(frame["name"], str)
        assert isinstance(frame.get("file", ""), str)
        assert isinstance(frame.get("line", 1), int)
    assert doc["profiles"], "at least one profile"
    assert 0 <= doc["activeProfileIndex"] < len(doc["profiles"])
    for profile in doc["profiles"]:
        assert profile["type"] == "sampled"
        assert isinstance(profile["name"], str)
        assert profile["unit"] in UNITS
        assert len(profile["weights"]) == len(profile["samples"]), "one weight per sample"
        assert profile["endValue"] - profile["startValue"] == sum(profile["weights"])
        for stack in profile["samples"]:
            assert all(0 <= index < len(frames) for index in stack), "frame index in range"


def names(doc: dict[str, Any], stack: list[int]) -> list[str]:
    return [doc["shared"]["frames"][i]["name"] for i in stack]


def test_speedscope_has_one_sampled_profile_per_thread() -> None:
    doc = to_speedscope(cpu_profile(), name="api cpu spike")
    assert_valid_speedscope(doc)
    assert doc["name"] == "api cpu spike"
    by_name = {p["name"]: p for p in doc["profiles"]}
    assert list(by_name) == ["MainThread", "worker-1", "worker-2", "(no thread label)"]
    assert by_name["worker-1"]["weights"] == [70_000_000, 10_000_000, 20_000_000]
    assert by_name["worker-1"]["endValue"] == 100_000_000
    # worker-1 is the heaviest thread, so the file opens on it.
    assert doc["profiles"][doc["activeProfileIndex"]]["name"] == "worker-1"


def test_speedscope_samples_run_outermost_first() -> None:
    doc = to_speedscope(cpu_profile())
    worker = next(p for p in doc["profiles"] if p["name"] == "worker-1")
    assert names(doc, worker["samples"][0]) == ["app.main", "app.handle", "db.query"]


def test_speedscope_frames_are_shared_and_carry_file_and_line() -> None:
    doc = to_speedscope(cpu_profile())
    assert doc["shared"]["frames"] == [
        {"name": "app.main", "file": "app.py", "line": 10},
        {"name": "loop.idle", "file": "loop.py", "line": 3},
        {"name": "app.handle", "file": "app.py", "line": 20},
        {"name": "db.query", "file": "db.py", "line": 5},
    ]


def test_speedscope_without_thread_labels_is_one_profile() -> None:
    p = Profile((ValueType("alloc_space", "bytes"),))
    p.add((QUERY, MAIN), (4096,))
    p.add((HANDLE, MAIN), (512,))
    doc = to_speedscope(p, name="heap")
    assert_valid_speedscope(doc)
    (only,) = doc["profiles"]
    assert only["name"] == "heap"
    assert only["unit"] == "bytes"
    assert only["weights"] == [4096, 512]


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("nanoseconds", "nanoseconds"), ("bytes", "bytes"), ("count", "none"), ("seconds", "seconds")],
)
def test_speedscope_unit_follows_the_value_type(unit: str, expected: str) -> None:
    p = Profile((ValueType("v", unit),))
    p.add((MAIN,), (1,))
    assert to_speedscope(p)["profiles"][0]["unit"] == expected


def test_speedscope_sample_type_picks_the_column() -> None:
    doc = to_speedscope(cpu_profile(), sample_type="samples")
    assert_valid_speedscope(doc)
    assert {p["unit"] for p in doc["profiles"]} == {"none"}
    worker = next(p for p in doc["profiles"] if p["name"] == "worker-1")
    assert worker["weights"] == [7, 1, 2]


def test_speedscope_of_an_empty_profile_is_still_loadable() -> None:
    doc = to_speedscope(Profile((ValueType("cpu", "nanoseconds"),)))
    assert_valid_speedscope(doc)
    assert doc["profiles"][0]["samples"] == []

"""The typed event: what the watcher writes reads back whole, and a crafted event.json is
refused in one line (strict) or shown as far as it makes sense (lenient)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli_support import write_bundle

import holmespy
from holmespy import Config, Rule
from holmespy.cli.events import add_filter_args
from holmespy.config import DEFAULT_RULES, RULE_NAMES
from holmespy.event import (
    MAX_HISTORY,
    SCHEMA,
    BadEvent,
    Event,
    Point,
    Thresholds,
    load_json,
)
from holmespy.manifest import MAX_DEPTH, MAX_FILES
from holmespy.profilers import CAPTURES
from holmespy.registry import METRICS, RULES
from holmespy.watcher import UNITS
from tests.test_terminal_safety import ATTACKS, raw_controls

QUICK = Rule(min=0, diff=0, abs=0, cooldown=0)  # fires on the first sample


def published(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*/*/event.json") if not p.parent.name.startswith("."))


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("holmes_stopped")
def test_the_watchers_event_json_reads_back_whole_with_its_schema(tmp_path: Path) -> None:
    config = Config(
        dump_path=tmp_path,
        service="unit",
        interval=0.01,
        cpu=None,
        mem=None,
        task=None,
        gcheap=None,
        thread=None,
    )
    watcher = holmespy.start(config)
    assert watcher is not None
    # The flight recorder (on by default) is made by its thread: once it has ticked, every
    # event has its recorder.pb.gz.
    deadline = time.monotonic() + 20
    while watcher.stacks.recorder is None or watcher.stacks.recorder.ticks < 1:
        assert time.monotonic() < deadline, "the recorder did not tick"
        time.sleep(0.02)
    holmespy.reconfigure(thread=QUICK)
    while not published(tmp_path):
        assert time.monotonic() < deadline, "no event was published"
        time.sleep(0.02)
    holmespy.stop()
    raw = json.loads(published(tmp_path)[0].read_bytes())

    event = Event.from_json(raw)

    assert raw["schema"] == SCHEMA == event.schema
    assert next(iter(raw)) == "schema"
    assert event.rule == "thread"
    assert event.unit == "threads"
    assert event.history
    assert event.history[-1].value == event.value
    assert event.capture("threads") is not None
    assert event.capture("recorder") is not None
    assert event.file_names == ["recorder.pb.gz", "threads.json", "threads.txt"]
    assert event.to_json() == raw


def test_an_event_written_before_schema_numbers_is_version_1(tmp_path: Path) -> None:
    raw = json.loads((write_bundle(tmp_path, rule="cpu", baseline=20) / "event.json").read_text())
    raw.pop("schema", None)  # as holmespy wrote it before schema numbers

    event = Event.from_json(raw)

    assert event.schema == 1
    assert event.to_json() == {"schema": 1, **raw}


def test_a_newer_writers_unknown_keys_are_kept_and_written_back() -> None:
    raw = {
        "schema": SCHEMA + 1,
        "id": "20261124T035412.123Z-loop-8f3a1c9b2e",
        "service": "api",
        "rule": "loop",
        "stalls": [{"ms": 812, "thread": "MainThread"}],
        "captures": {"loop": {"file": "loop.txt", "stalls": 3}},
    }

    event = Event.from_json(raw)

    assert event.extra == {"stalls": raw["stalls"]}
    assert event.capture("loop") is not None
    assert event.to_json() == raw


def test_the_firing_level_follows_from_average_and_diff() -> None:
    assert Thresholds(average=40, diff=25).fired_at == 50
    assert Thresholds(average=None, diff=25).fired_at is None


# -- attacks: each is one line in strict mode, and left out (said) in lenient mode --


def crafted(**fields: Any) -> dict[str, Any]:
    return {"id": "20261124T035412.123Z-cpu-8f3a1c9b2e", "service": "s", "rule": "cpu", **fields}


WRONG_TYPES = {
    "value-an-object": ({"value": {"a": 1}}, "value: an object ({'a': 1}), not a number"),
    "pid-a-string": ({"pid": "1; rm -rf /"}, "pid: a string ('1; rm -rf /'), not an integer"),
    "value-a-boolean": ({"value": True}, "value: a boolean (True), not a number"),
    "thresholds-a-list": ({"thresholds": [1, 2]}, "thresholds: a list ([1, 2]), not an object"),
    "history-a-number": ({"history": 7}, "history: a number (7), not a list"),
    "history-point-a-string": ({"history": ["x"]}, "history[0]: a string ('x'), not an object"),
    "history-value-a-string": (
        {"history": [{"time": "t", "value": "high"}]},
        "history[0].value: a string ('high'), not a number",
    ),
    "capture-a-list": ({"captures": {"cpu": ["x"]}}, "captures.cpu: a list (['x']), not an object"),
    "file-name-a-number": ({"files": [{"name": 42}]}, "files[0].name: a number (42), not a string"),
    "partial-a-string": ({"partial": "yes"}, "partial: a string ('yes'), not a boolean"),
    "schema-negative": ({"schema": -3}, "schema: a number (-3), not a version number"),
    "id-missing": ({"id": None}, "id: missing"),
}


@pytest.mark.parametrize(("fields", "message"), WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_types_are_one_line_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(BadEvent) as refused:
        Event.from_json(crafted(**fields))

    assert str(refused.value) == f"event.json: {message}"


@pytest.mark.parametrize(
    "fields",
    [fields for name, (fields, _) in WRONG_TYPES.items() if name != "id-missing"],
    ids=[name for name in WRONG_TYPES if name != "id-missing"],
)
def test_wrong_types_are_left_out_and_said_when_reading_leniently(fields: dict[str, Any]) -> None:
    event, problems = Event.read(crafted(**fields))

    assert len(problems) == 1
    assert event.rule == "cpu"  # the rest is still there
    assert all(type(p.value) in (int, float, type(None)) for p in event.history or ())


def test_a_non_object_is_refused_even_leniently() -> None:
    with pytest.raises(BadEvent, match=r"^event.json: a list, not a JSON object$"):
        Event.read([1, 2])


def test_huge_arrays_are_refused_strictly_and_cut_to_the_newest_leniently() -> None:
    history = [{"time": "t", "value": n} for n in range(MAX_HISTORY + 5)]

    with pytest.raises(BadEvent, match=f"history: {MAX_HISTORY + 5:,} entries, more than"):
        Event.from_json(crafted(history=history))
    event, problems = Event.read(crafted(history=history))

    assert event.history is not None
    assert len(event.history) == MAX_HISTORY
    assert event.history[-1] == Point("t", MAX_HISTORY + 4)  # the firing sample is kept
    assert len(problems) == 1


def test_huge_file_lists_are_refused() -> None:
    files = [{"name": f"f{n}", "size": 1, "sha256": "0" * 64} for n in range(MAX_FILES + 1)]

    with pytest.raises(BadEvent, match=f"more than {MAX_FILES}"):
        Event.from_json(crafted(files=files))


def test_deep_nesting_is_refused_before_anything_reads_it() -> None:
    nested = b"[" * 100_000 + b"]" * 100_000

    with pytest.raises(BadEvent, match=f"^nested deeper than {MAX_DEPTH} levels$"):
        load_json(b'{"history": ' + nested + b"}")


def test_nesting_just_within_the_limit_reads_and_its_odd_shape_is_refused() -> None:
    raw = load_json(b'{"captures": {"cpu": {"x": ' + b"[" * 29 + b"]" * 29 + b"}}}")

    assert Event.read(raw)[0].capture("cpu") is not None


def test_numbers_json_cannot_hold_are_invalid_values_not_numbers() -> None:
    raw = load_json(b'{"value": NaN, "thresholds": {"abs": 1e999, "min": ' + b"9" * 5000 + b"}}")

    event, problems = Event.read(raw)

    assert event.value is None
    assert problems == []
    assert event.thresholds == Thresholds()


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_escape_sequences_in_strings_are_kept_as_data_and_never_reach_an_error_raw(
    attack: str,
) -> None:
    event = Event.from_json(crafted(host=f"web-{attack}", reason=attack))

    assert event.host == f"web-{attack}"  # escaping is for whoever shows it
    with pytest.raises(BadEvent) as refused:
        Event.from_json(crafted(pid=f"1{attack}"))
    message = str(refused.value)
    assert raw_controls(message, keep="") == []
    assert "\n" not in message


# -- one registry of rules --


def test_every_list_of_rules_is_the_registrys() -> None:
    names = tuple(m.name for m in METRICS)

    assert names == RULE_NAMES
    assert tuple(DEFAULT_RULES) == names
    assert tuple(CAPTURES) == names
    assert {m.name: m.unit for m in METRICS} == UNITS
    parser = argparse.ArgumentParser()
    add_filter_args(parser)
    rule = next(a for a in parser._actions if a.dest == "rule")
    assert tuple(rule.choices or ()) == names
    assert all(RULES[n].name == n for n in names)

"""`threads.json`: the thread dump as data, taken in the same pass as `threads.txt`, read
strictly, and used by `show` and `serve`: nothing parses the text back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_support import cli, write_bundle

from holmespy.cli.dumps import thread_groups
from holmespy.config import Config
from holmespy.profilers import CaptureContext, capture_threads
from holmespy.profilers.threads import dump_threads
from holmespy.stackdump import MAX_FRAMES, MAX_THREADS, BadDump, Frame, ThreadDump, ThreadStack
from tests.test_terminal_safety import CLEAR_SCREEN, raw_controls

PARKED = 4


def park_here(gate: threading.Event) -> None:
    gate.wait(30)


@pytest.fixture
def parked() -> Iterator[list[threading.Thread]]:
    """PARKED threads stopped in one identical stack, one named with an escape sequence."""
    gate = threading.Event()
    threads = [
        threading.Thread(target=park_here, args=(gate,), name=f"parked-{n}", daemon=True)
        for n in range(PARKED - 1)
    ]
    threads.append(
        threading.Thread(target=park_here, args=(gate,), name=f"evil{CLEAR_SCREEN}", daemon=True)
    )
    for thread in threads:
        thread.start()
    yield threads
    gate.set()
    for thread in threads:
        thread.join(10)


def test_the_data_and_the_text_are_one_dump(parked: list[threading.Thread]) -> None:
    text, dump = dump_threads()

    assert dump is not None
    read_back = ThreadDump.loads(json.dumps(dump.to_json()).encode())
    assert read_back == dump
    for stack in dump.threads:  # every thread and frame of the data is in the text
        assert f'Thread "{stack.name}" ident={stack.ident} ' in text
        assert all(f"    {frame.label}\n" in text for frame in stack.frames)
    biggest = thread_groups(read_back)[0]
    assert biggest.count == PARKED
    assert any(frame.startswith("park_here (") for frame in biggest.frames)
    assert "evil\\x1b[2J\\x1b[H" in biggest.names  # stored escaped, as threads.txt has it


def test_the_thread_capture_writes_both_files(tmp_path: Path, parked: object) -> None:
    ctx = CaptureContext(directory=tmp_path, rule="thread", config=Config())

    facts = capture_threads(ctx)

    assert facts == {"file": "threads.txt", "data": "threads.json"}
    dump = ThreadDump.loads((tmp_path / "threads.json").read_bytes())
    assert dump.groups()[0].count == PARKED
    assert raw_controls((tmp_path / "threads.json").read_text()) == []


def crafted_dump(names: list[str], frames: list[str]) -> bytes:
    return json.dumps(
        ThreadDump(
            tuple(
                ThreadStack(name, n, tuple(Frame(f, "/srv/app.py", 7) for f in frames))
                for n, name in enumerate(names)
            )
        ).to_json()
    ).encode()


def test_show_groups_from_the_data_when_the_bundle_has_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The text and the data disagree on purpose: what show prints says which it read.
    folder = write_bundle(
        tmp_path,
        rule="thread",
        files={
            "threads.txt": dump_threads()[0].encode(),
            "threads.json": crafted_dump(["w1", "w2", "w3"], ["wait_for_db"]),
        },
    )

    out = cli(capsys, "show", str(folder)).out

    assert "3 threads in 1 group of identical stacks" in out
    assert "wait_for_db (app.py:7)" in out


def test_a_damaged_threads_json_is_said_and_the_text_shown_as_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, parked: object
) -> None:
    folder = write_bundle(
        tmp_path,
        rule="thread",
        files={"threads.txt": dump_threads()[0].encode(), "threads.json": b'{"threads": 7}'},
    )

    out = cli(capsys, "show", str(folder)).out

    assert "!! threads.json: threads: 7 is not a list; threads.txt is shown as written" in out
    assert "  holmespy thread dump: pid " in out


# -- attacks on threads.json: one line each --


def thread(**fields: Any) -> dict[str, Any]:
    return {"name": "t", "ident": 1, "frames": [["f", "a.py", 1]], **fields}


ATTACKS: dict[str, tuple[bytes, str]] = {
    "not-an-object": (b"[1]", "threads.json: not a JSON object"),
    "threads-a-string": (b'{"threads": "x"}', "threads: 'x' is not a list"),
    "name-a-number": (
        json.dumps({"threads": [thread(name=5)]}).encode(),
        "threads[0].name: 5 is not a string",
    ),
    "ident-negative": (
        json.dumps({"threads": [thread(ident=-1)]}).encode(),
        "threads[0].ident: -1 is not a non-negative integer",
    ),
    "ident-a-boolean": (
        json.dumps({"threads": [thread(ident=True)]}).encode(),
        "threads[0].ident: True is not a non-negative integer",
    ),
    "frame-too-short": (
        json.dumps({"threads": [thread(frames=[["f", "a.py"]])]}).encode(),
        "threads[0].frames[0]: ['f', 'a.py'] is not [function, file, line]",
    ),
    "huge-thread-list": (
        json.dumps({"threads": [0] * (MAX_THREADS + 1)}).encode(),
        f"threads: {MAX_THREADS + 1:,} entries, more than {MAX_THREADS:,}",
    ),
    "huge-frame-list": (
        json.dumps({"threads": [thread(frames=[["f", "a", 1]] * (MAX_FRAMES + 1))]}).encode(),
        f"threads[0].frames: {MAX_FRAMES + 1:,} entries, more than {MAX_FRAMES:,}",
    ),
    "deep-nesting": (b'{"threads": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "nested deeper"),
    "escape-in-a-bad-value": (
        json.dumps({"threads": [thread(ident=f"1{CLEAR_SCREEN}")]}).encode(),
        "threads[0].ident: '1\\x1b[2J\\x1b[H' is not a non-negative integer",
    ),
}


@pytest.mark.parametrize(("raw", "message"), ATTACKS.values(), ids=ATTACKS.keys())
def test_a_crafted_threads_json_is_refused_in_one_line(raw: bytes, message: str) -> None:
    with pytest.raises(BadDump) as refused:
        ThreadDump.loads(raw)

    text = str(refused.value)
    assert text.startswith("threads.json: ")
    assert message in text
    assert "\n" not in text
    assert raw_controls(text, keep="") == []

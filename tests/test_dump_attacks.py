"""Hostile dump JSON: `tasks.json`, `heap-types.json`, `heap-holders.json` as a forger writes them.

A bundle can come from any machine that writes to the bucket. Each test
below plants one attack in the JSON twin of each dump and checks the three
readers: the strict one (`from_json`) refuses in one line naming the file
and the field; `show` and `serve` leave out what is wrong and say it in a
`!!` line (or, when the file cannot be read at all, say why in one line and
show the text dump as written); nothing prints a traceback, a raw control
character or HTML from the file, and nothing waits on a FIFO or follows a
link out of the bundle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_cli_support import as_json, cli, write_bundle

from holmespy.census import Census
from holmespy.dumpjson import BadDump
from holmespy.heapholders import MODULE_GLOBAL, HeapHolders, Holder, TypeTotal
from holmespy.stackdump import Frame
from holmespy.taskdump import Link, LoopState, TaskDump, TaskGroup
from tests.test_cli_serve import page, serving
from tests.test_terminal_safety import CLEAR_SCREEN, OSC52_CLIPBOARD, raw_controls

pytestmark = pytest.mark.timeout(120)  # a FIFO read by mistake would block: fail, never hang

TEXT = "the text dump, as written\n"


def tasks() -> dict[str, Any]:
    return TaskDump(
        pid=7,
        time="2026-01-01T00:00:00.000Z",
        python="cpython 3.11.7",
        total=3,
        loops=(LoopState(1, "_UnixSelectorEventLoop", 3, thread="MainThread", thread_ident=5),),
        groups=(
            TaskGroup(
                count=3,
                chain=(Link("handle", "/srv/app.py", 12), Link("call_upstream", "/srv/up.py", 4)),
                loops=((1, 3),),
                tasks=(("request-1", "pending"), ("request-2", "pending")),
            ),
        ),
    ).to_json()


def census() -> dict[str, Any]:
    return Census(
        pid=7, time=0.0, counts={"app.Session": 40_000, "dict": 500}, growth=None
    ).to_json()


def holders() -> dict[str, Any]:
    registry = Holder(
        label="app.sessions.REGISTRY",
        kind=MODULE_GLOBAL,
        type="dict",
        objects=40_001,
        bytes=4_000_000,
        types=(TypeTotal("app.Session", 40_000, 3_999_000),),
    )
    return HeapHolders(
        pid=7,
        time=0.0,
        seconds=1.0,
        objects=40_001,
        bytes=4_000_000,
        roots=1,
        types=(TypeTotal("app.Session", 40_000, 3_999_000),),
        holders=(registry,),
        shares={},
    ).to_json()


Spoil = Callable[[dict[str, Any]], None]


class Kind:
    """One dump: its files, a valid JSON object of it, and where a forger puts a value."""

    def __init__(
        self,
        name: str,
        model: Any,
        make: Callable[[], dict[str, Any]],
        rule: str,
        item: Callable[[dict[str, Any]], dict[str, Any]],
        item_key: str,
        item_where: str,
        shown: str,
    ) -> None:
        self.text, self.json = f"{name}.txt", f"{name}.json"
        self.model, self.make, self.rule = model, make, rule
        self.item, self.item_key, self.item_where = item, item_key, item_where
        self.shown = shown
        """What `show` prints of the valid object: proof the rest is still shown."""


KINDS = {
    "tasks": Kind(
        "tasks",
        TaskDump,
        tasks,
        "task",
        lambda d: d["groups"][0],
        "count",
        "groups[0].count",
        "3 tasks in 1 group",
    ),
    "heap-types": Kind(
        "heap-types",
        Census,
        census,
        "mem",
        lambda d: d,
        "pid",
        "pid",
        "40,000  app.Session",
    ),
    "heap-holders": Kind(
        "heap-holders",
        HeapHolders,
        holders,
        "mem",
        lambda d: d["holders"][0],
        "bytes",
        "holders[0].bytes",
        "app.sessions.REGISTRY",
    ),
}

each_kind = pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())


def bundle_with(root: Path, kind: Kind, raw: bytes) -> Path:
    return write_bundle(root, rule=kind.rule, files={kind.text: TEXT.encode(), kind.json: raw})


def spoiled(kind: Kind, value: Any) -> bytes:
    data = kind.make()
    kind.item(data)[kind.item_key] = value
    return json.dumps(data).encode()


def show(capsys: pytest.CaptureFixture[str], folder: Path) -> str:
    result = cli(capsys, "show", str(folder))
    assert result.code == 0, result.err
    assert "Traceback" not in result.out + result.err
    assert raw_controls(result.out) == []
    return result.out


def strict_refusal(kind: Kind, raw: bytes) -> str:
    with pytest.raises(BadDump) as refused:
        kind.model.from_json(json.loads(raw))
    text = str(refused.value)
    assert text.startswith(f"{kind.json}: ")
    assert "\n" not in text
    return text


# -- each attack --------------------------------------------------------------------------------


@each_kind
def test_a_value_of_the_wrong_type(
    kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    raw = spoiled(kind, "many")

    assert f"{kind.item_where}: a string ('many'), not a non-negative integer" in strict_refusal(
        kind, raw
    )
    out = show(capsys, bundle_with(tmp_path, kind, raw))
    assert (
        f"!! {kind.json}: {kind.item_where}: a string ('many'), not a non-negative integer" in out
    )


@each_kind
def test_a_number_too_large_to_be_a_count(
    kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for value, seen in ((2**70, repr(2**70)), (10**400, "None")):
        raw = spoiled(kind, value)
        assert f"{kind.item_where}: " in strict_refusal(kind, raw)
        out = show(capsys, bundle_with(tmp_path / str(len(seen)), kind, raw))
        assert f"!! {kind.json}: {kind.item_where}: " in out
        assert seen[:20] in out


@each_kind
def test_nan_and_infinity(kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for n, value in enumerate((float("nan"), float("inf"))):
        raw = spoiled(kind, value)  # json.dumps writes NaN and Infinity, as a forger may
        assert b"NaN" in raw or b"Infinity" in raw
        out = show(capsys, bundle_with(tmp_path / str(n), kind, raw))
        assert f"!! {kind.json}: {kind.item_where}: null (None), not a non-negative integer" in out


@each_kind
def test_deep_nesting(kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    raw = b'{"groups": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    with pytest.raises(BadDump, match="nested deeper than 32 levels"):
        kind.model.loads(raw)
    out = show(capsys, bundle_with(tmp_path, kind, raw))
    assert f"!! {kind.json}: nested deeper than 32 levels; {kind.text} is shown as written" in out
    assert "  the text dump, as written" in out


@each_kind
def test_a_file_of_100_mib(kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = bundle_with(tmp_path, kind, b"{}")
    with (folder / kind.json).open("r+b") as f:
        f.truncate(100 << 20)  # sparse: 100 MiB that cost no disk, and are never read

    out = show(capsys, folder)

    assert f"{kind.json}: larger than 4 MiB, the most holmespy reads" in out
    assert f"; {kind.text} is shown as written" in out


@each_kind
def test_escape_sequences_in_names(
    kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Escaped as JSON spells them (raw control characters would not be JSON at all).
    osc52, clear = json.dumps(OSC52_CLIPBOARD)[1:-1], json.dumps(CLEAR_SCREEN)[1:-1]
    raw = json.dumps(kind.make()).replace("app.", f"app{osc52}.").replace("request-1", clear)

    out = show(capsys, bundle_with(tmp_path, kind, raw.encode()))

    assert "\\x1b]52;c;cm0gLXJmIH4K\\x07" in out


@each_kind
def test_html_in_names(kind: Kind, tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    raw = json.dumps(kind.make()).replace("app.", f"app{evil}.").replace("request-1", evil)
    folder = bundle_with(tmp_path / "dumps", kind, raw.encode())

    with serving(tmp_path / "dumps") as server:
        html = page(server, f"/event/{folder.name}")

    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@each_kind
def test_a_symlink_in_place_of_the_file(
    kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(kind.make()).replace("app.", "the-secret-outside."))
    folder = bundle_with(tmp_path / "dumps", kind, b"{}")
    (folder / kind.json).unlink()
    (folder / kind.json).symlink_to(outside)

    out = show(capsys, folder)
    with serving(tmp_path / "dumps") as server:
        html = page(server, f"/event/{folder.name}")

    assert "is a symbolic link" in out
    assert f"; {kind.text} is shown as written" in out
    assert "is a symbolic link" in html
    assert "the-secret-outside" not in out + html


@each_kind
def test_a_fifo_in_place_of_the_file(
    kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = bundle_with(tmp_path / "dumps", kind, b"{}")
    (folder / kind.json).unlink()
    os.mkfifo(folder / kind.json)  # nobody writes to it: a blocking open would never return

    out = show(capsys, folder)
    with serving(tmp_path / "dumps") as server:
        html = page(server, f"/event/{folder.name}")

    assert "not a regular file" in out
    assert "not a regular file" in html
    assert "  the text dump, as written" in out


@each_kind
def test_not_a_json_object(kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert strict_refusal(kind, b"[1, 2]") == f"{kind.json}: not a JSON object"

    out = show(capsys, bundle_with(tmp_path, kind, b"[1, 2]"))

    assert f"!! {kind.json}: a list, not a JSON object; {kind.text} is shown as written" in out


def test_a_list_longer_than_any_writer_makes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tasks()
    data["groups"] = data["groups"] * 20_000

    out = show(capsys, bundle_with(tmp_path, KINDS["tasks"], json.dumps(data).encode()))

    assert "!! tasks.json: groups: 20,000 entries, more than 10,000" in out
    assert "3 tasks in 10,000 groups" in out  # what was kept is shown, bounded


def test_ten_thousand_wrong_entries_make_ten_lines_and_a_count(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tasks()
    data["groups"] = [{"count": "many"}] * 10_000
    folder = bundle_with(tmp_path / "dumps", KINDS["tasks"], json.dumps(data).encode())

    out = show(capsys, folder)
    with serving(tmp_path / "dumps") as server:
        html = page(server, f"/event/{folder.name}")

    assert out.count("!! tasks.json: groups[") == 10
    assert "!! and 9,990 more values left out" in out
    assert html.count("tasks.json: groups[") == 10
    assert "and 9,990 more values left out" in html


def test_a_valid_file_is_shown_whole(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for name, kind in KINDS.items():
        out = show(capsys, bundle_with(tmp_path / name, kind, json.dumps(kind.make()).encode()))
        assert kind.shown in out
        assert "!!" not in out
        assert kind.model.from_json(kind.make()) is not None


def test_an_older_bundle_is_said_when_diff_needs_the_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from test_cli_support import heap_profile, pprof

    heap = pprof(heap_profile({("main", "remember"): 1_000}))
    a = write_bundle(tmp_path, rule="mem", files={"heap.pb.gz": heap, "heap-types.txt": b"x"})
    b = write_bundle(
        tmp_path,
        rule="mem",
        files={
            "heap.pb.gz": heap,
            "heap-types.txt": b"x",
            "heap-types.json": as_json(Census.from_json(census())),
        },
    )

    result = cli(capsys, "diff", str(a), str(b))

    assert result.code == 0, result.err
    assert "!! by type: " in result.out
    assert "cannot compare types: no heap-types.json (written by an older holmespy)" in result.out


def test_frames_of_a_blocked_loop_are_read_as_frames() -> None:
    data = tasks()
    data["loops"][0].update(probe_ms=None, blocked_after=0.5, stack=[["spin", "/srv/a.py", 3]])

    dump = TaskDump.from_json(data)

    assert dump.blocked[0].stack == (Frame("spin", "/srv/a.py", 3),)
    data["loops"][0]["stack"] = [["spin", "/srv/a.py"]]
    with pytest.raises(BadDump, match=r"loops\[0\]\.stack\[0\]: a list"):
        TaskDump.from_json(data)


def test_html_in_an_older_bundles_text_dump_is_escaped_by_serve(tmp_path: Path) -> None:
    written = b'Thread "<img src=x onerror=alert(1)>" ident=1\n    park\x1b[2J (app.py:1)\n'
    folder = write_bundle(tmp_path / "dumps", rule="thread", files={"threads.txt": written})

    with serving(tmp_path / "dumps") as server:
        html = page(server, f"/event/{folder.name}")

    assert "threads.txt: as written (no threads.json)</h2>" in html
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "park\\x1b[2J (app.py:1)" in html

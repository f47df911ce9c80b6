"""`show` and `diff` read heap-holders.json: the top holders, and what grew by holder.

The files are written as the capture writes them (`render` and `to_json` of
one `HeapHolders`) from snapshots with known figures, so each assertion
follows from the setup.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_cli_support import as_json, census_files, cli, heap_profile, pprof, write_bundle

from holmespy.heapholders import (
    MODULE_GLOBAL,
    NAMESPACES,
    THREAD_STACK,
    Baseline,
    HeapHolders,
    Holder,
    TypeTotal,
    render,
)
from holmespy.profilers.holders import clean_name

SITES: dict[tuple[str, ...], int] = {("app.sessions.open",): 1_000}


def holder(label: str, kind: str, objects: int, size: int, held: str = "app.Session") -> Holder:
    return Holder(
        label=label,
        kind=kind,
        type="dict" if kind == MODULE_GLOBAL else "list",
        objects=objects,
        bytes=size,
        types=(TypeTotal(held, objects - 1, size - 1000), TypeTotal("dict", 1, 1000)),
    )


def snapshot_of(*holders: Holder, previous: Baseline | None = None) -> HeapHolders:
    snapshot = HeapHolders(
        pid=42,
        time=1_800_000_000.0,
        seconds=1.5,
        objects=sum(h.objects for h in holders),
        bytes=sum(h.bytes for h in holders),
        roots=len(holders),
        types=(TypeTotal("app.Session", 1, 1),),
        holders=tuple(sorted(holders, key=lambda h: -h.bytes)),
        shares={},
    )
    return snapshot if previous is None else snapshot.compared(previous)


def holders_files(*holders: Holder, previous: Baseline | None = None) -> dict[str, bytes]:
    """heap-holders.txt and heap-holders.json of a snapshot, as the capture writes them."""
    snapshot = snapshot_of(*holders, previous=previous)
    return {"heap-holders.txt": render(snapshot).encode(), "heap-holders.json": as_json(snapshot)}


REGISTRY_A = holder("app.sessions.REGISTRY", MODULE_GLOBAL, 10_001, 1_000_000)
REGISTRY_B = holder("app.sessions.REGISTRY", MODULE_GLOBAL, 50_001, 5_000_000)
BATCH = holder("thread \"worker\" app.jobs.run local 'batch'", THREAD_STACK, 2_001, 300_000)
INTERPRETER = holder("(interpreter: module and class namespaces)", NAMESPACES, 900, 9_000_000)


def test_the_json_reads_back_the_snapshot_the_text_shows() -> None:
    written = snapshot_of(REGISTRY_B, BATCH)

    found = HeapHolders.from_json(json.loads(as_json(written)))

    assert found == replace(written, type_count=len(written.types))  # the JSON says the count
    assert render(found) == render(written)
    registry = found.holders[0]
    assert registry.about == "dict, module global"
    assert registry.growth is None


def test_show_lists_the_top_holders_with_what_they_mostly_hold(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle = write_bundle(
        tmp_path,
        rule="mem",
        files=holders_files(REGISTRY_B, BATCH, INTERPRETER),
    )

    out = cli(capsys, "show", str(bundle)).out

    part = out[out.index("── heap-holders.txt") :]
    lines = part.splitlines()
    assert "52,902 objects, 13.6 MiB reached; who holds them" in lines[0]
    assert lines[2].split()[:2] == ["4.8", "MiB"]
    assert "app.sessions.REGISTRY (dict, module global)" in lines[2]
    assert "50,000 app.Session 4.8 MiB" in lines[2]
    assert "app.jobs.run local 'batch'" in lines[3]
    # The interpreter's own line is not a holder anyone can act on.
    assert "(interpreter" not in part


def test_show_reports_a_damaged_holders_file_and_shows_the_rest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle = write_bundle(
        tmp_path,
        rule="mem",
        files={
            "heap-holders.txt": b"holmespy heap holders: what the text says\n",
            "heap-holders.json": b"garbage",
            **census_files({"dict": 5}),
        },
    )

    out = cli(capsys, "show", str(bundle)).out

    assert "── heap-holders.txt: as written ─" in out
    assert "!! heap-holders.json: not JSON (" in out
    assert "; heap-holders.txt is shown as written" in out
    assert "  holmespy heap holders: what the text says" in out
    assert "── heap-types.txt: 5 objects" in out


def test_diff_of_two_events_shows_what_grew_by_holder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = write_bundle(
        tmp_path,
        rule="mem",
        files={
            "heap.pb.gz": pprof(heap_profile(SITES)),
            **holders_files(REGISTRY_A),
        },
    )
    b = write_bundle(
        tmp_path,
        rule="mem",
        files={
            "heap.pb.gz": pprof(heap_profile(SITES)),
            **holders_files(REGISTRY_B, BATCH),
        },
    )

    data = json.loads(cli(capsys, "diff", str(a), str(b), "--json").out)

    rows = {row["holder"]: row for row in data["by_holder"]}
    registry = rows["app.sessions.REGISTRY"]
    assert registry["growth_bytes"] == 4_000_000
    assert registry["growth_objects"] == 40_000
    assert registry["bound"] is False
    # Not listed in A: it held at most A's smallest listed holder.
    assert rows[BATCH.label]["bound"] is True
    assert data["by_holder"][0]["holder"] == "app.sessions.REGISTRY"
    table = cli(capsys, "diff", str(a), str(b)).out
    section = table[table.index("by holder") :]
    assert "+3.8 MiB" in section
    assert "app.sessions.REGISTRY" in section


def test_diff_of_one_gcheap_event_shows_the_growth_its_file_recorded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    previous = Baseline(
        time=1_799_999_700.0,
        types={},
        holders={"app.sessions.REGISTRY": (10_001, 1_000_000)},
        holder_floor=0,
    )
    bundle = write_bundle(
        tmp_path,
        rule="gcheap",
        files={
            "heap.pb.gz": pprof(heap_profile(SITES)),
            "heap-2.pb.gz": pprof(heap_profile(SITES)),
            **holders_files(REGISTRY_B, previous=previous),
        },
    )

    data = json.loads(cli(capsys, "diff", str(bundle), "--json").out)

    assert data["by_holder"] == [
        {
            "holder": "app.sessions.REGISTRY",
            "before_bytes": 1_000_000,
            "after_bytes": 5_000_000,
            "growth_bytes": 4_000_000,
            "before_objects": 10_001,
            "after_objects": 50_001,
            "growth_objects": 40_000,
            "bound": False,
        }
    ]


def test_a_holders_file_without_a_previous_snapshot_is_said(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle = write_bundle(
        tmp_path,
        rule="gcheap",
        files={
            "heap.pb.gz": pprof(heap_profile(SITES)),
            "heap-2.pb.gz": pprof(heap_profile(SITES)),
            **holders_files(REGISTRY_B),
        },
    )

    out = cli(capsys, "diff", str(bundle)).out

    assert out.splitlines()[-1] == (
        "by holder: heap-holders.txt has no previous snapshot to compare with"
    )


@pytest.mark.parametrize(
    "label",
    ["evil\n[1] forged.HOLDER", "tab\there", "\x1b]0;title\x07"],
)
def test_a_hostile_label_cannot_forge_a_holder(label: str) -> None:
    files = holders_files(holder(clean_name(label), THREAD_STACK, 5, 100_000))

    labels = [
        h.label for h in HeapHolders.from_json(json.loads(files["heap-holders.json"])).holders
    ]
    assert labels == [clean_name(label)]
    text = files["heap-holders.txt"].decode()
    assert "forged.HOLDER" not in {line[4:] for line in text.splitlines()}


def test_show_escapes_a_hand_made_file_with_raw_control_characters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    files = holders_files(holder("app.X", MODULE_GLOBAL, 5, 100_000))
    data = json.loads(files["heap-holders.json"])
    data["holders"][0]["label"] = "app.\x1b]0;owned\x07X"
    data["partial"] = "\x1b[2J\nforged"
    files["heap-holders.json"] = json.dumps(data).encode()
    bundle = write_bundle(tmp_path, rule="mem", files=files)

    out = cli(capsys, "show", str(bundle)).out

    assert "\x1b" not in out
    assert "\x07" not in out
    assert "app.\\x1b]0;owned\\x07X" in out
    assert "!! partial: \\x1b[2J\\nforged" in out

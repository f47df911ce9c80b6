"""`show` and `diff` read heap-holders.txt: the top holders, and what grew by holder.

The files are written by the real writer (`holmespy.profilers.holders.render`)
from snapshots with known figures, so each assertion follows from the setup.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_support import census_text, cli, heap_profile, pprof, write_bundle

from holmespy.cli.holders import read_holders
from holmespy.profilers.holders import (
    MODULE_GLOBAL,
    NAMESPACES,
    THREAD_STACK,
    Baseline,
    HeapHolders,
    Holder,
    TypeTotal,
    clean_name,
    render,
)

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


def holders_text(*holders: Holder, previous: Baseline | None = None) -> bytes:
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
        previous=previous,
    )
    return render(snapshot).encode()


REGISTRY_A = holder("app.sessions.REGISTRY", MODULE_GLOBAL, 10_001, 1_000_000)
REGISTRY_B = holder("app.sessions.REGISTRY", MODULE_GLOBAL, 50_001, 5_000_000)
BATCH = holder("thread \"worker\" app.jobs.run local 'batch'", THREAD_STACK, 2_001, 300_000)
INTERPRETER = holder("(interpreter: module and class namespaces)", NAMESPACES, 900, 9_000_000)


def test_the_writers_blocks_read_back_exactly() -> None:
    found = read_holders(holders_text(REGISTRY_B, BATCH).decode(), "x")
    rows = {h.label: h for h in found.holders}
    registry = rows["app.sessions.REGISTRY"]
    assert (registry.objects, registry.bytes) == (50_001, 5_000_000)
    assert registry.about == "dict, module global"
    assert registry.types[0] == ("app.Session", 50_000, 4_999_000)
    assert registry.growth is None
    assert rows[BATCH.label].types[0] == ("app.Session", 2_000, 299_000)


def test_show_lists_the_top_holders_with_what_they_mostly_hold(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle = write_bundle(
        tmp_path,
        rule="mem",
        files={"heap-holders.txt": holders_text(REGISTRY_B, BATCH, INTERPRETER)},
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
        files={"heap-holders.txt": b"garbage", "heap-types.txt": census_text({"dict": 5})},
    )

    out = cli(capsys, "show", str(bundle)).out

    assert "heap-holders.txt: cannot be read" in out
    assert "not a holmespy heap-holders file" in out
    assert "heap-types.txt" in out


def test_diff_of_two_events_shows_what_grew_by_holder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = write_bundle(
        tmp_path,
        rule="mem",
        files={
            "heap.pb.gz": pprof(heap_profile(SITES)),
            "heap-holders.txt": holders_text(REGISTRY_A),
        },
    )
    b = write_bundle(
        tmp_path,
        rule="mem",
        files={
            "heap.pb.gz": pprof(heap_profile(SITES)),
            "heap-holders.txt": holders_text(REGISTRY_B, BATCH),
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
            "heap-holders.txt": holders_text(REGISTRY_B, previous=previous),
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
            "heap-holders.txt": holders_text(REGISTRY_B),
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
    text = holders_text(holder(clean_name(label), THREAD_STACK, 5, 100_000)).decode()

    labels = [h.label for h in read_holders(text, "x").holders]
    assert labels == [clean_name(label)]
    assert "forged.HOLDER" not in {line[4:] for line in text.splitlines()}


def test_show_escapes_a_hand_made_file_with_raw_control_characters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = holders_text(holder("app.X", MODULE_GLOBAL, 5, 100_000)).decode()
    text = text.replace("app.X", "app.\x1b]0;owned\x07X").replace(
        "How to read it", "!! partial: \x1b[2J\nHow to read it"
    )
    bundle = write_bundle(tmp_path, rule="mem", files={"heap-holders.txt": text.encode()})

    out = cli(capsys, "show", str(bundle)).out

    assert "\x1b" not in out
    assert "\x07" not in out
    assert "app.\\x1b]0;owned\\x07X" in out
    assert "!! partial: \\x1b[2J" in out

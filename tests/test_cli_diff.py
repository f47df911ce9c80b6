"""`holmespy diff`: what grew between two heap profiles, by allocation site and by type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_support import census_files, cli, cpu_profile, heap_profile, pprof, write_bundle

# The leak: sessions kept alive by remember() grow by 2 MiB between the profiles;
# a log buffer shrinks; a new cache appears.
BEFORE = {("main", "remember"): 1 << 20, ("main", "log"): 64 << 10}
AFTER = {("main", "remember"): 3 << 20, ("main", "log"): 16 << 10, ("main", "cache"): 4 << 10}


def write(path: Path, sites: dict[tuple[str, ...], int]) -> Path:
    path.write_bytes(pprof(heap_profile(sites)))
    return path


def test_two_files_by_allocation_site(capsys, tmp_path):
    a, b = write(tmp_path / "a.pb.gz", BEFORE), write(tmp_path / "b.pb.gz", AFTER)

    result = cli(capsys, "diff", str(a), str(b))

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:2] == [f"before  {a}", f"after   {b}"]
    assert lines[3] == "by allocation site (inuse_space): 2 held memory in both windows, 2 grew"
    rows = [line.split() for line in lines[5:]]
    # held, growth, before, after: what held memory in both windows first, most first.
    assert rows[0][:8] == ["1.0", "MiB", "+2.0", "MiB", "1.0", "MiB", "3.0", "MiB"]
    assert rows[0][8:] == ["remember", "(/srv/app/cache.py:21)"]
    assert rows[1][:8] == ["16.0", "KiB", "-48.0", "KiB", "64.0", "KiB", "16.0", "KiB"]
    assert rows[2][:7] == ["-", "+4.0", "KiB", "0", "B", "4.0", "KiB"]
    assert "by type" not in result.out  # bare files have no census


def test_a_steady_leak_held_in_both_events_ranks_first(capsys, tmp_path):
    # Two mem events of a steady leak: each tracing window kept 24 MiB alive at
    # the leaking site, so it did not "grow"; 1 KiB of noise did.
    leak = ("main", "remember")
    a = write(tmp_path / "a.pb.gz", {leak: 24 << 20, ("main", "noise"): 1 << 10})
    b = write(tmp_path / "b.pb.gz", {leak: 24 << 20, ("main", "noise"): 2 << 10})

    data = json.loads(cli(capsys, "diff", str(a), str(b), "--json").out)

    first, second = data["by_site"][:2]
    assert first["name"] == "remember (/srv/app/cache.py:21)"
    assert (first["held"], first["growth"]) == (24 << 20, 0)
    assert second["name"].startswith("noise ")
    table = cli(capsys, "diff", str(a), str(b)).out.splitlines()
    assert table[5].split()[:4] == ["24.0", "MiB", "0", "B"]


def test_json_and_another_sample_type(capsys, tmp_path):
    a, b = write(tmp_path / "a.pb.gz", BEFORE), write(tmp_path / "b.pb.gz", AFTER)

    data = json.loads(cli(capsys, "diff", str(a), str(b), "--json", "-i", "inuse_objects").out)

    assert data["sample_type"] == "inuse_objects"
    assert data["unit"] == "count"
    top = data["by_site"][0]
    # The keys docs/cli/diff.md names.
    assert top == {
        "name": "remember (/srv/app/cache.py:21)",
        "before": (1 << 20) // 100,
        "after": (3 << 20) // 100,
        "growth": (3 << 20) // 100 - (1 << 20) // 100,
        "held": (1 << 20) // 100,
        "bound": False,
    }
    assert data["by_type"] is None


def test_the_gcheap_pair_of_one_event(capsys, tmp_path):
    census = census_files({"app.Session": 9_000, "dict": 4_000}, growth={"app.Session": 3_000})
    folder = write_bundle(
        tmp_path,
        rule="gcheap",
        baseline=10,
        value=14,
        files={
            "heap.pb.gz": pprof(heap_profile(BEFORE)),
            "heap-2.pb.gz": pprof(heap_profile(AFTER)),
            **census,
        },
    )

    result = cli(capsys, "diff", folder.name, "--from", str(tmp_path))

    assert result.code == 0, result.err
    assert result.out.splitlines()[:2] == [
        f"before  {folder.name}/heap.pb.gz",
        f"after   {folder.name}/heap-2.pb.gz",
    ]
    types = result.out[result.out.index("by type") :].splitlines()
    # One census: the growth it recorded against the census before it.
    assert types[2].split() == ["+3,000", "6,000", "9,000", "app.Session"]


def test_two_events_compare_their_censuses_too(capsys, tmp_path):
    a = write_bundle(
        tmp_path,
        rule="mem",
        files={
            "heap.pb.gz": pprof(heap_profile(BEFORE)),
            **census_files({"app.Session": 1_000, "dict": 4_000, "list": 3_000}),
        },
    )
    b = write_bundle(
        tmp_path,
        rule="mem",
        files={
            "heap.pb.gz": pprof(heap_profile(AFTER)),
            **census_files({"app.Session": 5_000, "dict": 4_100, "app.Conn": 1_500}),
        },
    )

    data = json.loads(cli(capsys, "diff", str(a), str(b), "--json").out)

    by_type = {row["name"]: row for row in data["by_type"]}
    assert by_type["app.Session"]["growth"] == 4_000
    assert by_type["dict"]["growth"] == 100
    # app.Conn was below A's listed top: it had at most A's smallest listed count.
    assert by_type["app.Conn"] == {
        "name": "app.Conn", "before": 1_000, "after": 1_500, "growth": 500, "bound": True
    }  # fmt: skip
    # list fell below B's listed top: it has at most B's smallest listed count.
    assert by_type["list"] == {
        "name": "list", "before": 3_000, "after": 1_500, "growth": -1_500, "bound": True
    }  # fmt: skip
    table = cli(capsys, "diff", str(a), str(b)).out
    assert ">=+500" in table
    assert "<=-1,500" in table


def test_one_event_without_a_pair_needs_b(capsys, tmp_path):
    folder = write_bundle(tmp_path, rule="mem", files={"heap.pb.gz": pprof(heap_profile(BEFORE))})

    result = cli(capsys, "diff", str(folder))

    assert result.code == 2
    assert "one heap profile only; diff needs B" in result.err


def test_profiles_without_a_common_sample_type(capsys, tmp_path):
    heap = write(tmp_path / "heap.pb.gz", BEFORE)
    cpu = tmp_path / "cpu.pb.gz"
    cpu.write_bytes(pprof(cpu_profile({("main",): 10_000_000})))

    result = cli(capsys, "diff", str(heap), str(cpu))

    assert result.code == 1
    assert "the two profiles share no sample type" in result.err


@pytest.mark.parametrize(
    ("make", "message", "code"),
    [
        (lambda p: p.write_bytes(b"{}"), "not a pprof profile", 1),
        (lambda p: None, "no such event", 1),
    ],
)
def test_a_corrupt_or_missing_side_is_one_line(capsys, tmp_path, make, message, code):
    good = write(tmp_path / "good.pb.gz", BEFORE)
    other = tmp_path / "other.pb.gz"
    make(other)

    result = cli(
        capsys,
        "diff",
        str(good),
        str(other) if other.exists() else "20991231T000000",
        "--from",
        str(tmp_path),
    )

    assert result.code == code
    assert message in result.err
    assert len(result.err.splitlines()) == 1


def test_an_event_without_heap_profile(capsys, tmp_path):
    folder = write_bundle(tmp_path, rule="thread", files={"threads.txt": b""})
    good = write(tmp_path / "good.pb.gz", BEFORE)

    result = cli(capsys, "diff", str(good), str(folder))

    assert result.code == 1
    assert "the event has no heap profile" in result.err


def test_a_census_without_an_earlier_one_is_said(capsys, tmp_path):
    folder = write_bundle(
        tmp_path,
        rule="gcheap",
        baseline=10,
        value=14,
        files={
            "heap.pb.gz": pprof(heap_profile(BEFORE)),
            "heap-2.pb.gz": pprof(heap_profile(AFTER)),
            **census_files({"dict": 4_000}),
        },
    )

    out = cli(capsys, "diff", str(folder)).out

    assert out.splitlines()[-1] == "by type: heap-types.txt has no previous census to compare with"

"""`holmespy top FILE`: the hottest functions of a profile, checked against `go tool pprof`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import go_pprof_top
from test_cli_support import clean_env, cli, cpu_profile, gzipped, heap_profile, pprof, script

# Four seconds of CPU: render_report 2.5 s itself, its helper escape 0.5 s, parse 1 s.
STACKS = {
    ("main", "serve", "render_report"): 2_500_000_000,
    ("main", "serve", "render_report", "escape"): 500_000_000,
    ("main", "serve", "parse"): 1_000_000_000,
}


@pytest.fixture
def cpu_file(tmp_path: Path) -> Path:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(pprof(cpu_profile(STACKS)))
    return path


def test_self_and_cumulative_per_function(capsys, cpu_file):
    result = cli(capsys, "top", str(cpu_file))

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == (
        f"{cpu_file}: cpu/nanoseconds; also in the file: samples (-i TYPE); total 4.00 s"
    )
    assert lines[1].split() == ["self", "self%", "sum%", "cum", "cum%", "function", "file"]
    rows = [line.split() for line in lines[2:]]
    assert [row[7] for row in rows] == ["render_report", "parse", "escape", "main", "serve"]
    # The hottest spent 2.5 s itself and 3 s with escape, which it calls.
    assert rows[0] == [
        "2.50", "s", "62.5%", "62.5%", "3.00", "s", "75.0%", "render_report", "/srv/app/handlers.py"
    ]  # fmt: skip
    # sum% adds up self% down the table.
    assert [row[3] for row in rows] == ["62.5%", "87.5%", "100.0%", "100.0%", "100.0%"]


def test_the_numbers_agree_with_go_tool_pprof(capsys, cpu_file):
    ours = json.loads(cli(capsys, "top", str(cpu_file), "--json").out)
    theirs = go_pprof_top(cpu_file)

    by_name = {f["function"]: f for f in ours["functions"]}
    assert [row.function for row in theirs if row.flat] == [
        f["function"] for f in ours["functions"] if f["self"]
    ]
    for row in theirs:
        assert by_name[row.function]["self"] / 1e9 == pytest.approx(row.flat, rel=0.01)
        assert by_name[row.function]["cum"] / 1e9 == pytest.approx(row.cum, rel=0.01)


def test_json_has_every_figure(capsys, cpu_file):
    data = json.loads(cli(capsys, "top", str(cpu_file), "--json", "-n", "2").out)

    assert data["sample_type"] == "cpu"
    assert data["unit"] == "nanoseconds"
    assert data["total"] == 4_000_000_000
    assert data["functions"] == [
        {
            "function": "render_report",
            "file": "/srv/app/handlers.py",
            "self": 2_500_000_000,
            "cum": 3_000_000_000,
            "self_percent": 62.5,
            "cum_percent": 75.0,
        },
        {
            "function": "parse",
            "file": "/srv/app/handlers.py",
            "self": 1_000_000_000,
            "cum": 1_000_000_000,
            "self_percent": 25.0,
            "cum_percent": 25.0,
        },
    ]


def test_sort_by_cumulative_and_choose_the_sample_type(capsys, cpu_file):
    by_cum = json.loads(cli(capsys, "top", str(cpu_file), "--json", "--cum").out)
    samples = json.loads(cli(capsys, "top", str(cpu_file), "--json", "-i", "samples").out)

    assert [f["function"] for f in by_cum["functions"]][:3] == ["main", "serve", "render_report"]
    assert samples["unit"] == "count"
    assert samples["total"] == 400  # one sample per 10 ms


def test_a_recursive_function_counts_once_per_sample(capsys, tmp_path):
    path = tmp_path / "rec.pb.gz"
    path.write_bytes(pprof(cpu_profile({("main", "walk", "walk", "walk"): 1_000_000_000})))

    data = json.loads(cli(capsys, "top", str(path), "--json").out)

    walk = next(f for f in data["functions"] if f["function"] == "walk")
    assert walk["cum"] == walk["self"] == 1_000_000_000


def test_a_heap_profile_in_bytes(capsys, tmp_path):
    path = tmp_path / "heap.pb.gz"
    path.write_bytes(pprof(heap_profile({("main", "remember"): 3 << 20, ("main", "log"): 1024})))

    out = cli(capsys, "top", str(path), "-n", "1").out.splitlines()

    assert out[0].endswith(
        "inuse_space/bytes; also in the file: inuse_objects (-i TYPE); total 3.0 MiB"
    )
    assert out[2].split()[:4] == ["3.0", "MiB", "100.0%", "100.0%"]
    assert out[2].split()[7] == "remember"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a pprof profile: the data is empty"),
        (b"PK\x03\x04 a zip file", "not a pprof profile (neither gzip nor valid profile.proto)"),
        (gzipped(b"\xff" * 40), "corrupt pprof profile"),
        (b"\x1f\x8b\x08\x00\x00\x00", "corrupt pprof profile: the gzip stream is truncated"),
    ],
)
def test_a_corrupt_or_foreign_file_is_one_line_exit_1(capsys, tmp_path, content, message):
    path = tmp_path / "x.pb.gz"
    path.write_bytes(content)

    result = cli(capsys, "top", str(path))

    assert result.code == 1
    assert result.err.startswith(f"holmespy: {path}: {message}")
    assert len(result.err.splitlines()) == 1


def test_missing_file_folder_and_unknown_type(capsys, tmp_path, cpu_file):
    missing = cli(capsys, "top", str(tmp_path / "nope.pb.gz"))
    folder = cli(capsys, "top", str(tmp_path))
    unknown = cli(capsys, "top", str(cpu_file), "-i", "alloc_space")

    assert (missing.code, folder.code, unknown.code) == (1, 2, 2)
    assert "no such file" in missing.err
    assert "is a folder" in folder.err
    assert "sample type 'alloc_space' is not in the profile (it has samples, cpu)" in unknown.err


def test_the_console_script_reads_a_profile(cpu_file):
    result = script("top", str(cpu_file), "-n", "1", env=clean_env())

    assert result.code == 0, result.err
    assert "render_report" in result.out.splitlines()[2]

"""Hostile files through `top`, `show`, `flame`, `diff`, `ls -l` and `fetch`.

Each file here is built to exhaust something: memory (gzip bombs, a profile
of tens of millions of samples), the stack (nested brackets), the chart's
arithmetic (NaN, Infinity, 1e300), the screen (millions of samples). Each
must be refused, or shown within bounds, in one line naming the file and
the limit, exit status 1, and never a traceback; the bombs are read under a
memory limit, as a small on-call laptop would have.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from test_cli_support import cli, cpu_profile, pprof, write_bundle

from holmespy.cli.reading import EVENT_JSON_DEPTH, load_event_json

MEMORY_LIMIT = 1 << 30
"""Address space the CLI gets in the bomb tests: 30 times what it needs to start."""


def gzip_stream(chunk: bytes, times: int) -> bytes:
    """`chunk` repeated `times` times, gzipped without ever holding the whole."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [deflate.compress(chunk) for _ in range(times)]
    out.append(deflate.flush())
    return b"".join(out)


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def message(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def minimal_profile_head() -> bytes:
    """A valid profile.proto with one sample type, one function and one location."""
    strings = b"".join(message(6, s) for s in (b"", b"f", b"cpu", b"ns"))
    sample_type = message(1, varint(1 << 3) + varint(2) + varint(2 << 3) + varint(3))
    function = message(5, varint(1 << 3) + varint(1) + varint(2 << 3) + varint(1))
    location = message(4, varint(1 << 3) + varint(1) + message(4, varint(1 << 3) + varint(1)))
    return strings + sample_type + function + location


def under_memory_limit(*argv: str) -> subprocess.CompletedProcess[str]:
    """`holmespy ARGV...` in a child whose address space is capped at MEMORY_LIMIT."""
    program = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
        "from holmespy.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def rewrite_event(folder: Path, **changes: object) -> None:
    """Change fields of a published bundle's event.json, as a forger would."""
    path = folder / "event.json"
    event = json.loads(path.read_bytes())
    event.update(changes)
    path.write_text(json.dumps(event))


def one_line(text: str) -> str:
    lines = text.strip().split("\n")
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- memory --


@pytest.fixture(scope="module")
def zeros_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 1 MiB on disk, 1 GiB of zeros once decompressed."""
    path = tmp_path_factory.mktemp("bomb") / "cpu.pb.gz"
    path.write_bytes(gzip_stream(bytes(1 << 20), 1024))
    return path


@pytest.mark.parametrize("verb", ["top", "flame", "diff"])
def test_a_gzip_bomb_is_refused_at_the_size_cap_under_a_memory_limit(
    zeros_bomb: Path, verb: str, tmp_path: Path
) -> None:
    argv = {
        "top": ["top", str(zeros_bomb)],
        "flame": ["flame", str(zeros_bomb), "-o", str(tmp_path / "out.html")],
        "diff": ["diff", str(zeros_bomb), str(zeros_bomb)],
    }[verb]
    result = under_memory_limit(*argv)

    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr)
    assert line == (
        f"holmespy: {zeros_bomb}: larger than 256 MiB once decompressed;"
        " raise the limit with --max-size if you trust the file"
    )


def test_a_gzip_bomb_in_a_bundle_is_refused_in_its_place_by_show(
    zeros_bomb: Path, tmp_path: Path
) -> None:
    folder = write_bundle(tmp_path, rule="cpu", files={"cpu.pb.gz": zeros_bomb.read_bytes()})

    result = under_memory_limit("show", str(folder))

    assert result.returncode == 0, result.stderr
    assert "── cpu.pb.gz: cannot be read" in result.stdout
    assert "cpu.pb.gz: larger than 256 MiB once decompressed" in result.stdout
    assert result.stdout.startswith("event    ")


def test_a_valid_profile_of_tens_of_millions_of_samples_is_refused_by_its_memory_budget(
    tmp_path: Path,
) -> None:
    # 25 million identical 8-byte samples: 200 MiB decompressed, under the size
    # cap, but about 10 GiB of Python objects once decoded.
    sample = message(2, message(1, varint(1)) + message(2, varint(1)))
    per_chunk = (1 << 20) // len(sample)
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(gzip.compress(minimal_profile_head()) + gzip_stream(sample * per_chunk, 200))

    result = under_memory_limit("top", str(path))

    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr)
    assert "decoding more than 2,097,152 messages would take more than 1024 MiB" in line
    assert "raise the limit with --max-size" in line


def test_max_size_refuses_and_raises_the_limit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(pprof(cpu_profile({("main", f"handler_{n}"): 10**9 for n in range(40)})))
    assert len(gzip.decompress(path.read_bytes())) > 1024

    refused = cli(capsys, "top", str(path), "--max-size", "1KiB")
    allowed = cli(capsys, "top", str(path), "--max-size", "1MiB")

    assert refused.code == 1
    assert "larger than 1,024 bytes once decompressed" in one_line(refused.err)
    assert allowed.code == 0
    assert "handler_0" in allowed.out


def test_a_bad_max_size_is_bad_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = cli(capsys, "top", str(tmp_path / "x.pb.gz"), "--max-size", "lots")
    assert result.code == 2
    assert "--max-size" in one_line(result.err)


def test_a_text_dump_beyond_the_cap_is_refused_in_its_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_bundle(tmp_path, rule="thread", files={"threads.txt": b"x" * 4096})

    result = cli(capsys, "show", str(folder), "--max-size", "1KiB")

    assert result.code == 0
    assert "── threads.txt: cannot be read" in result.out
    assert "threads.txt: larger than 1,024 bytes, the most holmespy reads;" in result.out


# -- event.json: depth, size, numbers --


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_nested_brackets_in_event_json_are_one_line_in_show(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_bundle(tmp_path / "dumps", rule="cpu")
    (folder / "event.json").write_bytes(b'{"a": ' + nested(100_000) + b"}")

    result = cli(capsys, "show", folder.name, "--from", str(tmp_path / "dumps"))

    assert result.code == 1
    assert f"corrupt event.json: nested deeper than {EVENT_JSON_DEPTH} levels" in one_line(
        result.err
    )


def test_nested_brackets_in_event_json_are_a_warning_in_ls_long_and_fetch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dumps = tmp_path / "dumps"
    bad = write_bundle(dumps, rule="cpu")
    (bad / "event.json").write_bytes(b'{"a": ' + nested(50) + b"}")
    write_bundle(dumps, rule="mem")

    listed = cli(capsys, "ls", "-l", "--from", str(dumps))
    fetched = cli(capsys, "fetch", bad.name, "--from", str(dumps), "-o", str(tmp_path / "o"))

    assert listed.code == 0
    assert "nested deeper than 32 levels" in listed.err
    assert len(listed.out.strip().split("\n")) == 3  # the header and both events
    assert "(corrupt event.json)" in listed.out
    assert fetched.code == 0
    assert "deeper than 32 levels" in fetched.err
    assert "Traceback" not in listed.err + fetched.err


def test_a_real_event_json_nests_well_within_the_limit(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path, rule="cpu", captures={"cpu": {"engine": "sampler"}})
    assert load_event_json((folder / "event.json").read_bytes())["rule"] == "cpu"


def test_an_event_json_beyond_4_mib_is_refused_naming_the_limit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_bundle(tmp_path / "dumps", rule="cpu", padding="x" * (5 << 20))

    shown = cli(capsys, "show", str(folder))
    listed = cli(capsys, "ls", "-l", "--from", str(tmp_path / "dumps"))

    assert shown.code == 1
    assert one_line(shown.err) == (
        f"holmespy: {folder}/event.json: larger than 4 MiB, the most holmespy reads"
    )
    assert "corrupt event.json: larger than 4 MiB" in listed.err


def test_three_million_history_samples_are_refused_not_printed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_bundle(tmp_path, rule="cpu")
    sample = b'{"time": "2026-01-01T00:00:00.000Z", "value": 42}'
    history = b"[" + b", ".join([sample] * 3_000_000) + b"]"
    text = (
        (folder / "event.json")
        .read_bytes()
        .replace(b'"history": [', b'"history": ' + history + b', "was": [', 1)
    )
    (folder / "event.json").write_bytes(text)

    result = cli(capsys, "show", str(folder))

    assert result.code == 1
    assert "larger than 4 MiB" in one_line(result.err)
    assert result.out == ""


def test_a_long_history_is_charted_in_bounded_width(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    samples = [{"time": "2026-01-01T00:00:00.000Z", "value": n % 100} for n in range(50_000)]
    folder = write_bundle(tmp_path, rule="cpu", history=samples)

    result = cli(capsys, "show", str(folder))

    assert result.code == 0, result.err
    assert "50,000 samples, the last 60 shown, the firing one last" in result.out
    assert max(len(line) for line in result.out.split("\n")) <= 240


@pytest.mark.parametrize(
    ("tokens", "valid"),
    [
        (["1", "NaN", "3", "4"], 3),
        (["1", "Infinity", "-Infinity", "4"], 2),
        (["1", "1e999", "3", "4"], 3),
        (["1", "1e300", "-1e300", "4"], 2),
        (["1", "9" * 400, "3", "4"], 3),
    ],
    ids=["nan", "infinity", "overflowing-float", "huge-floats", "huge-int"],
)
def test_invalid_numbers_in_the_history_are_left_out_of_the_chart(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tokens: list[str], valid: int
) -> None:
    folder = write_bundle(tmp_path, rule="cpu")
    event = json.loads((folder / "event.json").read_bytes())
    event["history"] = "@history"
    event["thresholds"]["average"] = "@average"
    # Written by hand: json.dumps would not write these tokens as numbers.
    history = ", ".join(
        f'{{"time": "2026-01-01T00:00:0{n}Z", "value": {t}}}' for n, t in enumerate(tokens)
    )
    text = json.dumps(event).replace('"@history"', f"[{history}]").replace('"@average"', tokens[1])
    (folder / "event.json").write_text(text)

    result = cli(capsys, "show", str(folder))

    assert result.code == 0, result.err
    assert (
        f"history  CPU use, % of usable cores, {valid} samples, the firing one last" in result.out
    )
    assert max(len(line) for line in result.out.split("\n")) <= 240


def test_odd_shapes_of_event_json_are_shown_as_far_as_they_make_sense(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_bundle(tmp_path / "dumps", rule="cpu")
    rewrite_event(
        folder,
        history=7,
        thresholds=[1, 2],
        captures=["cpu"],
        limits="none",
        files=12,
        value={"a": 1},
        versions=None,
    )

    shown = cli(capsys, "show", str(folder))
    listed = cli(capsys, "ls", "-l", "--from", str(tmp_path / "dumps"))

    assert shown.code == 0, shown.err
    assert listed.code == 0, listed.err
    assert "Traceback" not in shown.err + listed.err


def test_files_listed_with_hostile_names_are_never_looked_up_outside_the_bundle(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    names = ["/etc/passwd", "../../outside", "nul\x00byte", 42, "ok.txt"]
    folder = write_bundle(tmp_path, rule="cpu")
    rewrite_event(folder, files=[{"name": n} for n in names])

    result = cli(capsys, "show", str(folder))

    assert result.code == 0, result.err
    line = next(x for x in result.out.split("\n") if x.startswith("!! listed in event.json"))
    assert "/etc/passwd" in line  # reported missing: not looked up at /etc/passwd
    assert "nul\\x00byte" in line


def test_a_count_of_five_thousand_digits_in_an_old_text_dump_is_shown_cut(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tasks = f"[1] {'9' * 5000} tasks on loop 1\n    wait (app.py:1)\n".encode()
    folder = write_bundle(tmp_path, rule="task", files={"tasks.txt": tasks})

    result = cli(capsys, "show", str(folder))

    assert result.code == 0, result.err
    [line] = [line for line in result.out.splitlines() if line.startswith("  [1] 999")]
    # Shown as written, cut to a bounded line; never read as a count.
    assert len(line) < 1000
    assert line.endswith("…")
    assert "      wait (app.py:1)" in result.out


def test_a_count_of_five_thousand_digits_in_tasks_json_is_left_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    group = '{"count": ' + "9" * 5000 + ', "chain": [], "loops": [[1, 1]], "tasks": []}'
    raw = ('{"total": 1, "groups": [' + group + "]}").encode()
    folder = write_bundle(tmp_path, rule="task", files={"tasks.txt": b"", "tasks.json": raw})

    result = cli(capsys, "show", str(folder))

    assert result.code == 0, result.err
    assert "!! tasks.json: groups[0].count: null (None), not a non-negative integer" in result.out
    assert "1 task in 0 groups" in result.out


def test_a_profile_exactly_at_the_cap_is_read_and_one_byte_more_is_not(tmp_path: Path) -> None:
    from holmespy.formats.pprof import ProfileTooLarge, decode

    # A long name makes bytes, not messages, the measure (the memory budget stays clear).
    raw = gzip.decompress(pprof(cpu_profile({("main", "w" * 4000): 10**9})))
    two_members = gzip.compress(raw[:100]) + gzip.compress(raw[100:])

    assert decode(two_members, max_size=len(raw)).samples
    with pytest.raises(ProfileTooLarge, match=f"larger than {len(raw) - 1:,} bytes"):
        decode(two_members, max_size=len(raw) - 1)

"""pprof's profile.proto: our own encoder and decoder, checked against Go's tools.

Three kinds of evidence:

* round trips and byte-level checks of what `encode` writes, read back with a
  tiny independent protobuf reader defined here (so a bug shared by our
  encoder and decoder cannot hide);
* profiles from other writers: hand-built messages using protobuf features we
  never write (unpacked repeats, inlined lines, numeric labels, unknown
  fields), and real profiles written by Go's runtime/pprof;
* `go tool pprof`, the reference consumer, reading files we wrote.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from holmespy.errors import HolmesError
from holmespy.formats.pprof import ProfileFormatError, decode, encode, read_pprof, write_pprof
from holmespy.formats.profile import Frame, Profile, ValueType

# --------------------------------------------------------------------------- helpers

MAIN = Frame("app.server.serve_forever", "/srv/app/server.py", 40, 31)
HANDLE = Frame("app.handlers.render_report", "/srv/app/handlers.py", 88, 80)
QUERY = Frame("app.db.query", "/srv/app/db.py", 12, 5)
QUERY_LATER = Frame("app.db.query", "/srv/app/db.py", 17, 5)  # same function, another line
ENCODE = Frame("json.encoder.JSONEncoder.encode", "/usr/lib/python3.11/json/encoder.py", 199, 183)
WORKER = Frame("threading.Thread.run", "/usr/lib/python3.11/threading.py", 975, 964)
IDLE = Frame("selectors.EpollSelector.select", "/usr/lib/python3.11/selectors.py", 468, 451)


def realistic_profile() -> Profile:
    """What the in-process sampler produces: three threads sharing frames, two
    value columns, labels beyond the thread name, and all time fields set."""
    p = Profile(
        sample_types=(ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        time_nanos=1_764_000_000_123_456_789,
        duration_nanos=5_000_000_000,
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
        default_sample_type="cpu",
        comments=["holmespy 0.1.0", "rule=cpu value=93% threshold=80%"],
    )
    p.add((IDLE, MAIN), (4, 40_000_000), thread="MainThread")
    p.add((QUERY, HANDLE, WORKER), (7, 70_000_000), thread="worker-1", task="GET /report")
    p.add((QUERY_LATER, HANDLE, WORKER), (2, 20_000_000), thread="worker-1", task="GET /report")
    p.add((ENCODE, HANDLE, WORKER), (3, 30_000_000), thread="worker-2")
    p.add((QUERY, HANDLE, WORKER), (1, 10_000_000), thread="worker-2")
    p.add((HANDLE, WORKER), (6, 60_000_000), thread="worker-2")
    return p


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field: ints as varints, bytes/str as length-delimited."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    payload = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def packed(number: int, values: list[int]) -> bytes:
    return field(number, b"".join(varint(v) for v in values))


def strings(*table: str) -> bytes:
    return b"".join(field(6, s) for s in table)


def read_fields(data: bytes) -> list[tuple[int, Any]]:
    """Independent reader for the checks below: (field number, int or raw bytes)."""
    fields: list[tuple[int, Any]] = []
    pos = 0

    def read_varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(data):
        key = read_varint()
        assert key & 7 in (0, 2), f"we never write wire type {key & 7}"
        if key & 7 == 0:
            fields.append((key >> 3, read_varint()))
        else:
            size = read_varint()
            fields.append((key >> 3, data[pos : pos + size]))
            pos += size
    return fields


def submessages(data: bytes, number: int) -> list[dict[int, list[Any]]]:
    """Every field `number` of `data`, each parsed into {field: [values]}."""
    found = []
    for n, value in read_fields(data):
        if n == number:
            assert isinstance(value, bytes)
            parsed: dict[int, list[Any]] = {}
            for sub_n, sub_value in read_fields(value):
                parsed.setdefault(sub_n, []).append(sub_value)
            found.append(parsed)
    return found


# --------------------------------------------------------------------------- round trip


def test_a_realistic_profile_survives_a_round_trip_unchanged() -> None:
    profile = realistic_profile()
    assert decode(encode(profile)) == profile


def test_the_round_trip_keeps_frame_details_and_labels() -> None:
    back = decode(encode(realistic_profile()))
    sample = back.samples[1]
    assert sample.stack == (QUERY, HANDLE, WORKER)  # innermost first, start lines kept
    assert sample.labels == {"thread": "worker-1", "task": "GET /report"}
    assert back.period_type == ValueType("cpu", "nanoseconds")
    assert back.comments == ["holmespy 0.1.0", "rule=cpu value=93% threshold=80%"]


def test_negative_values_and_odd_strings_survive() -> None:
    # Diff profiles carry negative values; names can hold any Unicode.
    odd = Frame("módulo.función<lambda>", "/srv/app/ñ.py", 1)
    p = Profile((ValueType("delta", "bytes"),))
    p.add((odd,), (-4096,), thread="Thread-7 (worker)")
    p.add((), (12,))
    assert decode(encode(p)) == p


def test_an_empty_profile_round_trips() -> None:
    p = Profile((ValueType("cpu", "nanoseconds"),))
    assert decode(encode(p)) == p


def test_write_pprof_creates_a_private_file_and_read_pprof_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "cpu.pb.gz"
    write_pprof(realistic_profile(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_pprof(path) == realistic_profile()


def test_write_pprof_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError):
        write_pprof(realistic_profile(), path)
    assert path.read_bytes() == b"someone else's file"


# --------------------------------------------------------------------------- what encode writes


def test_output_is_gzip_with_a_zero_mtime_and_is_deterministic() -> None:
    first = encode(realistic_profile())
    assert first[:2] == b"\x1f\x8b"
    assert first[4:8] == b"\0\0\0\0"  # mtime: same bytes today and tomorrow
    assert encode(realistic_profile()) == first


def test_label_order_does_not_change_the_bytes() -> None:
    a = Profile((ValueType("samples", "count"),))
    a.add((QUERY,), (1,), thread="t", task="x")
    b = Profile((ValueType("samples", "count"),))
    b.add((QUERY,), (1,), task="x", thread="t")
    assert encode(a) == encode(b)


def test_functions_and_locations_are_deduplicated() -> None:
    raw = gzip.decompress(encode(realistic_profile()))
    locations = submessages(raw, 4)
    functions = submessages(raw, 5)
    # 7 distinct (function, line) pairs, but QUERY and QUERY_LATER share a function.
    assert len(locations) == 7
    assert len(functions) == 6
    table = [v for n, v in read_fields(raw) if n == 6]
    names = [table[f[2][0]] for f in functions]
    assert sorted(names) == sorted(
        {f.function.encode() for f in (MAIN, HANDLE, QUERY, ENCODE, WORKER, IDLE)}
    )


def test_one_frame_repeated_over_many_samples_is_one_location() -> None:
    p = Profile((ValueType("samples", "count"),))
    for i in range(1000):
        p.add((QUERY, HANDLE), (1,), thread=f"t{i % 3}")
    raw = gzip.decompress(encode(p))
    assert len(submessages(raw, 4)) == 2
    assert len(submessages(raw, 5)) == 2
    assert len(submessages(raw, 2)) == 1000  # samples are kept, not merged


def test_the_layout_is_what_pprof_consumers_expect() -> None:
    raw = gzip.decompress(encode(realistic_profile()))
    table = [v for n, v in read_fields(raw) if n == 6]
    assert table[0] == b"", "string_table[0] must be the empty string"

    (mapping,) = submessages(raw, 3)
    assert mapping[1] == [1]
    assert mapping[7] == mapping[8] == mapping[9] == [1], "has_functions/filenames/line_numbers"

    for location in submessages(raw, 4):
        assert location[2] == [1], "every location points at mapping 1"
        assert len(location[4]) == 1, "one line per location: Python has no inlining"

    for function in submessages(raw, 5):
        assert function[2] == function[3], "name and system_name are the same"
        assert table[function[4][0]].endswith(b".py")

    top = dict(read_fields(raw))
    assert top[9] == 1_764_000_000_123_456_789  # time_nanos
    assert top[10] == 5_000_000_000  # duration_nanos
    assert top[12] == 10_000_000  # period
    assert table[top[14]] == b"cpu"


def test_100k_samples_over_shared_stacks_round_trip() -> None:
    # 1,000 distinct stacks of 5-29 frames drawn from 300 functions, shared as
    # the sampler shares them. How long this takes is a benchmark's business
    # (python -m benchmarks.pprof_encode), not a test's.
    pool = [
        Frame(f"app.mod{i % 37}.func_{i}", f"/srv/app/mod{i % 37}.py", i, i) for i in range(300)
    ]
    stacks = [tuple(pool[(s * 7 + k * 13) % 300] for k in range(5 + s % 25)) for s in range(1000)]
    p = Profile((ValueType("samples", "count"), ValueType("cpu", "nanoseconds")))
    for i in range(100_000):
        p.add(stacks[(i * 7919) % 1000], (1, 10_000_000), thread=f"worker-{i % 8}")
    decoded = decode(encode(p))
    assert len(decoded.samples) == 100_000
    assert [(s.stack, s.values, s.labels) for s in decoded.samples] == [
        (s.stack, s.values, s.labels) for s in p.samples
    ]


# --------------------------------------------------------------------------- foreign profiles


def test_raw_uncompressed_protobuf_is_accepted() -> None:
    raw = gzip.decompress(encode(realistic_profile()))
    assert decode(raw) == realistic_profile()


def test_unpacked_repeated_fields_and_unknown_fields_are_read() -> None:
    sample = (
        field(1, 2)  # location_id, one field per value as old writers do
        + field(1, 1)
        + field(2, 5)  # value
        + field(3, field(1, 3) + field(2, 4))  # label thread=MainThread
        + field(15, 99)  # unknown varint
    )
    data = (
        field(1, field(1, 1) + field(2, 2))  # sample_type samples/count
        + field(2, sample)
        + field(4, field(1, 1) + field(4, field(1, 1) + field(2, 30)))
        + field(4, field(1, 2) + field(4, field(1, 1) + field(2, 10)))
        + field(5, field(1, 1) + field(2, 5) + field(4, 6))
        + strings("", "samples", "count", "thread", "MainThread", "main.run", "main.go")
        + field(100, b"a field from a future version")
        + varint(101 << 3 | 5)
        + b"\0\0\0\0"  # fixed32
        + varint(102 << 3 | 1)
        + b"\0" * 8  # fixed64
    )
    p = decode(data)
    assert p.sample_types == (ValueType("samples", "count"),)
    (s,) = p.samples
    assert s.values == (5,)
    assert s.labels == {"thread": "MainThread"}
    assert s.stack == (Frame("main.run", "main.go", 10), Frame("main.run", "main.go", 30))


def test_an_inlined_location_becomes_several_frames_inner_first() -> None:
    # Location 1 is `inner` inlined into `outer`: the first Line is the callee.
    data = (
        field(1, field(1, 1) + field(2, 2))
        + field(2, packed(1, [1, 2]) + packed(2, [9]))
        + field(
            4,
            field(1, 1) + field(4, field(1, 1) + field(2, 3)) + field(4, field(1, 2) + field(2, 7)),
        )
        + field(4, field(1, 2) + field(4, field(1, 3) + field(2, 20)))
        + field(5, field(1, 1) + field(2, 3) + field(4, 6))
        + field(5, field(1, 2) + field(3, 4) + field(4, 6))  # only system_name set
        + field(5, field(1, 3) + field(2, 5) + field(4, 6) + field(5, 18))
        + strings("", "samples", "count", "inner", "outer", "main.main", "x.go")
    )
    (s,) = decode(data).samples
    assert s.stack == (
        Frame("inner", "x.go", 3),
        Frame("outer", "x.go", 7),
        Frame("main.main", "x.go", 20, 18),
    )


def test_numeric_labels_are_kept_as_strings() -> None:
    data = (
        field(1, field(1, 1) + field(2, 2))
        + field(2, packed(2, [1]) + field(3, field(1, 3) + field(3, 4096)))
        + field(2, packed(2, [1]) + field(3, field(1, 4) + field(3, 512) + field(4, 2)))
        + strings("", "alloc_space", "bytes", "bytes_num", "size")
    )
    first, second = decode(data).samples
    assert first.labels == {"bytes_num": "4096"}
    assert second.labels == {"size": "512 bytes"}  # num_unit appended


def test_a_location_without_lines_is_named_by_its_address() -> None:
    data = (
        field(1, field(1, 1) + field(2, 2))
        + field(2, packed(1, [1]) + packed(2, [1]))
        + field(3, field(1, 1) + field(5, 3))
        + field(4, field(1, 1) + field(2, 1) + field(3, 0x4A5F10))
        + strings("", "samples", "count", "/usr/bin/server")
    )
    (s,) = decode(data).samples
    assert s.stack == (Frame("0x4a5f10", "/usr/bin/server"),)


# --------------------------------------------------------------------------- corrupt input

VALID_RAW = gzip.decompress(encode(realistic_profile()))
ONE_TYPE = field(1, field(1, 1) + field(2, 2))
TABLE = strings("", "samples", "count")

CORRUPT = {
    "empty file": (b"", "not a pprof profile: the data is empty"),
    "a text file": (b"hello, this is a README\n", "not a pprof profile"),
    "a JSON file": (b'{"traceEvents": []}', "not a pprof profile"),
    "truncated gzip": (encode(realistic_profile())[:-30], "gzip stream is truncated"),
    "damaged gzip": (b"\x1f\x8b\x08\x00" + b"\xff" * 40, "gzip stream is damaged"),
    "gzipped text": (gzip.compress(b"just some text\n"), "corrupt pprof profile"),
    "empty gzip": (gzip.compress(b""), "the gzip stream is empty"),
    "varint overflow": (gzip.compress(b"\x48" + b"\xff" * 11), "longer than 10 bytes"),
    "truncated protobuf": (VALID_RAW[: len(VALID_RAW) // 2], "bytes but only"),
    "no string table": (gzip.compress(field(9, 5)), "no string table"),
    "string index out of range": (
        gzip.compress(field(1, field(1, 1) + field(2, 77)) + TABLE),
        "string 77, outside the string table (3 strings)",
    ),
    "missing location": (
        gzip.compress(ONE_TYPE + field(2, packed(1, [42]) + packed(2, [1])) + TABLE),
        "location 42, which is not defined",
    ),
    "missing function": (
        gzip.compress(
            ONE_TYPE
            + field(2, packed(1, [1]) + packed(2, [1]))
            + field(4, field(1, 1) + field(4, field(1, 8)))
            + TABLE
        ),
        "function 8, which is not defined",
    ),
    "wrong number of values": (
        gzip.compress(ONE_TYPE + field(2, packed(2, [1, 2])) + TABLE),
        "2 values for 1 sample types",
    ),
    "group wire type": (gzip.compress(TABLE + varint(7 << 3 | 3)), "unsupported wire type 3"),
}


@pytest.mark.parametrize(("data", "reason"), CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_or_foreign_input_gives_one_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(ProfileFormatError) as caught:
        decode(data)
    message = str(caught.value)
    assert reason in message
    assert re.match(r"(not a pprof profile|corrupt pprof profile)", message), message
    assert "\n" not in message
    assert isinstance(caught.value, HolmesError)


def test_read_pprof_names_the_file_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a profile")
    with pytest.raises(ProfileFormatError, match=r"notes\.txt: not a pprof profile"):
        read_pprof(path)


def test_no_prefix_or_damaged_byte_escapes_as_a_raw_exception() -> None:
    # Every truncation and every single-byte change of a valid profile either
    # decodes or raises ProfileFormatError: never IndexError, EOFError, zlib.error...
    small = Profile((ValueType("samples", "count"),), comments=["c"], period=1)
    small.add((QUERY, HANDLE), (3,), thread="t")
    raw = gzip.decompress(encode(small))
    variants = [raw[:cut] for cut in range(len(raw))]
    variants += [raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :] for i in range(len(raw))]
    gz = encode(small)
    variants += [gz[:cut] for cut in range(2, len(gz))]
    for data in variants:
        with contextlib.suppress(ProfileFormatError):
            decode(data)


# --------------------------------------------------------------------------- Go: the reference

GO_PROGRAM = """\
package main

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

var sink [][]byte
var spin uint64

//go:noinline
func allocateReports(n int) {
	for i := 0; i < n; i++ {
		sink = append(sink, make([]byte, 4096))
	}
}

//go:noinline
func burnCPU(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
		for i := uint64(0); i < 10000; i++ {
			spin = spin*31 + i
		}
	}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func main() {
	runtime.MemProfileRate = 1
	allocateReports(100)
	runtime.GC()
	heap, err := os.Create(os.Args[1])
	must(err)
	must(pprof.WriteHeapProfile(heap))
	must(heap.Close())

	cpu, err := os.Create(os.Args[2])
	must(err)
	must(pprof.StartCPUProfile(cpu))
	pprof.Do(context.Background(), pprof.Labels("thread", "burner"), func(context.Context) {
		burnCPU(400 * time.Millisecond)
	})
	pprof.StopCPUProfile()
	must(cpu.Close())
}
"""


@dataclass
class Go:
    exe: str
    env: dict[str, str]
    work: Path

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            [self.exe, *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert proc.returncode == 0, f"go {' '.join(args)} failed:\n{proc.stderr}"
        return proc.stdout

    def pprof(self, *args: str) -> str:
        return self.run("tool", "pprof", *args)


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory) -> Go:
    exe = shutil.which("go")
    if exe is None:
        pytest.skip("go is not installed: apt-get install golang-go to cross-check with Go's pprof")
    work = tmp_path_factory.mktemp("go")
    env = {
        **os.environ,
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",  # never try to download a newer toolchain
        "GOPROXY": "off",  # standard library only: nothing to fetch
        "GOPATH": str(work / "gopath"),
        "GOCACHE": str(work / "gocache"),
        "HOME": str(work),
        "PPROF_TMPDIR": str(work),
    }
    return Go(exe, env, work)


@pytest.fixture(scope="module")
def go_profiles(go: Go) -> tuple[Path, Path]:
    """(heap, cpu) profiles written by Go's own runtime/pprof, one `go run` per module."""
    (go.work / "go.mod").write_text("module holmespytest\n\ngo 1.19\n")
    (go.work / "main.go").write_text(GO_PROGRAM)
    heap, cpu = go.work / "heap.pb.gz", go.work / "cpu.pb.gz"
    go.run("run", ".", str(heap), str(cpu))
    return heap, cpu


@pytest.fixture(scope="module")
def ours(go: Go) -> Path:
    path = go.work / "ours.pb.gz"
    write_pprof(realistic_profile(), path)
    return path


def test_go_heap_profile_is_decoded(go_profiles: tuple[Path, Path]) -> None:
    profile = read_pprof(go_profiles[0])
    assert [t.type for t in profile.sample_types] == [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ]
    assert profile.period_type == ValueType("space", "bytes")
    assert profile.time_nanos > 0
    ours = [s for s in profile.samples if s.stack and s.stack[0].function == "main.allocateReports"]
    assert ours, "the allocating function is the innermost frame of some sample"
    assert sum(s.values[0] for s in ours) >= 100
    assert sum(s.values[1] for s in ours) >= 100 * 4096
    assert ours[0].stack[0].filename.endswith("main.go")
    assert [f.function for f in ours[0].stack[1:]] == ["main.main", "runtime.main"]
    # Go labels heap samples with the block size, a numeric label.
    assert ours[0].labels["bytes"].isdigit()


def test_go_cpu_profile_with_labels_is_decoded(go_profiles: tuple[Path, Path]) -> None:
    profile = read_pprof(go_profiles[1])
    assert profile.sample_types == (ValueType("samples", "count"), ValueType("cpu", "nanoseconds"))
    assert profile.period_type == ValueType("cpu", "nanoseconds")
    assert profile.duration_nanos > 0
    burning = [s for s in profile.samples if any(f.function == "main.burnCPU" for f in s.stack)]
    assert burning, "400 ms of spinning yields CPU samples"
    assert all(s.labels == {"thread": "burner"} for s in burning)


def test_a_go_profile_re_encoded_by_us_still_reads_in_go_tool_pprof(
    go: Go, go_profiles: tuple[Path, Path]
) -> None:
    again = go.work / "heap-again.pb.gz"
    write_pprof(read_pprof(go_profiles[0]), again)
    assert read_pprof(again) == read_pprof(go_profiles[0])
    top = go.pprof("-top", "-sample_index=alloc_space", str(again))
    assert "main.allocateReports" in top


@pytest.fixture(scope="module")
def pprof_top(go: Go, ours: Path) -> str:
    return go.pprof("-top", "-unit=ns", str(ours))


def flat_values(top: str) -> dict[str, int]:
    """`go tool pprof -top` rows as {function: flat value}."""
    rows = re.findall(r"^\s*(\d+)(?:ns)?\s+\S+%\s+\S+%\s+\S+\s+\S+%\s+(\S+)$", top, re.M)
    return {function: int(flat) for flat, function in rows}


def test_go_tool_pprof_reads_our_profile_with_the_expected_flat_values(pprof_top: str) -> None:
    assert "Type: cpu" in pprof_top  # default_sample_type picked the column
    assert "Duration: 5s" in pprof_top
    assert flat_values(pprof_top) == {
        "app.db.query": 100_000_000,
        "app.handlers.render_report": 60_000_000,
        "selectors.EpollSelector.select": 40_000_000,
        "json.encoder.JSONEncoder.encode": 30_000_000,
        "threading.Thread.run": 0,
        "app.server.serve_forever": 0,
    }


def test_go_tool_pprof_sees_the_thread_labels(go: Go, ours: Path) -> None:
    tags = go.pprof("-tags", str(ours))
    thread_section = tags.split(" thread: Total")[1]
    rows = re.findall(r"([\d.]+)ms \(\s*[\d.]+%\): (.+)", thread_section)
    # Go versions print the same total as 90.0ms or 90ms: compare numbers.
    assert {name: float(ms) for ms, name in rows} == {
        "worker-1": 90.0,
        "worker-2": 100.0,
        "MainThread": 40.0,
    }


def test_go_tool_pprof_raw_shows_files_lines_and_labels(go: Go, ours: Path) -> None:
    raw = go.pprof("-raw", str(ours))
    assert "thread:[worker-1]" in raw
    assert "task:[GET /report]" in raw
    # Newer Go adds a column to each location (db.py:12:0): allow either.
    assert re.search(r"app\.db\.query /srv/app/db\.py:12(:0)? s=5", raw)
    assert re.search(r"app\.db\.query /srv/app/db\.py:17(:0)? s=5", raw)
    assert "Comment: holmespy 0.1.0" in raw

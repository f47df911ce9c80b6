"""`holmespy fetch` from a local dump folder: the copy, its checks, and what it refuses."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_support import clean_env, cli, script, write_bundle

from holmespy.cli.fetch import download
from holmespy.cli.source import EventRef, RemoteFile

FILES = {"threads.txt": b"Thread MainThread\n", "cpu.pb.gz": b"\x1f\x8b not really"}


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    root = tmp_path / "dumps"
    now = dt.datetime.now(dt.UTC)
    write_bundle(root, service="api", rule="cpu", when=now - dt.timedelta(hours=2), files=FILES)
    write_bundle(root, service="api", rule="thread", when=now - dt.timedelta(hours=1), files=FILES)
    write_bundle(root, service="worker", rule="mem", when=now, files=FILES)
    return root


def only_bundle(root: Path, rule: str) -> Path:
    (found,) = root.glob(f"*/*/*-{rule}-*")
    return found


def test_copies_the_bundle_to_dir_event_id_and_prints_where(capsys, dumps, tmp_path):
    original = only_bundle(dumps, "thread")
    out = tmp_path / "out"

    result = cli(capsys, "fetch", original.name[:24], "--from", str(dumps), "-o", str(out))

    assert result.code == 0, result.err
    copy = out / original.name
    assert result.out.strip() == str(copy)
    assert sorted(p.name for p in copy.iterdir()) == ["cpu.pb.gz", "event.json", "threads.txt"]
    for name in ("cpu.pb.gz", "event.json", "threads.txt"):
        assert (copy / name).read_bytes() == (original / name).read_bytes()
        assert (copy / name).stat().st_mode & 0o777 == 0o600
    assert copy.stat().st_mode & 0o777 == 0o700
    assert "fetched 3 files" in result.err
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_latest_takes_the_newest_event_matching_the_filters(capsys, dumps, tmp_path):
    newest_api = only_bundle(dumps, "thread")

    result = cli(
        capsys,
        "fetch",
        "--latest",
        "--service",
        "api",
        "--from",
        str(dumps),
        "-o",
        str(tmp_path / "o"),
    )

    assert result.code == 0, result.err
    assert Path(result.out.strip()).name == newest_api.name
    none = cli(capsys, "fetch", "--latest", "--rule", "gcheap", "--from", str(dumps))
    assert none.code == 1
    assert "no event in" in none.err
    assert "matches the filters" in none.err


def test_an_existing_copy_is_kept_unless_forced(capsys, dumps, tmp_path):
    event = only_bundle(dumps, "mem").name
    out = tmp_path / "out"
    assert cli(capsys, "fetch", event, "--from", str(dumps), "-o", str(out)).code == 0
    (out / event / "notes.txt").write_text("mine")

    again = cli(capsys, "fetch", event, "--from", str(dumps), "-o", str(out))
    assert again.code == 1
    assert "already exists (use --force to replace it)" in again.err
    assert (out / event / "notes.txt").exists()

    forced = cli(capsys, "fetch", event, "--from", str(dumps), "-o", str(out), "--force")
    assert forced.code == 0
    assert not (out / event / "notes.txt").exists()


def test_an_ambiguous_prefix_names_the_candidates(capsys, dumps):
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    earlier = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).strftime("%Y%m%d")
    if day != earlier:
        pytest.skip("the events straddle midnight: no common day prefix")

    result = cli(capsys, "fetch", day, "--from", str(dumps))

    assert result.code == 2
    assert "matches 3 events" in result.err
    assert "give more of the id" in result.err


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "/etc/passwd", "a/../../b", ".."])
def test_an_event_id_that_is_a_path_is_refused(capsys, dumps, tmp_path, hostile):
    result = cli(capsys, "fetch", hostile, "--from", str(dumps), "-o", str(tmp_path / "o"))

    assert result.code == 2
    assert "is not an event id" in result.err
    assert not (tmp_path / "o").exists()


def test_a_planted_link_beside_the_bundle_files_is_never_followed(capsys, dumps, tmp_path):
    bundle = only_bundle(dumps, "cpu")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for you")
    os.symlink(secret, bundle / "stolen.txt")
    out = tmp_path / "out"

    result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(out))

    assert result.code == 1
    assert f"{bundle.name}: 'stolen.txt' is not listed in event.json; not fetched" in result.err
    copy = out / bundle.name
    assert sorted(p.name for p in copy.iterdir()) == ["cpu.pb.gz", "event.json", "threads.txt"]
    assert not any(b"not for you" in p.read_bytes() for p in copy.iterdir())


def test_a_listed_file_swapped_for_a_link_is_refused_and_the_rest_fetched(capsys, dumps, tmp_path):
    bundle = only_bundle(dumps, "cpu")
    (tmp_path / "secret").write_text("not for you")
    (bundle / "threads.txt").unlink()
    # A relative link whose own size is the size event.json lists for threads.txt.
    os.symlink("../../../../secret", bundle / "threads.txt")
    assert (bundle / "threads.txt").lstat().st_size == len(FILES["threads.txt"])
    out = tmp_path / "out"

    result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(out))

    assert result.code == 1
    assert "threads.txt: refused 'threads.txt'" in result.err
    assert "is a symbolic link, not a regular file; not fetched" in result.err
    assert sorted(p.name for p in (out / bundle.name).iterdir()) == ["cpu.pb.gz", "event.json"]


def test_a_planted_named_pipe_does_not_hang_fetch(capsys, dumps, tmp_path):
    bundle = only_bundle(dumps, "cpu")
    (bundle / "threads.txt").unlink()
    os.mkfifo(bundle / "threads.txt")

    result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(tmp_path / "o"))

    assert result.code == 1
    assert f"{bundle.name}/threads.txt: the source has 0 bytes where event.json lists" in (
        result.err
    )


def test_a_copy_that_differs_from_event_json_is_refused_and_the_rest_fetched(
    capsys, dumps, tmp_path
):
    bundle = only_bundle(dumps, "cpu")
    (bundle / "threads.txt").chmod(0o600)
    (bundle / "threads.txt").write_bytes(b"X" * len(FILES["threads.txt"]))  # same size
    out = tmp_path / "out"

    result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(out))

    assert result.code == 1
    assert "threads.txt: the copy differs from the sha256 in event.json" in result.err
    assert f"refused 1 file(s) of {bundle.name}" in result.err
    assert sorted(p.name for p in (out / bundle.name).iterdir()) == ["cpu.pb.gz", "event.json"]


def test_a_corrupt_event_json_vouches_for_no_file(capsys, dumps, tmp_path):
    bundle = only_bundle(dumps, "cpu")
    (bundle / "event.json").write_text("{not json")

    result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(tmp_path / "o"))

    assert result.code == 1
    assert "corrupt event.json is not JSON" in result.err
    assert "none of its 2 other file(s) is fetched" in result.err
    assert [p.name for p in (tmp_path / "o" / bundle.name).iterdir()] == ["event.json"]


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ({"files": [{"name": 7, "size": 1, "sha256": "0" * 64}]}, "lists a file named 7"),
        ({"files": [{"name": "a", "size": "1", "sha256": "0" * 64}]}, "gives a the size '1'"),
        ({"files": "threads.txt"}, 'has no "files" list'),
        ({"files": [[[[]]]]}, "lists [[[]]], not a file entry"),
        (
            {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
            "deeper than",
        ),
        ([1, 2, 3], "is not a JSON object"),
    ],
)
def test_an_event_json_of_odd_shape_is_refused_in_one_line(capsys, dumps, tmp_path, shape, why):
    bundle = only_bundle(dumps, "cpu")
    (bundle / "event.json").write_text(json.dumps(shape))

    result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(tmp_path / "o"))

    assert result.code == 1
    assert why in result.err
    assert "Traceback" not in result.err


def test_fetch_needs_an_id_or_latest(capsys, dumps):
    neither = cli(capsys, "fetch", "--from", str(dumps))
    both = cli(capsys, "fetch", "20261124", "--latest", "--from", str(dumps))

    assert neither.code == both.code == 2
    assert "fetch takes an EVENT_ID or --latest" in neither.err


def test_an_unknown_event_is_exit_1(capsys, dumps):
    result = cli(capsys, "fetch", "19990101T000000.000Z-cpu-0000000000", "--from", str(dumps))

    assert result.code == 1
    assert "no such event" in result.err


def test_a_big_file_shows_a_progress_bar_on_a_terminal(dumps, tmp_path):
    big = os.urandom(3 << 20)
    write_bundle(dumps, service="api", rule="gcheap", files={"heap.pb.gz": big})
    event = only_bundle(dumps, "gcheap").name
    holmespy = Path(sys.executable).parent / "holmespy"
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [str(holmespy), "fetch", event, "--from", str(dumps), "-o", str(tmp_path / "o")],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=clean_env(),
            timeout=60,
            check=False,
        )
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal is gone once the child exited and we read it all
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)

    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert f"{event}/heap.pb.gz" in text
    assert "█" * 30 in text
    assert "100%" in text
    assert "3.0 MiB/3.0 MiB" in text
    assert (tmp_path / "o" / event / "heap.pb.gz").read_bytes() == big


def test_no_progress_bar_when_stderr_is_not_a_terminal(dumps, tmp_path):
    write_bundle(dumps, service="api", rule="gcheap", files={"heap.pb.gz": os.urandom(2 << 20)})
    event = only_bundle(dumps, "gcheap").name

    result = script(
        "fetch", event, "--from", str(dumps), "-o", str(tmp_path / "o"), env=clean_env()
    )

    assert result.code == 0
    assert "█" not in result.err
    assert "\r" not in result.err
    assert json.loads((tmp_path / "o" / event / "event.json").read_text())["id"] == event


class AnyKeyStore:
    """A source that lists whatever names it is given, as AWS S3 allows any key
    (SeaweedFS and local folders cannot even hold a `..` name). Its event.json
    lists threads.txt, as a real one would; `sizes` is what its listing claims."""

    url = "s3://anything-goes/prefix"
    workers = 1

    def __init__(self, names: list[str], threads: bytes = b"stacks") -> None:
        digest = hashlib.sha256(b"stacks").hexdigest()
        listed = [{"name": "threads.txt", "size": 6, "sha256": digest}]
        self.content = {name: b"evil" for name in names}
        self.content["threads.txt"] = threads
        self.content["event.json"] = json.dumps({"files": listed}).encode()
        self.sizes = {name: len(data) for name, data in self.content.items()}
        self.copied: list[str] = []

    def files(self, ref: EventRef) -> list[RemoteFile]:
        return [RemoteFile(name, size) for name, size in self.sizes.items()]

    def copy(self, ref: EventRef, name: str, out, progress) -> None:
        self.copied.append(name)
        out.write(self.content[name])


REF = EventRef("api", "2026-11-24", "20261124T040833.180Z-cpu-e27a2bc06f")


@pytest.mark.parametrize(
    "hostile",
    [
        "../../escape.txt",
        "/tmp/absolute.txt",
        "sub/../../escape.txt",
        "..\\..\\escape.txt",
        "a//b.txt",
        "./event.json",
        "extra/notes.txt",
        "",
    ],
)
def test_a_key_leaving_the_event_folder_is_never_requested(tmp_path, hostile):
    store = AnyKeyStore([hostile])
    out = tmp_path / "out"

    fetched = download(store, REF, out)  # type: ignore[arg-type]

    assert store.copied == ["event.json", "threads.txt"]
    assert fetched.refused == [f"{REF.id}: {hostile!r} is not listed in event.json; not fetched"]
    assert sorted(p.name for p in fetched.path.iterdir()) == ["event.json", "threads.txt"]
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert written == [
        "out",
        f"out/{REF.id}",
        f"out/{REF.id}/event.json",
        f"out/{REF.id}/threads.txt",
    ]


def test_a_source_that_sends_more_than_listed_is_cut_off(tmp_path):
    store = AnyKeyStore([], threads=b"stacks" + bytes(1 << 20))
    store.sizes["threads.txt"] = 6  # its listing agrees with event.json; its body does not

    fetched = download(store, REF, tmp_path)  # type: ignore[arg-type]

    assert fetched.refused == [
        f"{REF.id}/threads.txt: is longer than the 6 bytes listed; not fetched"
    ]
    assert [p.name for p in fetched.path.iterdir()] == ["event.json"]


def test_a_planted_tmp_fetch_link_in_a_shared_folder_is_not_followed(capsys, dumps, tmp_path):
    bundle = only_bundle(dumps, "cpu")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The temp names fetch used to take: pid and event id, both guessable.
    for pid in (os.getpid(), os.getpid() + 1):
        (shared / f".tmp-fetch-{pid}-{bundle.name}").symlink_to(elsewhere)

    result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(shared))

    assert result.code == 0, result.err
    assert list(elsewhere.iterdir()) == []
    copy = shared / bundle.name
    assert sorted(p.name for p in copy.iterdir()) == ["cpu.pb.gz", "event.json", "threads.txt"]
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    temps = sorted(p.name for p in shared.iterdir() if p.name.startswith(".tmp-fetch-"))
    assert len(temps) == 2  # the planted links, left alone; fetch's own temp folder is gone


def test_a_planted_link_at_the_target_is_refused_even_with_force(capsys, dumps, tmp_path):
    bundle = only_bundle(dumps, "cpu")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / bundle.name).symlink_to(elsewhere)

    result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(out), "--force")

    assert result.code == 1
    assert "already exists" in result.err
    assert list(elsewhere.iterdir()) == []


def test_missing_output_folders_are_made_0700_under_umask_000(capsys, dumps, tmp_path):
    bundle = only_bundle(dumps, "cpu")
    out = tmp_path / "a" / "b"
    old = os.umask(0)
    try:
        result = cli(capsys, "fetch", bundle.name, "--from", str(dumps), "-o", str(out))
    finally:
        os.umask(old)

    assert result.code == 0, result.err
    copy = out / bundle.name
    folders = [tmp_path / "a", out, copy]
    assert [stat.S_IMODE(p.stat().st_mode) for p in folders] == [0o700] * 3
    assert {stat.S_IMODE(p.stat().st_mode) for p in copy.iterdir()} == {0o600}

"""Reading a store: the same answers from a folder and from S3 (the session's SeaweedFS).

`ls`, `fetch`, `show` and `serve` read every store through a few calls of
`holmespy.storage.base.Store` (folders one level down, the files of a
folder, a file's first bytes, a file a block at a time), and through the
CLI's `Source`, which adds the event layout, the deadline and the one-line
errors. Each test here runs once over a dump folder (`LocalStore`) and once
over a bucket (`S3Store`, listing two names a request so that every listing
follows continuation tokens) holding the same keys, and expects the same
answers. What only a folder can hold (links, pipes) is tested on folders.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli_support import write_bundle

from holmespy.bundle import new_event_id
from holmespy.cli.errors import NotFound, UnsafePath
from holmespy.cli.source import EventRef, LocalSource, RemoteFile, S3Source, Source, resolve_source
from holmespy.storage.base import CHUNK, ObjectNotFound, StorageError, Store, UnsafeObject
from holmespy.storage.local import LocalStore
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import S3Location
from tests.s3_server import SeaweedFS

pytestmark = pytest.mark.timeout(120)

PREFIX = "dumps/prod"
NOW = dt.datetime(2026, 11, 24, 4, 8, 33, tzinfo=dt.UTC)
DAY = "2026-11-24"
CPU = new_event_id("cpu", NOW)
MEM = new_event_id("mem", NOW + dt.timedelta(minutes=1))


@dataclass
class Place:
    """A store of one kind, how `--from` names it, and a way to put raw bytes under a key."""

    kind: str
    store: Store
    url: str
    put: Callable[[str, bytes], None]

    def source(self) -> Source:
        return resolve_source(self.url, 30)


@pytest.fixture(params=["folder", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Place:
    if request.param == "folder":
        root = tmp_path / "dumps"
        root.mkdir()

        def put_file(key: str, data: bytes) -> None:
            path = root.joinpath(*key.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return Place("folder", LocalStore(root), str(root), put_file)
    server: SeaweedFS = request.getfixturevalue("aws_env")
    bucket: str = request.getfixturevalue("bucket")
    client = server.client()
    monkeypatch.setattr(S3Source, "page_size", 2)

    def put_object(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=data)

    store = S3Store(S3Location(bucket, PREFIX), page_size=2)
    return Place("s3", store, f"s3://{bucket}/{PREFIX}", put_object)


def put_event(place: Place, service: str, day: str, event_id: str, **files: bytes) -> EventRef:
    for name, data in files.items():
        place.put(f"{service}/{day}/{event_id}/{name.replace('_', '.')}", data)
    return EventRef(service, day, event_id)


# -- the store --


def test_folders_are_the_names_one_level_below_a_key_sorted(place: Place) -> None:
    for key in [
        f"worker/{DAY}/{MEM}/event.json",
        f"api/2026-11-25/{CPU}/event.json",
        f"api/{DAY}/{CPU}/event.json",
        f"api/{DAY}/{MEM}/event.json",
        "README.txt",  # a file at the root is not a folder
    ]:
        place.put(key, b"{}")

    assert place.store.folders() == ["api", "worker"]
    assert place.store.folders("api") == [DAY, "2026-11-25"]
    assert place.store.folders(f"api/{DAY}") == [CPU, MEM]


def test_every_folder_is_listed_however_many_requests_it_takes(place: Place) -> None:
    names = [f"svc-{n}" for n in range(7)]  # four pages of two on S3
    for name in names:
        place.put(f"{name}/{DAY}/{CPU}/event.json", b"{}")

    assert place.store.folders() == names


def test_start_narrows_a_listing_and_start_after_begins_it_past_a_name(place: Place) -> None:
    for name in ["a-1", "a-2", "b-1", "b-2"]:
        place.put(f"svc/{name}/x", b"")

    assert place.store.folders("svc", start="a-") == ["a-1", "a-2"]
    assert place.store.folders("svc", start_after="a-2") == ["b-1", "b-2"]
    assert place.store.folders("svc", start="b", start_after="b-1") == ["b-2"]


def test_names_sort_as_names_though_s3_orders_their_keys_otherwise(place: Place) -> None:
    # As keys `x-y/` sorts before `x/` ('-' < '/'); as names, x sorts first.
    place.put("x/f", b"")
    place.put("x-y/f", b"")

    assert place.store.folders() == ["x", "x-y"]


def test_a_folder_that_does_not_exist_has_no_folders(place: Place) -> None:
    assert place.store.folders("nothing/here") == []


def test_the_files_of_a_folder_are_listed_with_their_sizes(place: Place) -> None:
    put_event(place, "api", DAY, CPU, event_json=b"{}", threads_txt=b"Thread 1\n")

    found = place.store.files(f"api/{DAY}/{CPU}")

    assert [(f.key, f.size) for f in found] == [
        (f"api/{DAY}/{CPU}/event.json", 2),
        (f"api/{DAY}/{CPU}/threads.txt", 9),
    ]


def test_the_files_of_a_missing_folder_are_not_found(place: Place) -> None:
    with pytest.raises(ObjectNotFound):
        place.store.files(f"api/{DAY}/{CPU}")


def test_get_bytes_reads_the_whole_file_or_only_its_first_limit_bytes(place: Place) -> None:
    data = os.urandom(1000)
    place.put("svc/d/e/cpu.pb.gz", data)

    assert place.store.get_bytes("svc/d/e/cpu.pb.gz") == data
    assert place.store.get_bytes("svc/d/e/cpu.pb.gz", limit=10) == data[:10]
    assert place.store.get_bytes("svc/d/e/cpu.pb.gz", limit=5000) == data


def test_open_gives_the_size_first_then_the_bytes_a_block_at_a_time(place: Place) -> None:
    data = os.urandom(3 * CHUNK + 7)
    place.put("svc/d/e/heap.pb.gz", data)

    with place.store.open("svc/d/e/heap.pb.gz") as reader:
        size = reader.size
        blocks = list(iter(reader.read, b""))

    assert size == len(data)
    assert b"".join(blocks) == data
    assert max(len(b) for b in blocks) <= CHUNK


def test_a_missing_key_is_object_not_found_for_every_read(place: Place) -> None:
    place.put("svc/d/e/event.json", b"{}")

    for read in (place.store.get_bytes, place.store.open):
        with pytest.raises(ObjectNotFound):
            read("svc/d/e/nothing.txt")


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "svc//x", "svc/./x", "svc/.."])
def test_a_key_that_would_leave_the_root_is_refused_before_any_request(
    place: Place, key: str
) -> None:
    reads: list[Callable[[], object]] = [
        lambda: place.store.folders(key),
        lambda: place.store.files(key),
        lambda: place.store.get_bytes(key),
        lambda: place.store.open(key),
    ]
    for read in reads:
        with pytest.raises(StorageError, match="not a relative object key"):
            read()


def test_only_a_folder_store_has_a_path_on_this_machine(place: Place) -> None:
    path = place.store.local_path("svc/d/e/event.json")

    if place.kind == "folder":
        assert path == Path(place.url, "svc", "d", "e", "event.json")
    else:
        assert path is None


# -- the CLI's source over it --


def test_a_source_answers_services_days_events_and_files_the_same_from_any_store(
    place: Place,
) -> None:
    cpu = put_event(place, "api", DAY, CPU, event_json=b"{}", cpu_pb_gz=b"\x1f\x8b")
    put_event(place, "worker", "2026-11-25", MEM, event_json=b"{}")
    source = place.source()

    assert source.url == place.url
    assert source.services() == ["api", "worker"]
    assert source.days("worker") == ["2026-11-25"]
    assert source.event_ids("api", DAY) == [CPU]
    assert source.event_ids("api", DAY, prefix=CPU[:20], start_after=CPU[:19]) == [CPU]
    assert source.event_ids("api", DAY, start_after=CPU) == []
    assert source.files(cpu) == [RemoteFile("cpu.pb.gz", 2), RemoteFile("event.json", 2)]
    assert source.read(cpu, "cpu.pb.gz", limit=1) == b"\x1f"


def test_names_not_shaped_like_a_service_day_or_event_id_are_not_listed(place: Place) -> None:
    put_event(place, "api", DAY, CPU, event_json=b"{}")
    place.put(f"-api/{DAY}/{CPU}/event.json", b"{}")
    place.put(f"api/yesterday/{CPU}/event.json", b"{}")
    place.put(f"api/{DAY}/not-an-event/event.json", b"{}")
    source = place.source()

    assert source.services() == ["api"]
    assert source.days("api") == [DAY]
    assert source.event_ids("api", DAY) == [CPU]


def test_a_missing_event_or_file_is_one_line_naming_the_event_and_the_source(
    place: Place,
) -> None:
    ref = put_event(place, "api", DAY, CPU, event_json=b"{}")
    gone = EventRef("api", DAY, MEM)
    source = place.source()

    with pytest.raises(NotFound) as no_event:
        source.files(gone)
    with pytest.raises(NotFound) as no_file:
        source.read(ref, "heap.pb.gz", limit=10)
    with pytest.raises(NotFound) as not_to_copy:
        source.copy(ref, "heap.pb.gz", io.BytesIO(), lambda n: None)

    assert str(no_event.value) == f"{MEM}: no such event in {place.url}"
    assert str(no_file.value) == f"{CPU}: no heap.pb.gz in {place.url}"
    assert str(not_to_copy.value) == str(no_file.value)


@pytest.mark.parametrize("name", ["../event.json", "/etc/passwd", "a\\b", "", "x/../../y"])
def test_a_file_name_leaving_its_event_folder_is_refused_before_any_read(
    place: Place, name: str
) -> None:
    ref = put_event(place, "api", DAY, CPU, event_json=b"{}")

    with pytest.raises(UnsafePath, match="must stay inside its event folder"):
        place.source().read(ref, name, limit=10)


def test_copy_writes_every_byte_and_reports_each_block(place: Place) -> None:
    data = os.urandom(2 * CHUNK + 123)
    ref = put_event(place, "api", DAY, CPU, heap_pb_gz=data)
    out = io.BytesIO()
    progress: list[int] = []

    place.source().copy(ref, "heap.pb.gz", out, progress.append)

    assert out.getvalue() == data
    assert sum(progress) == len(data)
    assert all(0 < n <= CHUNK for n in progress)


def test_only_a_folder_source_has_the_event_folder_on_this_machine(place: Place) -> None:
    ref = put_event(place, "api", DAY, CPU, event_json=b"{}")

    folder = place.source().folder(ref)

    if place.kind == "folder":
        assert folder == Path(place.url, "api", DAY, CPU)
    else:
        assert folder is None


# -- what only a folder can hold: links and pipes planted by whoever can write there --


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    root = tmp_path / "dumps"
    write_bundle(root, service="api", rule="cpu", when=NOW, files={"threads.txt": b"stacks"})
    (tmp_path / "secret").write_text("not for you")
    return root


def bundle_of(root: Path) -> Path:
    (found,) = root.glob("api/*/*")
    return found


def test_a_link_in_place_of_a_file_is_refused_not_followed(dumps: Path, tmp_path: Path) -> None:
    bundle = bundle_of(dumps)
    (bundle / "threads.txt").unlink()
    (bundle / "threads.txt").symlink_to(tmp_path / "secret")
    key = bundle.relative_to(dumps).as_posix() + "/threads.txt"
    store = LocalStore(dumps)

    for read in (store.get_bytes, store.open):
        with pytest.raises(UnsafeObject) as refused:
            read(key)
        assert refused.value.problem == "is a symbolic link, not a regular file"


def test_a_pipe_in_place_of_a_file_is_refused_without_waiting_for_a_writer(dumps: Path) -> None:
    bundle = bundle_of(dumps)
    (bundle / "threads.txt").unlink()
    os.mkfifo(bundle / "threads.txt")
    ref = EventRef("api", bundle.parent.name, bundle.name)

    with pytest.raises(UnsafePath) as refused:
        LocalSource(dumps).read(ref, "threads.txt", limit=100)

    assert str(refused.value) == (
        f"refused 'threads.txt' in {bundle}: is a named pipe, not a regular file"
    )


def test_a_linked_folder_is_neither_listed_nor_descended(dumps: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_bundle(elsewhere, service="theirs", rule="mem", when=NOW)
    (dumps / "theirs").symlink_to(elsewhere / "theirs")
    (event,) = (elsewhere / "theirs").glob("*/*")
    key = event.relative_to(elsewhere).as_posix()
    store = LocalStore(dumps)

    assert store.folders() == ["api"]
    assert store.folders("theirs") == []
    with pytest.raises(ObjectNotFound):  # no folder of that name, as far as it goes
        store.get_bytes(f"{key}/event.json")
    with pytest.raises(ObjectNotFound):
        store.files(key)


def test_a_folders_entries_of_any_kind_are_listed_with_their_own_size(
    dumps: Path, tmp_path: Path
) -> None:
    bundle = bundle_of(dumps)
    os.mkfifo(bundle / "pipe")
    (bundle / "link").symlink_to(tmp_path / "secret")
    (bundle / "sub").mkdir()
    prefix = bundle.relative_to(dumps).as_posix()

    found = {f.key[len(prefix) + 1 :]: f.size for f in LocalStore(dumps).files(prefix)}

    assert set(found) == {"event.json", "threads.txt", "pipe", "link", "sub"}
    assert found["link"] == len(str(tmp_path / "secret"))  # the link's own size, not the secret's


def test_reading_a_folder_never_imports_boto3(dumps: Path) -> None:
    # Importing boto3 costs a few hundred ms: only an s3:// source may pay it.
    program = (
        "import sys\n"
        "from holmespy.cli import main\n"
        "assert main(['ls', '-l', '--from', sys.argv[1]]) == 0\n"
        "assert main(['fetch', '--latest', '--from', sys.argv[1], '-o', sys.argv[2]]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(dumps), str(dumps.parent / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_generous_limit_costs_nothing_for_a_small_file(place: Place) -> None:
    # Readers pass their cap (256 MiB) plus one to learn whether a file is over it.
    place.put("svc/d/e/event.json", b"{}" * 500)
    place.store.get_bytes("svc/d/e/event.json")  # the S3 client is made outside the measure
    tracemalloc.start()
    try:
        data = place.store.get_bytes("svc/d/e/event.json", limit=(256 << 20) + 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert len(data) == 1000
    assert peak < 1 << 20, f"{peak:,} bytes traced to read 1,000"

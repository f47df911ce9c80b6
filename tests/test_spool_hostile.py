"""The spool ships and counts only what holmespy wrote (issue 11, items 2 and 10).

Each test plants, in a spool, an "event" that holmespy did not write as it
is: a profile that is a link to a secret, a file whose sha256 is not the
one listed, an event.json of odd shape, a link named like an event, a
future-dated or sparse giant. It must never be shipped or followed, never
hold back the real events after it, and never make the size cap drop them.
A real local store stands in for the bucket here; the same attack against
SeaweedFS is in test_storage_uploader.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from holmespy.config import Config
from holmespy.storage.local import LocalStore
from holmespy.storage.spool import QUARANTINE, QUARANTINE_KEEP, OddEntry, Spool
from holmespy.storage.uploader import Backoff, Uploader
from tests.s3_server import plant_event, publish_bundle

SERVICE = "svc"
SECRET = b"root:$6$only-root-may-read-this\n"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    return tmp_path / "dumps"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "shadow"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


@pytest.fixture
def bucket(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "bucket")


def ship(
    dumps: Path, store: LocalStore | None, uploaders: list[Uploader], **changes: Any
) -> Uploader:
    """Start an uploader of `svc` over `dumps` and wait until it has been through the spool."""
    config = Config(dump_path=dumps, service=SERVICE).replace(**changes)
    uploader = Uploader(config, store=store).start()
    uploaders.append(uploader)
    if store is None:
        uploader.notify(dumps)  # without a store, the cap and the quarantine run on notify
    else:
        assert uploader.flush(10)
    return uploader


def stored(bucket: LocalStore) -> list[str]:
    return sorted(info.key for info in bucket.list())


def keys_of(folder: Path) -> list[str]:
    base = "/".join(folder.parts[-3:])
    return sorted(f"{base}/{p.name}" for p in folder.iterdir())


def quarantined(dumps: Path) -> list[str]:
    folder = dumps / SERVICE / QUARANTINE
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_planted_event_whose_profile_links_to_a_secret_is_set_aside_not_uploaded(
    dumps: Path,
    secret: Path,
    bucket: LocalStore,
    uploaders: list[Uploader],
    caplog: pytest.LogCaptureFixture,
) -> None:
    listed = [
        {"name": "cpu.pb.gz", "size": len(SECRET), "sha256": hashlib.sha256(SECRET).hexdigest()}
    ]
    planted = plant_event(dumps, SERVICE, {}, listed=listed)  # lists the secret's very digest
    (planted / "cpu.pb.gz").symlink_to(secret)
    real = publish_bundle(dumps, SERVICE, {"threads.txt": b"real stacks"})
    want = keys_of(real)  # the keys it will have in the bucket

    uploader = ship(dumps, bucket, uploaders)

    assert stored(bucket) == want
    assert not any(SECRET in bucket.get_bytes(key) for key in stored(bucket))
    assert uploader.status()["quarantined"] == 1
    assert quarantined(dumps) == [planted.name]
    moved = dumps / SERVICE / QUARANTINE / planted.name / "cpu.pb.gz"
    assert moved.is_symlink()  # moved as it was, never read
    [line] = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert line.startswith(
        f"holmespy set aside {SERVICE}/{planted.parent.name}/{planted.name}:"
        " cpu.pb.gz is a symbolic link, not a regular file; moved to"
    )


def test_a_planted_event_with_a_wrong_sha256_is_set_aside_before_any_of_it_is_uploaded(
    dumps: Path, bucket: LocalStore, uploaders: list[Uploader]
) -> None:
    listed = [
        {"name": "threads.txt", "size": 5, "sha256": hashlib.sha256(b"fine!").hexdigest()},
        {"name": "cpu.pb.gz", "size": 6, "sha256": "0" * 64},  # the right size, not the bytes
    ]
    planted = plant_event(
        dumps, SERVICE, {"threads.txt": b"fine!", "cpu.pb.gz": b"forged"}, listed=listed
    )
    real = publish_bundle(dumps, SERVICE, {"threads.txt": b"real stacks"})
    want = keys_of(real)  # the keys it will have in the bucket

    uploader = ship(dumps, bucket, uploaders)

    assert stored(bucket) == want  # not even its good threads.txt went up
    assert uploader.status()["quarantined"] == 1
    assert uploader.status()["failed_attempts"] == 0
    assert quarantined(dumps) == [planted.name]


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("event", "why"),
    [
        ({"files": [{"name": 7, "size": 1, "sha256": "0" * 64}]}, "lists a file named 7"),
        ({"files": [{"name": "a", "size": True, "sha256": "0" * 64}]}, "gives a the size True"),
        ({"files": [{"name": "a", "size": 1, "sha256": None}]}, "gives a the sha256 None"),
        ({"files": {"name": "a"}}, 'has no "files" list'),
        ({"files": [], "deep": json.loads("[" * 40 + "]" * 40)}, "nests deeper than 32 levels"),
        ({"files": ["event.json"]}, "lists 'event.json', not a file entry"),
        (
            {"files": [{"name": "../../etc/shadow", "size": 1, "sha256": "0" * 64}]},
            "lists a file named",
        ),
        ("not an object", "is not a JSON object"),
    ],
)
def test_an_event_json_of_odd_shape_never_stops_the_events_after_it(
    dumps: Path,
    bucket: LocalStore,
    uploaders: list[Uploader],
    caplog: pytest.LogCaptureFixture,
    event: Any,
    why: str,
) -> None:
    planted = plant_event(dumps, SERVICE, {}, event=event)
    real = publish_bundle(dumps, SERVICE, {"threads.txt": b"real stacks"})
    want = keys_of(real)  # the keys it will have in the bucket

    uploader = ship(dumps, bucket, uploaders)

    assert stored(bucket) == want
    assert quarantined(dumps) == [planted.name]
    assert uploader.status()["failed_attempts"] == 0
    assert why in caplog.text


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (DEEP.encode(), "event.json nests deeper than 32 levels"),
        (b"\xff\xfe not text", "event.json is not JSON"),
        (b'{"files": [], "pad": "' + b"x" * (5 << 20) + b'"}', "bytes, more than 4194304"),
    ],
)
def test_an_event_json_that_cannot_be_parsed_safely_is_set_aside(
    dumps: Path,
    bucket: LocalStore,
    uploaders: list[Uploader],
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
    why: str,
) -> None:
    planted = plant_event(dumps, SERVICE, {})
    (planted / "event.json").write_bytes(raw)
    real = publish_bundle(dumps, SERVICE, {"threads.txt": b"real stacks"})
    want = keys_of(real)  # the keys it will have in the bucket

    uploader = ship(dumps, bucket, uploaders)

    assert stored(bucket) == want
    assert quarantined(dumps) == [planted.name]
    assert uploader.status()["quarantined"] == 1
    assert why in caplog.text


def test_a_link_named_like_an_event_is_moved_aside_never_followed(
    dumps: Path, tmp_path: Path, bucket: LocalStore, uploaders: list[Uploader]
) -> None:
    real = publish_bundle(dumps, SERVICE, {"threads.txt": b"real stacks"})
    want = keys_of(real)  # the keys it will have in the bucket
    decoy = publish_bundle(tmp_path / "elsewhere", SERVICE, {"threads.txt": b"not from here"})
    link = real.parent / decoy.name
    link.symlink_to(decoy)

    uploader = ship(dumps, bucket, uploaders)

    assert stored(bucket) == want
    assert (dumps / SERVICE / QUARANTINE / decoy.name).is_symlink()
    assert (decoy / "threads.txt").read_bytes() == b"not from here"  # untouched
    assert uploader.status()["quarantined"] == 1


def test_an_unlisted_file_beside_a_real_event_keeps_the_event_from_shipping(
    dumps: Path, secret: Path, bucket: LocalStore, uploaders: list[Uploader]
) -> None:
    tampered = publish_bundle(dumps, SERVICE, {"threads.txt": b"stacks"})
    (tampered / "extra.txt").symlink_to(secret)
    real = publish_bundle(dumps, SERVICE, {"threads.txt": b"real stacks"})
    want = keys_of(real)  # the keys it will have in the bucket

    ship(dumps, bucket, uploaders)

    assert stored(bucket) == want
    assert quarantined(dumps) == [tampered.name]


# -- the size cap (item 10) --


def on_disk(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.iterdir())


def sparse_giant(folder: Path, size: int = 2 << 30) -> None:
    with (folder / "cpu.pb.gz").open("wb") as f:
        f.truncate(size)


def test_a_future_dated_sparse_giant_cannot_evict_the_real_events(
    dumps: Path, uploaders: list[Uploader]
) -> None:
    real = [publish_bundle(dumps, SERVICE, {"heap.pb.gz": os.urandom(10_000)}) for _ in "ab"]
    listed = [{"name": "cpu.pb.gz", "size": 2 << 30, "sha256": "0" * 64}]
    giant = plant_event(
        dumps, SERVICE, {}, event_id="20991231T235959.999Z-cpu-ffffffffff", listed=listed
    )
    sparse_giant(giant)

    uploader = ship(dumps, None, uploaders, spool_max=on_disk(real[0]) * 5 // 2)

    assert [e.id for e in Spool(dumps, 1 << 40).events()] == [f.name for f in real]
    assert quarantined(dumps) == [giant.name]
    assert uploader.status()["dropped"] == 0


def test_an_event_json_modified_in_the_future_is_set_aside(dumps: Path) -> None:
    planted = plant_event(dumps, SERVICE, {"threads.txt": b"stacks"})
    year_2100 = 4_102_444_800
    os.utime(planted / "event.json", (year_2100, year_2100))

    scan = Spool(dumps, 1 << 30).scan()

    assert scan.events == []
    why = "event.json was modified at 2100-01-01T00:00:00+00:00, more than a day ahead of now"
    assert [o.why for o in scan.odd] == [why]


def test_a_sparse_giant_counts_only_the_bytes_it_takes_on_disk(dumps: Path) -> None:
    real = [publish_bundle(dumps, SERVICE, {"heap.pb.gz": os.urandom(10_000)}) for _ in "ab"]
    listed = [{"name": "cpu.pb.gz", "size": 2 << 30, "sha256": "0" * 64}]
    giant = plant_event(dumps, SERVICE, {}, listed=listed)  # dated now: the newest
    sparse_giant(giant)
    spool = Spool(dumps, on_disk(real[0]) * 5 // 2)

    dropped, total = spool.enforce_cap()

    assert dropped == []
    assert total == on_disk(real[0]) + on_disk(real[1]) + on_disk(giant)
    assert on_disk(giant) < 64 << 10


# -- the quarantine itself --


def test_the_quarantine_keeps_only_the_newest_entries(
    dumps: Path, bucket: LocalStore, uploaders: list[Uploader]
) -> None:
    planted = [plant_event(dumps, SERVICE, {}, event="junk") for _ in range(QUARANTINE_KEEP + 8)]

    uploader = ship(dumps, bucket, uploaders)

    assert uploader.status()["quarantined"] == QUARANTINE_KEEP + 8
    assert quarantined(dumps) == sorted(p.name for p in planted)[-QUARANTINE_KEEP:]


def test_an_odd_event_held_by_a_sibling_is_left_to_it(dumps: Path) -> None:
    planted = plant_event(dumps, SERVICE, {}, event="junk")
    spool = Spool(dumps, 1 << 30)
    [odd] = spool.scan().odd
    holder = os.open(planted, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert spool.quarantine(odd) is None
        assert planted.is_dir()
    finally:
        os.close(holder)
    assert spool.quarantine(odd) == dumps / SERVICE / QUARANTINE / planted.name


def test_a_quarantine_folder_planted_as_a_link_is_refused_and_shipping_goes_on(
    dumps: Path, tmp_path: Path, bucket: LocalStore, uploaders: list[Uploader]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = plant_event(dumps, SERVICE, {}, event="junk")
    (dumps / SERVICE / QUARANTINE).symlink_to(elsewhere)
    real = publish_bundle(dumps, SERVICE, {"threads.txt": b"real stacks"})
    want = keys_of(real)  # the keys it will have in the bucket

    uploader = ship(dumps, bucket, uploaders)

    assert stored(bucket) == want
    assert list(elsewhere.iterdir()) == []
    assert planted.is_dir()  # stays, is never shipped, and is said once
    assert "cannot set it aside" in str(uploader.status()["last_error"])


def test_scan_names_what_is_odd_and_why(dumps: Path) -> None:
    planted = plant_event(dumps, SERVICE, {"threads.txt": b"x"}, listed=[])

    scan = Spool(dumps, 1 << 30).scan()

    key = f"{SERVICE}/{planted.parent.name}/{planted.name}"
    assert scan.events == []
    why = "'threads.txt' is in the folder but not listed in event.json"
    assert scan.odd == [OddEntry(planted, key, why)]


def test_an_event_json_rewritten_after_a_scan_is_read_again(dumps: Path) -> None:
    real = publish_bundle(dumps, SERVICE, {"threads.txt": b"stacks"})
    spool = Spool(dumps, 1 << 30)
    assert [e.id for e in spool.scan().events] == [real.name]
    (real / "event.json").chmod(0o600)
    (real / "event.json").write_text('{"files": [{"name": 7}]}')

    scan = spool.scan()

    assert scan.events == []
    assert [(o.id, o.why) for o in scan.odd] == [(real.name, "event.json lists a file named 7")]


# -- a failing pass --


class Ceiling(random.Random):
    """Jitter that always picks the longest wait: the backoff's own bound."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_a_pass_that_keeps_failing_backs_off_instead_of_spinning(
    dumps: Path, bucket: LocalStore, uploaders: list[Uploader], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Spool, service: str | None = None) -> Any:
        raise RuntimeError("a bug in the scan")

    monkeypatch.setattr(Spool, "scan", broken)
    waits: list[float] = []
    enough, hold = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= 5:
            enough.set()
            hold.wait(10)  # five waits are what is looked at

    config = Config(dump_path=dumps, service=SERVICE)
    uploader = Uploader(
        config, store=bucket, sleep=sleep, rng=Ceiling(), backoff=Backoff(base=0.5, cap=60)
    )
    uploaders.append(uploader.start())
    try:
        assert enough.wait(10)
        assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]
        assert uploader.status()["failed_attempts"] == 5
        error = str(uploader.status()["last_error"])
        assert "upload pass failed: RuntimeError: a bug in the scan" in error
    finally:
        hold.set()

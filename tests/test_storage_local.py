"""The spool, the local store, and the uploader's rules, with the local folder as the target.

No server here: a `LocalStore` (a real one, sometimes made to fail on cue)
stands in for the bucket, so each rule of the uploader is seen on its own:
event.json last, backoff with jitter, rate-limited errors, the size cap, one
shipping per event even with sibling processes, a callback that misbehaves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from holmespy.bundle import BundleWriter, write_private
from holmespy.config import Config
from holmespy.storage.base import ObjectInfo
from holmespy.storage.local import LocalStore
from holmespy.storage.reporter import Reporter, StoredEvent
from holmespy.storage.s3client import ObjectNotFound, StorageError
from holmespy.storage.spool import Spool
from holmespy.storage.uploader import Backoff, Uploader
from tests.s3_server import publish_bundle

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "svc"


class FlakyStore(LocalStore):
    """A real local store that first raises the given errors, and records what it stored."""

    def __init__(self, root: Path, failures: list[StorageError] | None = None) -> None:
        super().__init__(root)
        self.failures = failures or []
        self.puts: list[str] = []
        self.gate: threading.Event | None = None
        self.at_gate = threading.Event()
        """Set once a put waits for the gate: the upload is stuck inside put_file."""

    def put_file(
        self, key: str, path: Path, metadata: Mapping[str, str] | None = None, *, timeout: float = 0
    ) -> ObjectInfo:
        if self.gate is not None:
            self.at_gate.set()
            self.gate.wait(HANG_GUARD)
        if self.failures:
            raise self.failures.pop(0)
        self.puts.append(key)
        return super().put_file(key, path, metadata, timeout=timeout)


HANG_GUARD = 60.0
"""Seconds after which something a test holds lets go by itself (if the test failed to)."""

AN_HOUR = 3600.0
"""A flush timeout that no test run reaches: a flush that returns False before it
gave up for another reason than its timeout (the hang guard below ends a run long before)."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(dump_path: Path, **changes: object) -> Config:
    return Config(dump_path=dump_path, service=SERVICE).replace(**changes)


def spooled(dump_path: Path) -> list[str]:
    return [e.id for e in Spool(dump_path, 1 << 40).events()]


def on_disk(folder: Path) -> int:
    """What `du` counts for the folder's files: the spool's measure of an event."""
    return sum(p.stat().st_blocks * 512 for p in folder.iterdir())


# -- the spool --


def test_events_are_listed_oldest_first_and_only_once_published(tmp_path: Path) -> None:
    first = publish_bundle(tmp_path, "api", {"threads.txt": b"a"})
    second = publish_bundle(tmp_path, "worker", {"threads.txt": b"bb"})
    (tmp_path / "api" / first.parent.name / ".tmp-1-half-written").mkdir()
    events = Spool(tmp_path, 1 << 20).events()
    assert [e.id for e in events] == [first.name, second.name]
    assert events[0].key == f"api/{first.parent.name}/{first.name}"
    assert events[1].size == on_disk(second)
    assert [e.id for e in Spool(tmp_path, 1 << 20).events("worker")] == [second.name]


def test_the_cap_drops_the_oldest_events_and_keeps_the_newest(tmp_path: Path) -> None:
    folders = [publish_bundle(tmp_path, SERVICE, {"heap.pb.gz": os.urandom(10_000)}) for _ in "abc"]
    two = on_disk(folders[1]) + on_disk(folders[2])
    spool = Spool(tmp_path, two)
    dropped, total = spool.enforce_cap()
    assert [e.id for e in dropped] == [folders[0].name]
    assert spooled(tmp_path) == [f.name for f in folders[1:]]
    assert total == two
    # Alone above the cap, the newest event still stays.
    dropped, total = Spool(tmp_path, 100).enforce_cap()
    assert [e.id for e in dropped] == [folders[1].name]
    assert spooled(tmp_path) == [folders[2].name]
    assert total > 100


def publish_with_id(dump_path: Path, event_id: str, data: bytes) -> Path:
    with BundleWriter(dump_path, SERVICE, event_id) as bundle:
        write_private(bundle.temp / "heap.pb.gz", data)
        return bundle.publish({"id": event_id, "service": SERVICE})


def test_events_of_one_millisecond_keep_the_order_they_were_published_in(tmp_path: Path) -> None:
    # Same millisecond, and the random part of the later id sorts first: the
    # order must come from when each was published, not from chance.
    same_ms = "20261124T040833.180Z-thread-"
    first = publish_with_id(tmp_path, same_ms + "ffffffffff", os.urandom(10_000))
    second = publish_with_id(tmp_path, same_ms + "0000000000", os.urandom(10_000))
    third = publish_with_id(tmp_path, same_ms + "8888888888", os.urandom(10_000))

    assert spooled(tmp_path) == [first.name, second.name, third.name]
    dropped, _ = Spool(tmp_path, on_disk(second) + on_disk(third)).enforce_cap()
    assert [e.id for e in dropped] == [first.name]
    assert spooled(tmp_path) == [second.name, third.name]


def test_an_event_held_by_one_uploader_cannot_be_claimed_by_another(tmp_path: Path) -> None:
    publish_bundle(tmp_path, SERVICE, {"threads.txt": b"x"})
    spool = Spool(tmp_path, 1 << 20)
    [event] = spool.events()
    claim = spool.claim(event)
    assert claim is not None
    assert spool.claim(event) is None
    assert spool.enforce_cap() == ([], event.size)
    claim.release()
    again = spool.claim(event)
    assert again is not None
    spool.remove(again)
    assert spool.events() == []
    assert spool.claim(event) is None


def test_a_killed_holder_releases_its_claim(tmp_path: Path) -> None:
    folder = publish_bundle(tmp_path, SERVICE, {"threads.txt": b"x"})
    holder = textwrap.dedent(
        f"""
        import fcntl, os, sys, time
        fd = os.open({str(folder)!r}, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "held\n"
        spool = Spool(tmp_path, 1 << 20)
        [event] = spool.events()
        assert spool.claim(event) is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        claim = spool.claim(event)
        assert claim is not None
        claim.release()
    finally:
        proc.kill()
        proc.wait()


# -- the local store --


def test_local_store_round_trip_and_listing_by_prefix(tmp_path: Path) -> None:
    source = tmp_path / "heap.pb.gz"
    source.write_bytes(os.urandom(3000))
    store = LocalStore(tmp_path / "store")
    info = store.put_file("svc/2026-11-24/e1/heap.pb.gz", source, {"rule": "mem"})
    store.put_file("svc-2/2026-11-24/e2/heap.pb.gz", source)
    assert info.size == 3000
    assert store.get_bytes("svc/2026-11-24/e1/heap.pb.gz") == source.read_bytes()
    store.get_file("svc/2026-11-24/e1/heap.pb.gz", tmp_path / "out" / "copy.gz")
    assert (tmp_path / "out" / "copy.gz").read_bytes() == source.read_bytes()
    assert [o.key for o in store.list("svc/")] == ["svc/2026-11-24/e1/heap.pb.gz"]
    assert len(list(store.list())) == 2
    assert store.head("svc/2026-11-24/e1/nothing") is None
    with pytest.raises(ObjectNotFound):
        store.get_bytes("svc/2026-11-24/e1/nothing")
    assert store.url("svc/2026-11-24/e1/heap.pb.gz").startswith("file:///")
    assert oct(os.stat(tmp_path / "store" / "svc").st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "svc//x", "svc/./x", ""])
def test_local_store_refuses_keys_that_leave_its_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError, match="not a relative object key"):
        LocalStore(tmp_path).get_bytes(key)


# -- the uploader --


def test_a_bundle_is_shipped_whole_with_event_json_last(
    tmp_path: Path, uploaders: list[Uploader]
) -> None:
    folder = publish_bundle(
        tmp_path / "dumps", SERVICE, {"threads.txt": b"stacks", "heap.pb.gz": os.urandom(5000)}
    )
    store = FlakyStore(tmp_path / "bucket")
    uploader = Uploader(config(tmp_path / "dumps"), store=store).start()
    uploaders.append(uploader)
    assert uploader.flush(10)
    prefix = f"{SERVICE}/{folder.parent.name}/{folder.name}"
    assert store.puts == [f"{prefix}/heap.pb.gz", f"{prefix}/threads.txt", f"{prefix}/event.json"]
    event = json.loads(store.get_bytes(f"{prefix}/event.json"))
    for listed in event["files"]:
        content = store.get_bytes(f"{prefix}/{listed['name']}")
        assert hashlib.sha256(content).hexdigest() == listed["sha256"]
    assert spooled(tmp_path / "dumps") == []
    status = uploader.status()
    assert (status["uploaded"], status["pending"], status["last_error"]) == (1, 0, None)


@pytest.mark.timeout(120)  # a hang guard, not a measure
def test_notify_returns_at_once_while_an_upload_is_stuck(
    tmp_path: Path, uploaders: list[Uploader]
) -> None:
    store = FlakyStore(tmp_path / "bucket")
    store.gate = threading.Event()  # every put waits for it: a store that hangs
    uploader = Uploader(config(tmp_path / "dumps"), store=store).start()
    uploaders.append(uploader)
    first = publish_bundle(tmp_path / "dumps", SERVICE, {"threads.txt": b"1"})
    uploader.notify(first)
    assert store.at_gate.wait(HANG_GUARD)  # the uploader is now stuck inside put_file
    notifier = threading.Thread(target=lambda: [uploader.notify(first) for _ in range(20)])
    notifier.start()
    notifier.join(HANG_GUARD)  # a hang guard: notify must not wait for the stuck upload
    try:
        assert not notifier.is_alive()
        assert store.puts == []  # the upload is still stuck at the gate
        assert not uploader.flush(0.2)
    finally:
        store.gate.set()
    assert uploader.flush(HANG_GUARD)


def test_transient_failures_back_off_with_full_jitter_then_deliver(
    tmp_path: Path, uploaders: list[Uploader]
) -> None:
    publish_bundle(tmp_path / "dumps", SERVICE, {"threads.txt": b"x"})
    down = [StorageError("connection refused", code="EndpointConnectionError") for _ in range(6)]
    slept: list[float] = []
    uploader = Uploader(
        config(tmp_path / "dumps"),
        store=FlakyStore(tmp_path / "bucket", down),
        sleep=slept.append,
        backoff=Backoff(base=1.0, cap=8.0),
        rng=random.Random(5),
    ).start()
    uploaders.append(uploader)
    assert uploader.flush(10)
    ceilings = [1, 2, 4, 8, 8, 8]
    assert len(slept) == 6
    assert all(0 <= s <= c for s, c in zip(slept, ceilings, strict=True))
    assert len(set(slept)) == 6  # jittered, not a fixed schedule
    status = uploader.status()
    assert (status["failed_attempts"], status["permanent_errors"], status["uploaded"]) == (6, 0, 1)


def test_a_permanent_error_is_logged_once_per_period_and_retried_slowly(
    tmp_path: Path, uploaders: list[Uploader], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="holmespy")
    publish_bundle(tmp_path / "dumps", SERVICE, {"threads.txt": b"x"})
    denied = [
        StorageError("s3://b/p: access denied", permanent=True, code="AccessDenied")
        for _ in range(7)
    ]
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    uploader = Uploader(
        config(tmp_path / "dumps"),
        store=FlakyStore(tmp_path / "bucket", denied),
        clock=clock,
        sleep=sleep,
        backoff=Backoff(permanent=60.0),
    ).start()
    uploaders.append(uploader)
    deadline = time.monotonic() + 10
    while uploader.status()["uploaded"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slept == [60.0] * 7
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # 7 failures over 6 minutes of the fake clock: one line, and one more after 5 minutes.
    assert len(errors) == 2
    assert "s3://b/p: access denied" in errors[0]
    assert "1 event(s) wait in" in errors[0]
    assert uploader.status()["permanent_errors"] == 7


@pytest.mark.timeout(120)  # a hang guard, not a measure
def test_flush_gives_up_at_once_when_a_setting_is_wrong(
    tmp_path: Path, uploaders: list[Uploader]
) -> None:
    publish_bundle(tmp_path / "dumps", SERVICE, {"threads.txt": b"x"})
    denied = [StorageError("no such bucket", permanent=True, code="NoSuchBucket")] * 50
    uploader = Uploader(
        config(tmp_path / "dumps"), store=FlakyStore(tmp_path / "bucket", list(denied))
    ).start()
    uploaders.append(uploader)
    # An hour is never reached (the hang guard ends the test first): False can
    # only mean that flush gave up because the attempt failed for good.
    assert not uploader.flush(AN_HOUR)
    status = uploader.status()
    assert status["permanent_errors"] >= 1
    assert "no such bucket" in str(status["last_error"])
    assert uploader.ident in {t.ident for t in threading.enumerate()}  # not ended by a dead thread
    assert len(spooled(tmp_path / "dumps")) == 1


def test_the_spool_cap_applies_without_storage(
    tmp_path: Path, uploaders: list[Uploader], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="holmespy")
    dumps = tmp_path / "dumps"
    files = {"heap.pb.gz": os.urandom(10_000)}
    cap = on_disk(publish_bundle(tmp_path / "measure", SERVICE, files)) * 5 // 2  # 2.5 events
    uploader = Uploader(config(dumps, spool_max=cap)).start()
    uploaders.append(uploader)
    folders = []
    for _ in range(4):
        folders.append(publish_bundle(dumps, SERVICE, files))
        uploader.notify(folders[-1])
    assert uploader.flush(10)
    assert spooled(dumps) == [f.name for f in folders[2:]]
    assert uploader.status()["dropped"] == 2
    said = "\n".join(r.getMessage() for r in caplog.records if "dropped" in r.getMessage())
    assert folders[0].name in said
    assert folders[1].name in said
    assert f"HOLMES_SPOOL_MAX is {cap / 1024:.1f} KiB" in said
    assert "before they were uploaded" not in said  # nothing to upload them to


def test_two_uploaders_on_one_spool_ship_each_event_once(
    tmp_path: Path, uploaders: list[Uploader]
) -> None:
    dumps = tmp_path / "dumps"
    for _ in range(12):
        publish_bundle(dumps, SERVICE, {"threads.txt": os.urandom(100)})
    bucket = tmp_path / "bucket"
    siblings = [FlakyStore(bucket), FlakyStore(bucket)]
    for store in siblings:
        uploaders.append(Uploader(config(dumps), store=store).start())
    assert all(u.flush(20) for u in uploaders)
    puts = siblings[0].puts + siblings[1].puts
    assert len(puts) == len(set(puts)) == 24
    assert spooled(dumps) == []


def test_a_broken_event_is_set_aside_and_the_others_ship(
    tmp_path: Path, uploaders: list[Uploader], caplog: pytest.LogCaptureFixture
) -> None:
    dumps = tmp_path / "dumps"
    broken = publish_bundle(dumps, SERVICE, {"threads.txt": b"x"})
    (broken / "threads.txt").unlink()
    good = publish_bundle(dumps, SERVICE, {"threads.txt": b"y"})
    store = FlakyStore(tmp_path / "bucket")
    uploaders.append(uploader := Uploader(config(dumps), store=store).start())
    assert uploader.flush(10)
    assert spooled(dumps) == []
    assert all(good.name in key for key in store.puts)
    assert "threads.txt is listed in event.json but missing" in caplog.text
    assert (dumps / SERVICE / "quarantine" / broken.name / "event.json").is_file()
    assert uploader.status()["quarantined"] == 1


@pytest.mark.timeout(120)  # a hang guard, not a measure
def test_a_raising_or_hanging_callback_is_counted_and_never_felt(
    tmp_path: Path, uploaders: list[Uploader], caplog: pytest.LogCaptureFixture
) -> None:
    dumps = tmp_path / "dumps"
    told: list[StoredEvent] = []
    release = threading.Event()

    def raises(stored: StoredEvent) -> None:
        raise RuntimeError("bug in the user's callback")

    hung: list[threading.Thread] = []

    def hangs(stored: StoredEvent) -> None:
        hung.append(threading.current_thread())
        release.wait(HANG_GUARD)

    def join_until_done_or_hung(thread: threading.Thread, timeout: float) -> None:
        """Waits as long as the callback runs, but not for one known to hang (the
        reporter's timeout is then what ends the wait): no race with a slow machine."""
        deadline = time.monotonic() + HANG_GUARD
        while thread.is_alive() and thread not in hung and time.monotonic() < deadline:
            thread.join(0.01)

    reporter = Reporter(timeout=0.3, join=join_until_done_or_hung)
    for callback in (raises, hangs, told.append):
        reporter.subscribe(callback)
    uploader = Uploader(config(dumps), store=FlakyStore(tmp_path / "bucket"), reporter=reporter)
    uploaders.append(uploader.start())
    try:
        for n in range(2):
            uploader.notify(publish_bundle(dumps, SERVICE, {"threads.txt": bytes([n])}))
            # The hung callback holds its report until released, after this loop:
            # flush returning True at all means it did not wait for that callback.
            assert uploader.flush(AN_HOUR)
    finally:
        release.set()
    assert [t.event["rule"] for t in told] == ["thread", "thread"]
    assert told[0].files[0].key.endswith("/threads.txt")
    status = uploader.status()
    # Each event: one raise, plus a hang (first) or a skip while still hung (second).
    assert status["reporter_errors"] == 4
    assert status["uploaded"] == 2
    assert (
        "callback test_a_raising_or_hanging_callback_is_counted_and_never_felt.<locals>.raises"
        " raised RuntimeError: bug in the user's callback" in caplog.text
    )
    assert "hangs did not return within 0.3s" in caplog.text
    assert "hangs skipped: still stuck" in caplog.text

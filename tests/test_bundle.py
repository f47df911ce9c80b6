"""The event bundle on disk: ids, atomic publication, permissions, crash leftovers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from holmespy.bundle import (
    BundleWriter,
    event_folder,
    new_event_id,
    write_private,
)


def test_event_ids_sort_by_time_and_name_the_rule() -> None:
    early = new_event_id("cpu", dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC))
    late = new_event_id("task", dt.datetime(2026, 1, 2, 3, 4, 5, 7000, tzinfo=dt.UTC))
    assert early.startswith("20260102T030405.006Z-cpu-")
    assert early < late


def test_event_ids_are_unique_within_one_millisecond() -> None:
    now = dt.datetime.now(dt.UTC)
    assert len({new_event_id("cpu", now) for _ in range(10_000)}) == 10_000


def test_event_folder_follows_the_design_layout(tmp_path: Path) -> None:
    folder = event_folder(tmp_path, "api", "20261124T035412.123Z-thread-8f3a1c9b2e")
    assert folder == tmp_path / "api" / "2026-11-24" / "20261124T035412.123Z-thread-8f3a1c9b2e"


def test_a_bundle_appears_only_when_published(tmp_path: Path) -> None:
    event_id = new_event_id("thread")
    with BundleWriter(tmp_path, "svc", event_id) as bundle:
        write_private(bundle.temp / "threads.txt", b"stacks")
        assert not bundle.final.exists()
        assert list(bundle.final.parent.iterdir()) == [bundle.temp]
        path = bundle.publish({"id": event_id, "rule": "thread"})
    assert path == bundle.final
    event = json.loads((path / "event.json").read_text())
    assert event["files"] == [
        {"name": "threads.txt", "size": 6, "sha256": hashlib.sha256(b"stacks").hexdigest()}
    ]


def test_a_failed_capture_leaves_nothing_behind(tmp_path: Path) -> None:
    writer = BundleWriter(tmp_path, "svc", new_event_id("cpu"))

    def capture_that_dies_halfway() -> None:
        with writer as bundle:
            write_private(bundle.temp / "cpu.txt", b"half")
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        capture_that_dies_halfway()
    bundle = writer
    day = bundle.final.parent
    assert list(day.iterdir()) == []


def test_folders_are_0700_and_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with BundleWriter(tmp_path / "dumps", "svc", new_event_id("cpu")) as bundle:
            write_private(bundle.temp / "threads.txt", b"x")
            path = bundle.publish({})
    finally:
        os.umask(old)
    for folder in (tmp_path / "dumps", tmp_path / "dumps" / "svc", path.parent, path):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_write_private_never_overwrites(tmp_path: Path) -> None:
    write_private(tmp_path / "a", b"1")
    with pytest.raises(FileExistsError):
        write_private(tmp_path / "a", b"2")
    assert (tmp_path / "a").read_bytes() == b"1"

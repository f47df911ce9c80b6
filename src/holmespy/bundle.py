"""The event bundle: one folder per trigger, written atomically.

A bundle is built under `.tmp-<pid>-<event-id>` next to its final place and
renamed to `<event-id>` only once every file and `event.json` are written and
synced, so a reader (the CLI, the uploader) never sees half an event, and a
crash leaves only a temp folder that the next start removes. Folders are 0700
and files 0600: dumps show code, arguments and data of the process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

EVENT_FILE = "event.json"
TMP_PREFIX = ".tmp-"


def new_event_id(rule: str, now: dt.datetime | None = None) -> str:
    """`20261124T035412.123Z-thread-8f3a1c9b2e`: sorts by time, unique across hosts.

    40 random bits make two events of one millisecond collide once in ~10^12.
    """
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"
    return f"{stamp}-{rule}-{os.urandom(5).hex()}"


def event_folder(dump_path: Path, service: str, event_id: str) -> Path:
    """`<dump_path>/<service>/<YYYY-MM-DD>/<event-id>`, the date taken from the id (UTC)."""
    day = f"{event_id[0:4]}-{event_id[4:6]}-{event_id[6:8]}"
    return dump_path / service / day / event_id


def make_private_dirs(path: Path) -> None:
    """mkdir -p with 0700 on every folder it creates (umask would widen or narrow it)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Create `path` (0600, must not exist) with `data`, synced to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"name": path.name, "size": path.stat().st_size, "sha256": h.hexdigest()}


class BundleWriter:
    """Builds one event's folder under a temp name and publishes it with a rename."""

    def __init__(self, dump_path: Path, service: str, event_id: str) -> None:
        self.final = event_folder(dump_path, service, event_id)
        self.temp = self.final.parent / f"{TMP_PREFIX}{os.getpid()}-{event_id}"

    def __enter__(self) -> BundleWriter:
        make_private_dirs(self.temp.parent)
        self.temp.mkdir(mode=0o700)
        os.chmod(self.temp, 0o700)
        return self

    def __exit__(self, *exc: object) -> None:
        # Whatever went wrong, no half-written event stays behind.
        if self.temp.exists():
            shutil.rmtree(self.temp, ignore_errors=True)

    def publish(self, event: dict[str, Any]) -> Path:
        """Write `event.json` (listing every file with size and sha256), then rename."""
        files = sorted(p for p in self.temp.iterdir() if p.name != EVENT_FILE)
        event = {**event, "files": [file_digest(p) for p in files]}
        data = json.dumps(event, indent=2, sort_keys=False, default=str).encode() + b"\n"
        write_private(self.temp / EVENT_FILE, data)
        os.rename(self.temp, self.final)
        _fsync_dir(self.final.parent)
        return self.final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(dump_path: Path, service: str) -> list[Path]:
    """Remove temp folders left by crashed processes (their pid is gone) of this service."""
    removed: list[Path] = []
    service_dir = dump_path / service
    for temp in _temps(service_dir):
        pid_text = temp.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(temp, ignore_errors=True)
            removed.append(temp)
    return removed


def _temps(service_dir: Path) -> Iterable[Path]:
    try:
        days = list(service_dir.iterdir())
    except OSError:
        return []
    return [p for day in days if day.is_dir() for p in day.glob(TMP_PREFIX + "*")]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_os_error(exc: OSError, where: Path) -> str:
    """An OSError said as what to do about it."""
    if exc.errno == errno.ENOSPC:
        todo = "free disk space or point HOLMES_DUMP_PATH elsewhere"
        return f"no space left for dumps in {where}: {todo}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        todo = "set HOLMES_DUMP_PATH to a writable folder"
        return f"cannot write dumps in {where} ({exc.strerror}): {todo}"
    todo = "check that HOLMES_DUMP_PATH is a writable folder"
    return f"cannot write dumps in {where} ({exc}): {todo}"


def host_facts() -> dict[str, Any]:
    from holmespy import __version__

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "versions": {
            "python": sys.version.split()[0],
            "implementation": sys.implementation.name,
            "holmespy": __version__,
        },
    }

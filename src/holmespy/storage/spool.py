"""The spool: finished events waiting in the local dump folder, and its size cap.

An event is a published bundle folder `<root>/<service>/<YYYY-MM-DD>/<event-id>/`
with its `event.json`. Whoever ships or drops one first *claims* it with an
exclusive `flock` on the folder: prefork workers of one service share a dump
folder, and each runs an uploader, but only one of them ever holds an event.
The kernel releases the lock when its holder dies, so a killed process never
leaves an event stuck.

Removal renames the folder to `.tmp-<pid>-<event-id>` before deleting it, so
a crash halfway through leaves a temp folder (cleaned by the next start, as
for bundles) rather than an event with missing files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from holmespy.bundle import EVENT_FILE, TMP_PREFIX


@dataclass(frozen=True)
class SpooledEvent:
    path: Path
    """`<root>/<service>/<YYYY-MM-DD>/<event-id>`."""
    key: str
    """`<service>/<YYYY-MM-DD>/<event-id>`: the path below the root, also the object key prefix."""
    size: int

    @property
    def id(self) -> str:
        return self.path.name


class Claim:
    """An exclusive hold on one event folder; `release()` (or the holder's death) ends it."""

    def __init__(self, event: SpooledEvent, fd: int) -> None:
        self.event = event
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock


class Spool:
    def __init__(self, root: Path, cap: int) -> None:
        self.root = root
        self.cap = cap

    def events(self, service: str | None = None) -> list[SpooledEvent]:
        """Finished events, oldest first (event ids begin with their UTC time)."""
        found = []
        pattern = f"{service}/*/*/{EVENT_FILE}" if service else f"*/*/*/{EVENT_FILE}"
        for event_file in self.root.glob(pattern):
            folder = event_file.parent
            if folder.name.startswith(".") or folder.parent.name.startswith("."):
                continue
            size = _folder_size(folder)
            if size is not None:
                key = folder.relative_to(self.root).as_posix()
                found.append(SpooledEvent(path=folder, key=key, size=size))
        return sorted(found, key=lambda e: (e.id, e.key))

    def claim(self, event: SpooledEvent) -> Claim | None:
        """Hold `event`, or None if another uploader holds it or it is already gone."""
        try:
            fd = os.open(event.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder before us may have shipped and removed it meanwhile.
            if not (event.path / EVENT_FILE).is_file():
                raise FileNotFoundError(event.path)
        except OSError:
            os.close(fd)
            return None
        return Claim(event, fd)

    def remove(self, claim: Claim) -> None:
        """Delete a claimed event: first out of sight (renamed), then from the disk."""
        event = claim.event
        trash = event.path.parent / f"{TMP_PREFIX}{os.getpid()}-{event.id}"
        try:
            os.rename(event.path, trash)
        finally:
            claim.release()
        shutil.rmtree(trash, ignore_errors=True)

    def enforce_cap(self) -> tuple[list[SpooledEvent], int]:
        """Drop the oldest events until the folder fits the cap; returns them and the total left.

        The newest event always stays, even alone above the cap: it is the
        one most likely to explain what is happening now.
        """
        events = self.events()
        total = sum(e.size for e in events)
        dropped: list[SpooledEvent] = []
        for event in events[:-1]:
            if total <= self.cap:
                break
            claim = self.claim(event)
            if claim is None:
                continue  # being uploaded by someone: it leaves the spool soon anyway
            with contextlib.suppress(OSError):
                self.remove(claim)
                total -= event.size
                dropped.append(event)
        return dropped, total


def _folder_size(folder: Path) -> int | None:
    try:
        with os.scandir(folder) as entries:
            return sum(e.stat().st_size for e in entries if e.is_file(follow_symlinks=False))
    except OSError:
        return None  # removed while we looked

"""The spool: finished events waiting in the local dump folder, and its size cap.

An event is a published bundle folder `<root>/<service>/<YYYY-MM-DD>/<event-id>/`
with its `event.json`. Whoever ships or drops one first *claims* it with an
exclusive `flock` on the folder: prefork workers of one service share a dump
folder, and each runs an uploader, but only one of them ever holds an event.
The kernel releases the lock when its holder dies, so a killed process never
leaves an event stuck.

Only what holmespy wrote counts as an event. Every folder is reached by
descriptor, never through a link (`holmespy.safefs`), and a folder with an
event's name is taken only if it holds exactly `event.json` and the regular
files it lists, each of the listed size, and its id is not dated in the
future. Anything else with an event's name is *odd*: the uploader moves it
to `<root>/<service>/quarantine/`, where it is neither shipped nor counted.
The cap counts the bytes events occupy on disk (allocated blocks, as `du`
does), so neither a sparse file nor a planted "event" can push the real
ones out.

Removal renames the folder to `.tmp-<pid>-<event-id>` before deleting it, so
a crash halfway through leaves a temp folder (cleaned by the next start, as
for bundles) rather than an event with missing files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import reprlib
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from holmespy import safefs
from holmespy.bundle import DAY_RE, EVENT_FILE, EVENT_ID_RE, TMP_PREFIX, open_dump_root
from holmespy.config import default_dump_path
from holmespy.manifest import MAX_EVENT_JSON, BadManifest, Manifest, parse_manifest

MAX_FUTURE = 86400.0
"""Seconds an event id may be ahead of this host's clock; beyond that it was not written here."""
QUARANTINE = "quarantine"
"""`<root>/<service>/quarantine/`: never a day's name, so never listed as one."""
QUARANTINE_KEEP = 32
"""Entries kept in a service's quarantine; the oldest go first."""


@dataclass(frozen=True)
class SpooledEvent:
    path: Path
    """`<root>/<service>/<YYYY-MM-DD>/<event-id>`."""
    key: str
    """`<service>/<YYYY-MM-DD>/<event-id>`: the path below the root, also the object key prefix."""
    size: int
    """Bytes on disk of event.json and the files it lists."""
    published_ns: int = 0
    """When it was published: its event.json's mtime (epoch ns), which `BundleWriter.publish`
    sets. The spool's notion of an event's age."""

    @property
    def id(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class OddEntry:
    """Something with an event's name that holmespy did not write as it is."""

    path: Path
    key: str
    why: str

    @property
    def id(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Scan:
    events: list[SpooledEvent]
    """Oldest published first (see `Spool.events`)."""
    odd: list[OddEntry]


class OddEvent(Exception):
    """An event folder that is not as holmespy writes them; the message says how."""


class Claim:
    """An exclusive hold on one event folder; `release()` (or the holder's death) ends it."""

    def __init__(self, event: SpooledEvent, fd: int) -> None:
        self.event = event
        self._fd: int | None = fd

    @property
    def fd(self) -> int:
        """The claimed folder, open: read its files relative to it."""
        if self._fd is None:
            raise ValueError(f"the claim on {self.event.key} was released")
        return self._fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock


class Spool:
    def __init__(
        self, root: Path | None, cap: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._root = root
        self.cap = cap
        self.clock = clock
        self._manifests = Manifests()

    @property
    def root(self) -> Path:
        """The dump folder; the per-user default is the one of the user this process is now."""
        return self._root if self._root is not None else default_dump_path()

    def events(self, service: str | None = None) -> list[SpooledEvent]:
        """Finished events, oldest published first.

        The publish time, not the id, gives the order: ids carry their time
        only to the millisecond, and then a random part, so two events of
        one millisecond would otherwise sort by chance.
        """
        return self.scan(service).events

    def scan(self, service: str | None = None) -> Scan:
        """Every event of `service` (of all services if None), and every odd entry.

        Raises `safefs.Refused` when the root itself is not this user's alone.
        """
        root = self.root
        found: list[SpooledEvent] = []
        odd: list[OddEntry] = []
        root_fd = open_dump_root(root, create=False)
        if root_fd is None:
            return Scan([], [])
        with safefs.owned(root_fd):
            names = [service] if service else safefs.subfolders(root_fd)
            for name in names:
                if name.startswith("."):
                    continue
                for day, day_fd in _days(root_fd, root, name):
                    with safefs.owned(day_fd):
                        self._scan_day(day_fd, root, f"{name}/{day}", found, odd)
        self._manifests.forget_unseen()
        return Scan(sorted(found, key=lambda e: (e.published_ns, e.id, e.key)), odd)

    def _scan_day(
        self, day_fd: int, root: Path, base: str, found: list[SpooledEvent], odd: list[OddEntry]
    ) -> None:
        for name in sorted(os.listdir(day_fd)):
            if not EVENT_ID_RE.fullmatch(name):
                continue  # temp folders, and names holmespy never makes: not events
            key = f"{base}/{name}"
            try:
                fd = _open_entry(day_fd, name)
                with safefs.owned(fd):
                    inspected = inspect_event(
                        fd, root / key, now=self.clock(), known=self._manifests
                    )
            except FileNotFoundError:
                continue  # shipped or dropped by a sibling while we looked
            except OddEvent as exc:
                odd.append(OddEntry(root / key, key, str(exc)))
            except OSError as exc:
                odd.append(OddEntry(root / key, key, f"the folder cannot be read ({exc.strerror})"))
            else:
                found.append(SpooledEvent(root / key, key, inspected.size, inspected.published_ns))

    def claim(self, event: SpooledEvent) -> Claim | None:
        """Hold `event`, or None if another uploader holds it or it is already gone."""
        try:
            day_fd = self._open_day(event.key)
        except OSError:
            return None
        if day_fd is None:
            return None
        with safefs.owned(day_fd):
            try:
                fd = os.open(event.id, safefs.DIR_FLAGS, dir_fd=day_fd)
            except OSError:
                return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder before us may have shipped and removed it meanwhile.
            os.stat(EVENT_FILE, dir_fd=fd, follow_symlinks=False)
        except OSError:
            os.close(fd)
            return None
        return Claim(event, fd)

    def remove(self, claim: Claim) -> None:
        """Delete a claimed event: first out of sight (renamed), then from the disk."""
        event = claim.event
        trash = f"{TMP_PREFIX}{os.getpid()}-{event.id}"
        day_fd = None
        try:
            day_fd = self._open_day(event.key)
            if day_fd is None:
                return
            os.rename(event.id, trash, src_dir_fd=day_fd, dst_dir_fd=day_fd)
        finally:
            claim.release()
            if day_fd is not None:
                with safefs.owned(day_fd), contextlib.suppress(OSError):
                    safefs.remove_tree(day_fd, trash)

    def quarantine(self, entry: OddEntry) -> Path | None:
        """Move an odd entry to its service's quarantine; None if it is held, gone or fine now."""
        try:
            day_fd = self._open_day(entry.key)
        except OSError:
            return None
        if day_fd is None:
            return None
        with safefs.owned(day_fd):
            try:
                fd = _open_entry(day_fd, entry.id)
            except FileNotFoundError:
                return None
            except OddEvent:
                return self._move_aside(day_fd, entry.key)  # a link or a file: nothing to lock
            with safefs.owned(fd):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return None  # a sibling holds it: it decides
                try:
                    inspect_event(fd, entry.path, now=self.clock())
                except (OddEvent, OSError):
                    return self._move_aside(day_fd, entry.key)
                return None  # it was caught mid-change (a sibling removing it); fine now

    def quarantine_claimed(self, claim: Claim) -> Path | None:
        """Move a claimed event to its service's quarantine and release it."""
        try:
            day_fd = self._open_day(claim.event.key)
            if day_fd is None:
                return None
            with safefs.owned(day_fd):
                return self._move_aside(day_fd, claim.event.key)
        finally:
            claim.release()

    def enforce_cap(
        self, events: list[SpooledEvent] | None = None
    ) -> tuple[list[SpooledEvent], int]:
        """Drop the oldest events until the folder fits the cap; returns them and the total left.

        `events` is a fresh `scan().events`, or None to scan now. The newest
        event always stays, even alone above the cap: it is the one most
        likely to explain what is happening now.
        """
        events = self.events() if events is None else events
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

    def _open_day(self, key: str) -> int | None:
        service, day, _ = key.split("/")
        root = self.root
        root_fd = open_dump_root(root, create=False)
        if root_fd is None:
            return None
        with safefs.owned(root_fd):
            return safefs.open_below(root_fd, root, [service, day], create=False)

    def _move_aside(self, day_fd: int, key: str) -> Path | None:
        """Rename `<day>/<name>` into the service's quarantine; None if it is gone already."""
        service, _, name = key.split("/")
        root = self.root
        root_fd = open_dump_root(root, create=False)
        if root_fd is None:
            return None
        with safefs.owned(root_fd):
            folder = safefs.open_below(root_fd, root, [service, QUARANTINE], create=True)
        assert folder is not None  # created
        with safefs.owned(folder):
            dest = name
            with contextlib.suppress(FileNotFoundError):
                os.stat(dest, dir_fd=folder, follow_symlinks=False)
                dest = f"{name}.{os.urandom(3).hex()}"  # the same id set aside twice
            try:
                os.rename(name, dest, src_dir_fd=day_fd, dst_dir_fd=folder)
            except FileNotFoundError:
                return None  # a link or file has no lock: a sibling moved it first
            for old in sorted(os.listdir(folder))[:-QUARANTINE_KEEP]:
                with contextlib.suppress(OSError):
                    safefs.remove_tree(folder, old)
        return root / service / QUARANTINE / dest


@dataclass(frozen=True)
class Inspected:
    manifest: Manifest
    raw: bytes | None
    """event.json as read; None when its manifest was `known`."""
    size: int
    """Bytes on disk of event.json and the files it lists."""
    published_ns: int
    """event.json's mtime (epoch ns): when the event was published."""


class Manifests:
    """Manifests already parsed, by the identity of their event.json (inode, size, times),
    so that a scan parses only what changed since the one before."""

    def __init__(self) -> None:
        self._before: dict[tuple[int, ...], Manifest] = {}
        self._seen: dict[tuple[int, ...], Manifest] = {}

    def get(self, key: tuple[int, ...]) -> Manifest | None:
        found = self._seen.get(key) or self._before.get(key)
        if found is not None:
            self._seen[key] = found
        return found

    def put(self, key: tuple[int, ...], manifest: Manifest) -> None:
        self._seen[key] = manifest

    def forget_unseen(self) -> None:
        """End of a scan: keep only what it saw (what left the spool is forgotten)."""
        self._before, self._seen = self._seen, {}


def inspect_event(fd: int, path: Path, *, now: float, known: Manifests | None = None) -> Inspected:
    """What the event folder open at `fd` holds, if it is as holmespy writes them; else `OddEvent`.

    Cheap: names, kinds and sizes only. The uploader checks each file's
    sha256 when it reads the file to ship it.
    """
    me = os.geteuid()
    st = os.fstat(fd)
    if st.st_uid != me:
        raise OddEvent(f"the folder is owned by {safefs.user(st.st_uid)}, not {safefs.user(me)}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OddEvent(f"the folder is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")
    when = _id_time(path.name)
    if when is None:
        raise OddEvent("its id holds no valid date")
    if when > now + MAX_FUTURE:
        stamp = dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")
        raise OddEvent(f"its id is dated {stamp}, more than a day ahead of this host's clock")
    manifest, raw, est = _read_manifest(fd, path / EVENT_FILE, known)
    unlisted = sorted(set(os.listdir(fd)) - manifest.names - {EVENT_FILE})
    if unlisted:
        raise OddEvent(
            f"{reprlib.repr(unlisted[0])} is in the folder but not listed in {EVENT_FILE}"
        )
    if est.st_mtime > now + MAX_FUTURE:
        stamp = dt.datetime.fromtimestamp(est.st_mtime, dt.UTC).isoformat(timespec="seconds")
        raise OddEvent(f"{EVENT_FILE} was modified at {stamp}, more than a day ahead of now")
    size = _on_disk(est)
    for listed in manifest.files:
        try:
            fst = os.stat(listed.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise OddEvent(f"{listed.name} is listed in {EVENT_FILE} but missing") from None
        if not stat.S_ISREG(fst.st_mode):
            raise OddEvent(f"{listed.name} is {safefs.kind(fst.st_mode)}, not a regular file")
        if fst.st_uid != me:
            raise OddEvent(f"{listed.name} is owned by {safefs.user(fst.st_uid)}")
        if fst.st_size != listed.size:
            raise OddEvent(
                f"{listed.name} is {fst.st_size} bytes where {EVENT_FILE} says {listed.size}"
            )
        size += _on_disk(fst)
    return Inspected(manifest, raw, size, est.st_mtime_ns)


def _read_manifest(
    fd: int, path: Path, known: Manifests | None
) -> tuple[Manifest, bytes | None, os.stat_result]:
    """The event's manifest, its event.json as read (None if known), and its fstat."""
    try:
        efd, st = safefs.open_file(fd, EVENT_FILE, path)
    except FileNotFoundError:
        raise OddEvent(f"{EVENT_FILE} is missing") from None
    except safefs.Refused as exc:
        raise OddEvent(f"{EVENT_FILE} {exc.problem}") from None
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with safefs.owned(efd):
        manifest = known.get(key) if known is not None else None
        if manifest is not None:
            return manifest, None, st
        try:
            raw = safefs.read_open(efd, st, path, limit=MAX_EVENT_JSON)
            manifest = parse_manifest(raw)
        except safefs.Refused as exc:
            raise OddEvent(f"{EVENT_FILE} {exc.problem}") from None
        except BadManifest as exc:
            raise OddEvent(str(exc)) from None
    if known is not None:
        known.put(key, manifest)
    return manifest, raw, st


def _days(root_fd: int, root: Path, service: str) -> Iterator[tuple[str, int]]:
    """The day folders of `service`, each open (the caller closes it); a link or a
    folder not ours is never entered."""
    try:
        service_fd = safefs.open_below(root_fd, root, [service], create=False)
    except OSError:
        return
    if service_fd is None:
        return
    with safefs.owned(service_fd):
        for day in safefs.subfolders(service_fd):
            if not DAY_RE.fullmatch(day):
                continue
            try:
                day_fd = safefs.open_below(service_fd, root / service, [day], create=False)
            except OSError:
                continue
            if day_fd is not None:
                yield day, day_fd


def _open_entry(day_fd: int, name: str) -> int:
    """The folder `name`; `OddEvent` if it is a link or a file, FileNotFoundError if gone."""
    try:
        return os.open(name, safefs.DIR_FLAGS, dir_fd=day_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        mode = os.stat(name, dir_fd=day_fd, follow_symlinks=False).st_mode
        raise OddEvent(f"the entry is {safefs.kind(mode)}, not an event folder") from None


def _on_disk(st: os.stat_result) -> int:
    return st.st_blocks * 512  # what `du` counts: a sparse file's holes take no space


def _id_time(event_id: str) -> float | None:
    match = EVENT_ID_RE.fullmatch(event_id)
    if match is None:
        return None
    s = match.group(1)  # by hand: strptime would be a third of a scan's time
    try:
        when = dt.datetime(
            int(s[0:4]),
            int(s[4:6]),
            int(s[6:8]),
            int(s[9:11]),
            int(s[11:13]),
            int(s[13:15]),
            int(s[16:19]) * 1000,
            tzinfo=dt.UTC,
        )
    except ValueError:
        return None  # digits that are no date (month 13)
    return when.timestamp()

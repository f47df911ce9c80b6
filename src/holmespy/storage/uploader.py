"""The uploader: ships finished bundles from the spool to the store, losing none.

One daemon thread, woken by `notify()` after each published bundle (and
every minute, for events other processes of the service left behind);
without a store there is no thread, and `notify()` only applies the cap. Each
pass first applies the spool's size cap, then ships events oldest first: the
data files, then `event.json` last, so a reader of the bucket that sees
`event.json` sees a whole event. An event leaves the spool only once the
store confirmed every file; only then is the reporter told.

Only what holmespy wrote is shipped: an event goes up only if its folder
holds exactly the regular files its `event.json` lists, with the listed
sizes and sha256 digests, read by descriptor, never through a link. An
event that fails this (a planted one, a damaged one) is moved to
`<dump>/<service>/quarantine/` with one log line and counted in `status()`
as `quarantined`; the events after it ship as usual.

Failures never reach the host. Network errors, throttling and 5xx are
retried with exponential backoff and full jitter; a setting that is wrong
(no such bucket, access denied, no credentials) is said in one clear log line
every few minutes, naming the bucket and the setting to check, and retried
slowly in case someone fixes it. Either way the events wait in the spool,
and a restart picks them up.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from holmespy import safefs
from holmespy._log import log as lazy_log
from holmespy.bundle import EVENT_FILE
from holmespy.config import Config
from holmespy.event import Event
from holmespy.lazyimport import importing
from holmespy.manifest import ListedFile, Manifest
from holmespy.storage.base import ObjectInfo, Store
from holmespy.storage.local import LocalStore
from holmespy.storage.reporter import Reporter, StoredEvent, StoredFile
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import Encryption, S3Location, StorageError, redact
from holmespy.storage.spool import Claim, OddEntry, OddEvent, Spool, SpooledEvent, inspect_event

log = lazy_log.real()  # with its NullHandler and HOLMES_LOG_LEVEL

ATTEMPT_FLOOR = 30.0
"""Seconds every file's upload attempt may take, whatever its size..."""
ATTEMPT_MIN_RATE = 1 << 20
"""...plus one second per this many bytes: a store slower than 1 MiB/s is treated as down."""
RESCAN_EVERY = 60.0
"""An idle uploader still looks at the spool this often (events of sibling processes)."""
FLUSH_RETRY = 0.5
"""Seconds between attempts while someone waits in `flush()`."""
TRANSIENT_LOG_EVERY = 60.0
PERMANENT_LOG_EVERY = 300.0
MAX_LISTED = 5
"""Event ids named in one log line about dropped events."""


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    cap: float = 60.0
    permanent: float = 60.0
    """Seconds between attempts while a setting is wrong: someone may be fixing it."""

    def delay(self, failures: int, rng: random.Random) -> float:
        # Full jitter: prefork siblings that failed together do not retry together.
        return rng.uniform(0.0, min(self.cap, self.base * 2.0 ** min(failures - 1, 30)))


class _Outcome(enum.Enum):
    DONE = "done"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Uploader:
    """Ships the service's events to `config.storage`, and keeps the spool within its cap."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if store is None and config.storage is not None:
            encryption = Encryption.from_config(config)
            store = S3Store(S3Location.parse(config.storage), encryption=encryption, max_attempts=3)
        self.store = store
        self.target = _describe(store)
        self.service = config.service
        self.spool = Spool(config.dump_path, config.spool_max)  # None: the user's default
        self.reporter = reporter or Reporter(webhook_url=config.webhook_url, presign=config.presign)
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._thread = threading.Thread(target=self._run, name="holmespy-upload", daemon=True)
        self._cond = threading.Condition()
        self._stopping = False
        self._requested = 1  # the first pass, over what earlier runs left, counts as asked for
        self._completed = 0
        self._passes = 0
        self._permanent_pass = 0
        self._flushers = 0
        self._fresh: set[Path] = set()
        self._broken: set[Path] = set()
        self._claim: Claim | None = None
        self._failures = 0
        self._logged_at: dict[str, float] = {}
        self.uploaded = 0
        self.uploaded_bytes = 0
        self.failed_attempts = 0
        self.permanent_errors = 0
        self.dropped = 0
        self.quarantined = 0
        self.pending = 0
        self.last_error: str | None = None
        self.last_upload: str | None = None

    def __repr__(self) -> str:
        return f"Uploader(service={self.service!r}, target={self.target!r})"

    # -- the interface the watcher uses --

    @property
    def ident(self) -> int | None:
        """The thread's ident (None without a store: then there is no thread)."""
        return self._thread.ident

    def start(self) -> Uploader:
        """Start shipping; without a store there is nothing to ship, and no thread."""
        if self.store is None:
            return self
        if isinstance(self.store, S3Store):
            # boto3 needs this module, and importing it registers a hook with
            # threading that is refused once shutdown has begun: a program that
            # exits right after start() would have no flush. Here it costs <1 ms.
            with importing:
                import concurrent.futures.thread  # noqa: F401
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()
        return self

    def notify(self, event_dir: Path) -> None:
        """A bundle was just published at `event_dir`; returns at once, never raises.

        Without a store, the spool cap is applied right here, on the caller's
        thread (in holmespy, the capture worker's): a scan of the dump folder.
        """
        if self.store is None:
            try:
                self._apply_cap()
            except Exception as exc:
                self._note("cap", f"cannot apply HOLMES_SPOOL_MAX to {self.spool.root}: {exc}")
            return
        with self._cond:
            self._fresh.add(event_dir)
            self.pending += 1
            self._requested += 1
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every event notified so far is stored; True if so.

        Returns early (False) when an attempt made meanwhile failed for a reason
        that waiting cannot fix (a wrong setting): the events stay in the spool.
        Within the same `timeout`, it then waits for their reports to be sent
        (the reporter's thread sends them; uploads never wait for it).
        """
        deadline = time.monotonic() + timeout
        stored = self._flush_uploads(deadline)
        if self.reporter.active:
            self.reporter.drain(max(0.0, deadline - time.monotonic()))
        return stored

    def _flush_uploads(self, deadline: float) -> bool:
        if self.store is None:
            return True  # nothing is ever waiting to be shipped
        with self._cond:
            target, started = self._requested, self._passes
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._completed < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._thread.is_alive():
                        return False
                    if self._permanent_pass > started:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushers -= 1

    def stop(self, timeout: float) -> bool:
        """Give pending uploads up to `timeout` s, then stop; True if nothing was left behind.

        What is not stored by then stays in the spool for the next start. An
        upload still in flight is abandoned on a daemon thread: it cannot hold
        the interpreter's exit.
        """
        deadline = time.monotonic() + timeout
        delivered = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.reporter.close(max(0.0, deadline - time.monotonic()))
        return delivered

    def abandon_after_fork(self) -> None:
        """In a forked child: let go of the parent's claim without touching its threads."""
        claim, self._claim = self._claim, None
        if claim is not None:
            claim.release()  # the parent's descriptor still holds the lock

    def status(self) -> dict[str, int | str | None]:
        return {
            "storage": self.target,
            "uploaded": self.uploaded,
            "uploaded_bytes": self.uploaded_bytes,
            "failed_attempts": self.failed_attempts,
            "permanent_errors": self.permanent_errors,
            "dropped": self.dropped,
            "quarantined": self.quarantined,
            "pending": self.pending,
            "reporter_errors": self.reporter.errors,
            "last_error": self.last_error,
            "last_upload": self.last_upload,
        }

    # -- the thread --

    def _run(self) -> None:
        store = self.store
        if store is None:
            return
        # Temp folders of dead processes are the watcher's: it salvages them at start.
        if isinstance(store, S3Store):
            # Import boto3 (a few hundred ms) now, off the host's thread, rather
            # than in the last flush at exit.
            try:
                store.client  # noqa: B018 - made for its side effect
            except StorageError as exc:
                self._note("client", str(exc), every=PERMANENT_LOG_EVERY, level=logging.ERROR)
        while True:
            with self._cond:
                if self._stopping:
                    return
                target = self._requested
                self._passes += 1
                this_pass = self._passes
            try:
                outcome = self._pass(store)
            except Exception as exc:  # a bug here must not end the thread: retried later
                self.failed_attempts += 1
                self._failures += 1  # and backed off like any failure, not retried at once
                self._note("internal", f"upload pass failed: {type(exc).__name__}: {exc}")
                log.debug("holmespy upload pass failed", exc_info=exc)
                outcome = _Outcome.TRANSIENT
            with self._cond:
                if outcome is _Outcome.DONE:
                    self._completed = max(self._completed, target)
                elif outcome is _Outcome.PERMANENT:
                    self._permanent_pass = this_pass
                self._cond.notify_all()
            self._rest(outcome, target)

    def _rest(self, outcome: _Outcome, target: int) -> None:
        if outcome is _Outcome.DONE:
            self._failures = 0
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopping or self._requested > target, RESCAN_EVERY
                )
            return
        delay = (
            self._backoff.permanent
            if outcome is _Outcome.PERMANENT
            else self._backoff.delay(self._failures, self._rng)
        )
        if self._sleep is not None:
            self._sleep(delay)
            return
        with self._cond:
            if self._flushers > 0:
                self._cond.wait_for(lambda: self._stopping, min(delay, FLUSH_RETRY))
            else:
                self._cond.wait_for(lambda: self._stopping or self._flushers > 0, delay)

    def _pass(self, store: Store) -> _Outcome:
        events = self._apply_cap()
        waiting = [e for e in events if _service(e.key) == self.service]
        waiting = [e for e in waiting if e.path not in self._broken]
        self.pending = len(waiting)
        for event in waiting:
            if self._stopping:
                return _Outcome.TRANSIENT
            try:
                outcome = self._ship_one(store, event)
            except Exception as exc:  # a bug with one event must not hold back the others
                self.failed_attempts += 1
                self._broken.add(event.path)
                self._note(
                    f"broken {event.id}",
                    f"cannot ship {event.path} ({type(exc).__name__}: {exc}); it stays there",
                )
                log.debug("holmespy could not ship %s", event.key, exc_info=exc)
                continue
            if outcome is not _Outcome.DONE:
                return outcome
            self.pending = max(0, self.pending - 1)
        return _Outcome.DONE

    def _ship_one(self, store: Store, event: SpooledEvent) -> _Outcome:
        claim = self.spool.claim(event)
        if claim is None:
            return _Outcome.DONE  # a sibling process ships it, or already did
        self._claim = claim
        with self._cond:
            fresh = event.path in self._fresh
            self._fresh.discard(event.path)
        try:
            stored = self._ship(store, claim, fresh=fresh)
            self.spool.remove(claim)
        except OddEvent as exc:
            self._set_aside(OddEntry(event.path, event.key, str(exc)), claim)
            return _Outcome.DONE
        except StorageError as exc:
            return self._failed(exc)
        finally:
            self._claim = None
            claim.release()
        if self._failures:
            log.warning("holmespy uploads to %s work again", self.target)
        self._failures = 0
        self.uploaded += 1
        self.last_upload = stored.location
        log.info("holmespy stored event %s in %s", event.id, stored.location)
        if self.reporter.active:
            self.reporter.report(stored)
        return _Outcome.DONE

    def _ship(self, store: Store, claim: Claim, *, fresh: bool) -> StoredEvent:
        """Store every file of the claimed event, event.json last.

        Raises StorageError, or OddEvent for an event holmespy did not write as it is.
        """
        event = claim.event
        with _verified(claim, self.spool.clock()) as (manifest, opened):
            return self._ship_verified(store, event, manifest, opened, fresh=fresh)

    def _ship_verified(
        self,
        store: Store,
        event: SpooledEvent,
        manifest: Manifest,
        opened: list[tuple[ListedFile, Path]],
        *,
        fresh: bool,
    ) -> StoredEvent:
        if not fresh:
            # A process killed mid-upload left parts behind; this event is ours now.
            try:
                store.clean_incomplete(event.key + "/")
            except StorageError as exc:
                log.debug("holmespy could not clean incomplete uploads: %s", exc)
        facts, _ = Event.read(manifest.event)  # a value of a wrong type is left out
        common = {
            "service": facts.service,
            "host": facts.host or "",
            "pid": "" if facts.pid is None else str(facts.pid),
            "rule": facts.rule,
            "event-id": facts.id or event.id,
        }
        for listed, path in opened:  # event.json is the last
            key = f"{event.key}/{listed.name}"
            if not fresh and _already_stored(store, key, listed.size, listed.sha256):
                continue
            timeout = ATTEMPT_FLOOR + listed.size / ATTEMPT_MIN_RATE
            metadata = {**common, "sha256": listed.sha256}
            store.put_file(key, path, metadata, timeout=timeout)
            self.uploaded_bytes += listed.size
        files = [listed for listed, _ in opened]
        return self._describe_stored(store, event, manifest, files)

    def _describe_stored(
        self,
        store: Store,
        event: SpooledEvent,
        manifest: Manifest,
        files: list[ListedFile],
    ) -> StoredEvent:
        presign = self.reporter.presign if self.reporter.active else None
        stored = []
        for listed in files:
            name, size, sha256 = listed.name, listed.size, listed.sha256
            key = f"{event.key}/{name}"
            link = None
            if presign is not None:
                try:
                    link = store.presign(key, presign)
                except StorageError as exc:
                    self._note("presign", f"cannot presign {key}: {exc}")
            stored.append(StoredFile(name, key, size, sha256, store.url(key), link))
        return StoredEvent(manifest.event, f"{self.target}/{event.key}/", tuple(stored))

    def _failed(self, exc: StorageError) -> _Outcome:
        self.failed_attempts += 1
        self._failures += 1
        waiting = f"{self.pending} event(s) wait in {self.spool.root}"
        if exc.permanent:
            self.permanent_errors += 1
            every = f"retried every {self._backoff.permanent:g}s"
            message = f"cannot upload to {self.target}: {exc}; {waiting}, {every}"
            self._note(
                f"permanent {exc.code}", message, every=PERMANENT_LOG_EVERY, level=logging.ERROR
            )
            return _Outcome.PERMANENT
        message = f"cannot upload to {self.target} yet: {exc}; {waiting}, retrying with backoff"
        self._note(f"transient {exc.code}", message)
        return _Outcome.TRANSIENT

    def _apply_cap(self) -> list[SpooledEvent]:
        """Set this service's odd entries aside, then apply the cap; returns the events left."""
        scan = self.spool.scan()
        for odd in scan.odd:
            if _service(odd.key) == self.service:
                self._set_aside(odd)
        dropped, total = self.spool.enforce_cap(scan.events)
        if not dropped:
            return scan.events
        self.dropped += len(dropped)
        with self._cond:
            self._fresh.difference_update(e.path for e in dropped)
        ids = ", ".join(e.id for e in dropped[:MAX_LISTED])
        more = f" and {len(dropped) - MAX_LISTED} more" if len(dropped) > MAX_LISTED else ""
        lost = " before they were uploaded" if self.store is not None else ""
        log.warning(
            "holmespy dropped the %d oldest event(s) from %s%s: %s%s; the folder holds %s "
            "and HOLMES_SPOOL_MAX is %s",
            len(dropped),
            self.spool.root,
            lost,
            ids,
            more,
            _human(total),
            _human(self.spool.cap),
        )
        gone = {e.path for e in dropped}
        return [e for e in scan.events if e.path not in gone]

    def _set_aside(self, odd: OddEntry, claim: Claim | None = None) -> None:
        """Move an odd entry (claimed, or not) to quarantine, with one log line."""
        try:
            moved = (
                self.spool.quarantine(odd)
                if claim is None
                else self.spool.quarantine_claimed(claim)
            )
        except OSError as exc:
            self._broken.add(odd.path)
            self._note(
                f"quarantine {odd.id}",
                f"will not ship {odd.path}: {odd.why}; and cannot set it aside: {exc}",
                every=PERMANENT_LOG_EVERY,
            )
            return
        if moved is None:
            return  # held by a sibling (it decides), gone, or fine after all
        self.quarantined += 1
        log.warning(
            "holmespy set aside %s: %s; moved to %s, never shipped (%d set aside so far)",
            odd.key,
            odd.why,
            moved,
            self.quarantined,
        )

    def _note(
        self,
        kind: str,
        message: str,
        *,
        every: float = TRANSIENT_LOG_EVERY,
        level: int = logging.WARNING,
    ) -> None:
        """Record the error; log it unless the same kind was logged less than `every` s ago."""
        message = redact(message)
        self.last_error = message
        now = self._clock()
        last = self._logged_at.get(kind)
        if last is None or now - last >= every:
            self._logged_at[kind] = now
            log.log(level, "holmespy %s", message)


@contextlib.contextmanager
def _verified(claim: Claim, now: float) -> Iterator[tuple[Manifest, list[tuple[ListedFile, Path]]]]:
    """The claimed event's manifest and every file to ship, event.json last, each verified.

    A file is taken only if it is a regular file in the event's folder with
    the size and sha256 event.json lists; it is then shipped from the
    descriptor that was checked (see `safefs.fd_path`), so no link or
    swapped file can be read instead. Raises `OddEvent` otherwise.
    """
    event = claim.event
    inspected = inspect_event(claim.fd, event.path, now=now)
    raw = inspected.raw
    assert raw is not None  # read now: nothing was `known`
    files = [*inspected.manifest.files]
    files.append(ListedFile(EVENT_FILE, len(raw), hashlib.sha256(raw).hexdigest()))
    opened: list[tuple[ListedFile, Path]] = []
    with contextlib.ExitStack() as stack:
        for listed in files:
            try:
                fd, st = safefs.open_file(claim.fd, listed.name, event.path / listed.name)
            except FileNotFoundError:
                raise OddEvent(f"{listed.name} is listed in {EVENT_FILE} but missing") from None
            except safefs.Refused as exc:
                raise OddEvent(f"{listed.name} {exc.problem}") from None
            stack.callback(os.close, fd)
            if st.st_size != listed.size or _sha256(fd) != listed.sha256:
                what = (
                    "event.json changed while it was read"
                    if listed.name == EVENT_FILE
                    else (f"{listed.name} does not match the size and sha256 {EVENT_FILE} lists")
                )
                raise OddEvent(what)
            opened.append((listed, safefs.fd_path(fd, event.path / listed.name)))
        yield inspected.manifest, opened


def _sha256(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, 1 << 20, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def _service(key: str) -> str:
    return key.split("/", 1)[0]


def _already_stored(store: Store, key: str, size: int, sha256: str) -> bool:
    """True if an earlier attempt stored this exact file (same size and sha256 metadata)."""
    try:
        info: ObjectInfo | None = store.head(key)
    except StorageError as exc:
        if not exc.permanent:
            raise
        return False  # e.g. a write-only identity may not read: upload again
    return info is not None and info.size == size and info.metadata.get("sha256") == sha256


def _describe(store: Store | None) -> str | None:
    if isinstance(store, S3Store):
        return store.location.url()
    if isinstance(store, LocalStore):
        return str(store.root)
    return None if store is None else repr(store)


def _human(size: int) -> str:
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size >= 1024**power:
            return f"{size / 1024**power:.1f} {unit}"
    return f"{size} B"

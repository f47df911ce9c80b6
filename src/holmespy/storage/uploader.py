"""The uploader: ships finished bundles from the spool to the store, losing none.

One daemon thread, woken by `notify()` after each published bundle (and
every minute, for events other processes of the service left behind);
without a store there is no thread, and `notify()` only applies the cap. Each
pass first applies the spool's size cap, then ships events oldest first: the
data files, then `event.json` last, so a reader of the bucket that sees
`event.json` sees a whole event. An event leaves the spool only once the
store confirmed every file; only then is the reporter told.

Failures never reach the host. Network errors, throttling and 5xx are
retried with exponential backoff and full jitter; a setting that is wrong
(no such bucket, access denied, no credentials) is said in one clear log line
every few minutes, naming the bucket and the setting to check, and retried
slowly in case someone fixes it. Either way the events wait in the spool,
and a restart picks them up.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holmespy.bundle import EVENT_FILE, remove_stale_temps
from holmespy.config import Config
from holmespy.storage.base import ObjectInfo, Store
from holmespy.storage.local import LocalStore
from holmespy.storage.reporter import Reporter, StoredEvent, StoredFile
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import Encryption, S3Location, StorageError, redact
from holmespy.storage.spool import Claim, Spool, SpooledEvent

log = logging.getLogger("holmespy")

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


class BrokenEvent(Exception):
    """An event in the spool that cannot be shipped as it is (unreadable event.json, lost file)."""


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
        self.spool = Spool(config.dump_path, config.spool_max)
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
        """
        if self.store is None:
            return True  # nothing is ever waiting to be shipped
        deadline = time.monotonic() + timeout
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
        try:
            remove_stale_temps(self.spool.root, self.service)
        except Exception as exc:
            self._note(
                "cleanup", f"cannot clean {self.spool.root}: {exc}", every=PERMANENT_LOG_EVERY
            )
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
        self._apply_cap()
        waiting = [e for e in self.spool.events(self.service) if e.path not in self._broken]
        self.pending = len(waiting)
        for event in waiting:
            if self._stopping:
                return _Outcome.TRANSIENT
            outcome = self._ship_one(store, event)
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
            stored = self._ship(store, event, fresh=fresh)
            self.spool.remove(claim)
        except BrokenEvent as exc:
            self._broken.add(event.path)
            self._note(f"broken {event.id}", f"cannot ship {event.path}: {exc}; it stays there")
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

    def _ship(self, store: Store, event: SpooledEvent, *, fresh: bool) -> StoredEvent:
        """Store every file of `event`, event.json last; raises StorageError or BrokenEvent."""
        facts, files = _read_event(event.path)
        if not fresh:
            # A process killed mid-upload left parts behind; this event is ours now.
            try:
                store.clean_incomplete(event.key + "/")
            except StorageError as exc:
                log.debug("holmespy could not clean incomplete uploads: %s", exc)
        common = {
            "service": str(facts.get("service", "")),
            "host": str(facts.get("host", "")),
            "pid": str(facts.get("pid", "")),
            "rule": str(facts.get("rule", "")),
            "event-id": str(facts.get("id", event.id)),
        }
        for name, size, sha256 in files:
            key = f"{event.key}/{name}"
            if not fresh and _already_stored(store, key, size, sha256):
                continue
            timeout = ATTEMPT_FLOOR + size / ATTEMPT_MIN_RATE
            store.put_file(key, event.path / name, {**common, "sha256": sha256}, timeout=timeout)
            self.uploaded_bytes += size
        return self._describe_stored(store, event, facts, files)

    def _describe_stored(
        self,
        store: Store,
        event: SpooledEvent,
        facts: dict[str, Any],
        files: list[tuple[str, int, str]],
    ) -> StoredEvent:
        presign = self.reporter.presign if self.reporter.active else None
        stored = []
        for name, size, sha256 in files:
            key = f"{event.key}/{name}"
            link = None
            if presign is not None:
                try:
                    link = store.presign(key, presign)
                except StorageError as exc:
                    self._note("presign", f"cannot presign {key}: {exc}")
            stored.append(StoredFile(name, key, size, sha256, store.url(key), link))
        return StoredEvent(facts, f"{self.target}/{event.key}/", tuple(stored))

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

    def _apply_cap(self) -> None:
        dropped, total = self.spool.enforce_cap()
        if not dropped:
            return
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


def _read_event(folder: Path) -> tuple[dict[str, Any], list[tuple[str, int, str]]]:
    """event.json's facts, and every file to ship as (name, size, sha256), event.json last."""
    try:
        raw = (folder / EVENT_FILE).read_bytes()
        facts = json.loads(raw)
        listed = [(f["name"], int(f["size"]), str(f["sha256"])) for f in facts.get("files", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BrokenEvent(f"unreadable {EVENT_FILE} ({type(exc).__name__}: {exc})") from None
    for name, _size, _sha in listed:
        if "/" in name or name in ("", ".", "..", EVENT_FILE):
            raise BrokenEvent(f"{EVENT_FILE} lists a file named {name!r}")
        if not (folder / name).is_file():
            raise BrokenEvent(f"{name} is listed in {EVENT_FILE} but missing")
    listed.append((EVENT_FILE, len(raw), hashlib.sha256(raw).hexdigest()))
    return facts, listed


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

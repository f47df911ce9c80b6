"""The reporter: tells your code, and an optional webhook, about each stored event.

holmes' Reporter, made safe to hand user code and a remote server. The
uploader only puts each stored event in a bounded queue and goes on
shipping; a reporter thread of its own takes them from there, so a slow
webhook or callback never delays an upload. When the queue is full (a
hundred reports waiting), a report is dropped and counted.

Each callback and the webhook run on a thread of their own that the reporter
waits for at most `timeout` seconds. A callback that raises, or hangs, is
logged and counted in `errors`; it never reaches the host, and a hung one only
loses its own reports (it is not called again while it is still stuck). The
webhook has a deadline for the whole call (`holmespy.storage.webhook`), so it
cannot stay stuck.

Each shipping of an event is reported once, right after it left the spool;
a report that fails is not retried. A crash in the instant between the last
upload and that report can lose it, or (before the spool let go of the
event) repeat it from the next process.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from holmespy._log import log as lazy_log
from holmespy.redact import public_url, redact
from holmespy.storage.webhook import post_json

log = lazy_log.real()  # with its NullHandler and HOLMES_LOG_LEVEL

DEFAULT_TIMEOUT = 5.0
QUEUE_SIZE = 100
"""Reports waiting for the reporter thread; beyond this, new ones are dropped and counted."""
GRACE = 1.0
"""Seconds the reporter waits for the webhook's thread beyond its own deadline, for it to
finish failing (the deadline cuts the connection; only a hung name lookup outlasts it)."""


@dataclass(frozen=True)
class StoredFile:
    name: str
    key: str
    """Relative to the store's root: `<service>/<YYYY-MM-DD>/<event-id>/<name>`."""
    size: int
    sha256: str
    url: str
    """The object's address (downloading it needs credentials)."""
    presigned_url: str | None = None
    """A link that downloads it without credentials until it expires (with HOLMES_PRESIGN)."""


@dataclass(frozen=True)
class StoredEvent:
    """What a reporter is told: the event and where each of its files now is."""

    event: Mapping[str, Any]
    """The bundle's `event.json`."""
    location: str
    """The event's folder in the store, e.g. `s3://bucket/prefix/svc/2026-11-24/<event-id>/`."""
    files: tuple[StoredFile, ...]

    def as_dict(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {
            "event": dict(self.event),
            "location": self.location,
            "files": [asdict(f) for f in self.files],
        }


Callback = Callable[[StoredEvent], object]


class Reporter:
    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        presign: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        queue_size: int = QUEUE_SIZE,
        join: Callable[[threading.Thread, float], object] = threading.Thread.join,
    ) -> None:
        self.webhook_url = webhook_url
        self.presign = presign
        """Seconds the presigned links last; None: no presigned links."""
        self.timeout = timeout
        self._join = join
        """How the reporter's thread waits for a callback's thread, up to its timeout
        (tests pass one that knows when a callback hangs, instead of timing it)."""
        self.errors = 0
        """Reports that failed, hung, were skipped or dropped."""
        self.dropped = 0
        """Reports dropped because the queue was full (also counted in `errors`)."""
        self.delivered = 0
        self.last_error: str | None = None
        self._callbacks: list[Callback] = []
        self._stuck: dict[str, threading.Thread] = {}
        self.queue_size = queue_size
        # Unbounded underneath so that `close` can always add its end mark; the
        # bound is kept by `report`, which counts what waits.
        self._queue: queue.SimpleQueue[StoredEvent | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._waiting = 0
        """Reports in the queue."""
        self._busy = 0
        """Reports queued or being delivered."""
        self._thread: threading.Thread | None = None
        self._secrets = _url_secrets(webhook_url)

    def __repr__(self) -> str:
        # The webhook URL may carry a token in its user info, path or query.
        hook = public_url(self.webhook_url, path=False) if self.webhook_url else None
        return f"Reporter(callbacks={len(self._callbacks)}, webhook={hook!r})"

    def subscribe(self, callback: Callback) -> None:
        """Call `callback(stored_event)` on the reporter's thread after each stored event."""
        self._callbacks.append(callback)

    @property
    def callbacks(self) -> tuple[Callback, ...]:
        return tuple(self._callbacks)

    @property
    def active(self) -> bool:
        return bool(self._callbacks) or self.webhook_url is not None

    def report(self, stored: StoredEvent) -> None:
        """Queue `stored` for every callback and the webhook; returns at once, never raises."""
        with self._idle:
            full = self._waiting >= self.queue_size
            if not full:
                self._waiting += 1
                self._busy += 1
        if full:
            self.dropped += 1
            self._fail("queue", f"is full ({self.queue_size} reports wait): one dropped")
            return
        self._queue.put(stored)
        try:
            self._ensure_thread()
        except RuntimeError as exc:  # no new thread: the interpreter is shutting down
            self._fail("thread", f"cannot start ({exc}): reports wait unsent")

    def close(self, timeout: float) -> bool:
        """Send what is queued and end the reporter's thread, waiting `timeout` s at most;
        True if nothing was left unsent. A thread still busy past it ends by itself
        after what is queued (a daemon: it never holds the host's exit)."""
        deadline = time.monotonic() + timeout
        drained = self.drain(timeout)
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(max(0.0, deadline - time.monotonic()))
        return drained

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every queued report was delivered (or failed)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._alive():
                    return False
                self._idle.wait(remaining)
        return True

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _ensure_thread(self) -> None:
        if self._alive():
            return
        # Daemon: reports left at exit are dropped rather than holding the host's exit.
        thread = threading.Thread(target=self._run, name="holmespy-report", daemon=True)
        thread.start()
        self._thread = thread

    def _run(self) -> None:
        while True:
            stored = self._queue.get()
            if stored is None:  # from `close`
                return
            with self._idle:
                self._waiting -= 1
            try:
                self._deliver(stored)
            except Exception as exc:  # a bug here must not end the thread
                self._fail("reporter", f"failed: {type(exc).__name__}: {exc}")
            finally:
                self._done()

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def _deliver(self, stored: StoredEvent) -> None:
        targets: list[tuple[str, Callback, float]] = [
            (_name(cb), cb, self.timeout) for cb in list(self._callbacks)
        ]
        if self.webhook_url is not None:
            targets.append((self._hook_name(), self._post, self.timeout + GRACE))
        for name, target, wait in targets:
            self._call(name, target, stored, wait)

    def _call(self, name: str, target: Callback, stored: StoredEvent, wait: float) -> None:
        stuck = self._stuck.get(name)
        if stuck is not None and stuck.is_alive():
            self._fail(name, f"skipped: still stuck in an earlier report of {self.timeout:g}s")
            return
        self._stuck.pop(name, None)
        raised: list[BaseException] = []

        def run() -> None:
            try:
                target(stored)
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=run, name="holmespy-report-call", daemon=True)
        thread.start()
        self._join(thread, wait)
        if thread.is_alive():
            self._stuck[name] = thread
            self._fail(name, f"did not return within {self.timeout:g}s")
        elif raised:
            exc = raised[0]
            if target == self._post:  # its message says it all; no traceback to show
                self._fail(name, str(exc))
            else:
                self._fail(name, f"raised {type(exc).__name__}: {exc}", exc)
        else:
            self.delivered += 1

    def _fail(self, name: str, what: str, exc: BaseException | None = None) -> None:
        self.errors += 1
        self.last_error = redact(f"reporter {name} {what}", self._secrets)
        log.warning("holmespy %s (counted in status)", self.last_error, exc_info=exc)

    def _hook_name(self) -> str:
        if self.webhook_url is None:
            return "none"
        return f"webhook {public_url(self.webhook_url, path=False)}"

    def _post(self, stored: StoredEvent) -> None:
        from holmespy import __version__

        assert self.webhook_url is not None
        body = json.dumps(stored.as_dict(), default=str).encode()
        post_json(
            self.webhook_url, body, deadline=self.timeout, user_agent=f"holmespy/{__version__}"
        )


def _name(callback: Callback) -> str:
    return f"callback {getattr(callback, '__qualname__', None) or type(callback).__name__}"


def _url_secrets(url: str | None) -> tuple[str, ...]:
    """The password and query of the webhook URL, for `redact` to hide wherever they
    show up (its path is kept out of messages by `public_url` instead: a short path
    such as "hook" would otherwise be starred inside every other word)."""
    if url is None:
        return ()
    try:
        parts = urlsplit(url)
    except ValueError:
        return (url,)
    return tuple(s for s in (parts.password, parts.query) if s)

"""The reporter: tells your code, and an optional webhook, about each stored event.

holmes' Reporter, made safe to hand user code: each callback and the webhook
run on a thread of their own that the uploader waits for at most `timeout`
seconds. A callback that raises, or hangs, is logged and counted in
`errors`; it never reaches the host, and a hung one only loses its own
reports (it is not called again while it is still stuck).

Each shipping of an event is reported once, right after it left the spool;
a report that fails is not retried. A crash in the instant between the last
upload and that report can lose it, or (before the spool let go of the
event) repeat it from the next process.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("holmespy")

DEFAULT_TIMEOUT = 5.0


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
    ) -> None:
        self.webhook_url = webhook_url
        self.presign = presign
        """Seconds the presigned links last; None: no presigned links."""
        self.timeout = timeout
        self.errors = 0
        self.delivered = 0
        self.last_error: str | None = None
        self._callbacks: list[Callback] = []
        self._stuck: dict[str, threading.Thread] = {}

    def __repr__(self) -> str:
        # The webhook URL may carry a token in its query or user part.
        hook = _safe_url(self.webhook_url) if self.webhook_url else None
        return f"Reporter(callbacks={len(self._callbacks)}, webhook={hook!r})"

    def subscribe(self, callback: Callback) -> None:
        """Call `callback(stored_event)` on the uploader's thread after each stored event."""
        self._callbacks.append(callback)

    @property
    def callbacks(self) -> tuple[Callback, ...]:
        return tuple(self._callbacks)

    @property
    def active(self) -> bool:
        return bool(self._callbacks) or self.webhook_url is not None

    def report(self, stored: StoredEvent) -> None:
        """Tell every callback and the webhook; never raises, waits `timeout` at most for each."""
        targets: list[tuple[str, Callback]] = [(_name(cb), cb) for cb in list(self._callbacks)]
        if self.webhook_url is not None:
            targets.append((f"webhook {_safe_url(self.webhook_url)}", self._post))
        for name, target in targets:
            self._call(name, target, stored)

    def _call(self, name: str, target: Callback, stored: StoredEvent) -> None:
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

        thread = threading.Thread(target=run, name="holmespy-report", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._stuck[name] = thread
            self._fail(name, f"did not return within {self.timeout:g}s")
        elif raised:
            exc = raised[0]
            self._fail(name, f"raised {type(exc).__name__}: {exc}", exc)
        else:
            self.delivered += 1

    def _fail(self, name: str, what: str, exc: BaseException | None = None) -> None:
        self.errors += 1
        self.last_error = f"reporter {name} {what}"
        log.warning("holmespy %s (counted in status)", self.last_error, exc_info=exc)

    def _post(self, stored: StoredEvent) -> None:
        from holmespy import __version__

        assert self.webhook_url is not None
        body = json.dumps(stored.as_dict(), default=str).encode()
        request = urllib.request.Request(
            self.webhook_url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"holmespy/{__version__}"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:
            reply.read()


def _name(callback: Callback) -> str:
    return f"callback {getattr(callback, '__qualname__', None) or type(callback).__name__}"


def _safe_url(url: str) -> str:
    """scheme://host/path: no user, password or query, where tokens hide."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"

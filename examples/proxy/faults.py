"""The classic failures of a proxy, switched on at run time to show what holmespy catches.

Each fault rides on real traffic: once on, every proxied request does the bad
thing, as a bad deploy would. Names, what they do per request, and the event
to expect (with the proxy's default rules):

    cpu      hot path: a pure-Python checksum over each response chunk   -> cpu event
    leak     a "replay log" keeps a padded copy of every response        -> mem event
    threads  a flusher thread per request that never gets its signal    -> thread event
    tasks    audit records sent to a queue whose consumer died           -> task event
    block    a report rendered synchronously on the event loop           -> cpu event, LOOP BLOCKED
    sleep    a blocking session lookup (time.sleep) on the event loop   -> loop event, no CPU
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

DEFAULTS: dict[str, dict[str, float]] = {
    "cpu": {"rounds": 40},  # checksum passes over each chunk
    "leak": {"kib": 256},  # bytes kept per request
    "threads": {"max": 500},  # leaked threads at most
    "tasks": {"fanout": 20, "max": 200_000},  # stuck tasks per request, and at most
    "block": {"ms": 1000},  # loop blocked per request
    "sleep": {"ms": 800},  # loop asleep per request
}


class BadParameter(ValueError):
    pass


class Faults:
    """Which faults are on, and what they leaked; the proxy calls its hooks on each request."""

    def __init__(self) -> None:
        self.active: dict[str, dict[str, float]] = {}
        self.replay_log: list[bytes] = []
        self.flush_signal = threading.Event()
        self.flushers: list[threading.Thread] = []
        self.audit_tasks: set[asyncio.Task[None]] = set()
        self._audit_queue: asyncio.Queue[bytes] | None = None
        self._ids = itertools.count()

    def enable(self, name: str, params: dict[str, str] | None = None) -> dict[str, float]:
        if name not in DEFAULTS:
            raise BadParameter(f"unknown fault {name!r}; known: {', '.join(DEFAULTS)}")
        settings = dict(DEFAULTS[name])
        for key, text in (params or {}).items():
            if key not in settings:
                raise BadParameter(f"fault {name} has no parameter {key!r}: {', '.join(settings)}")
            try:
                settings[key] = float(text)
            except ValueError:
                raise BadParameter(f"{name}.{key}={text!r} is not a number") from None
        self.active[name] = settings
        return settings

    def heal(self, *, release: bool = False) -> None:
        """Switch every fault off; with `release`, also free what they leaked."""
        self.active.clear()
        if release:
            self.replay_log.clear()
            self.flush_signal.set()
            self.flushers.clear()
            self.flush_signal = threading.Event()
            for task in self.audit_tasks:
                task.cancel()
            self.audit_tasks.clear()  # the loop keeps each until its cancellation has run

    def describe(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "replay_log_bytes": sum(map(len, self.replay_log)),
            "leaked_threads": sum(t.is_alive() for t in self.flushers),
            "stuck_tasks": len(self.audit_tasks),
        }

    # -- hooks, called by the proxy on its request path --

    def on_request(self) -> None:
        if not self.active:
            return
        if "block" in self.active:
            render_report(self.active["block"]["ms"] / 1000)
        if "sleep" in self.active:
            lookup_session(self.active["sleep"]["ms"] / 1000)
        if "threads" in self.active and len(self.flushers) < self.active["threads"]["max"]:
            self._start_flusher()
        if "tasks" in self.active:
            fanout, most = self.active["tasks"]["fanout"], self.active["tasks"]["max"]
            for _ in range(int(fanout)):
                if len(self.audit_tasks) >= most:
                    break
                self._send_audit()

    def on_chunk(self, data: bytes) -> None:
        if "cpu" in self.active:
            checksum_body(data, int(self.active["cpu"]["rounds"]))

    def on_response(self, head: bytes, first_chunk: bytes) -> None:
        if "leak" in self.active:
            remember_response(self.replay_log, head + first_chunk, int(self.active["leak"]["kib"]))

    def _start_flusher(self) -> None:
        n = next(self._ids)
        thread = threading.Thread(
            target=wait_for_flush, args=(self.flush_signal,), name=f"flusher-{n}", daemon=True
        )
        thread.start()
        self.flushers.append(thread)

    def _send_audit(self) -> None:
        if self._audit_queue is None:
            self._audit_queue = asyncio.Queue(maxsize=100)  # its consumer was never started
        n = next(self._ids)
        task = asyncio.get_running_loop().create_task(
            send_audit_record(self._audit_queue, b"request %d" % n), name=f"audit-{n}"
        )
        self.audit_tasks.add(task)
        task.add_done_callback(self.audit_tasks.discard)


# The faulty code itself, with names that should show up in the dumps.


def checksum_body(data: bytes, rounds: int) -> int:
    """The hot path: an Adler-style checksum in pure Python, `rounds` times over."""
    total = 1
    for _ in range(rounds):
        a, b = 1, 0
        for byte in data[:1024]:
            a = (a + byte) % 65521
            b = (b + a) % 65521
        total ^= (b << 16) | a
    return total


def remember_response(log: list[bytes], record: bytes, kib: int) -> None:
    """The leak: a replay log for debugging that nothing ever trims."""
    log.append(record.ljust(kib * 1024, b"."))


def wait_for_flush(signal: threading.Event) -> None:
    """The thread leak: each request's flusher waits for a signal nobody sends."""
    signal.wait()


async def send_audit_record(queue: asyncio.Queue[bytes], record: bytes) -> None:
    """The task pile-up: the queue is full and its consumer is gone, so `put` never returns."""
    await queue.put(record)


def render_report(seconds: float) -> None:
    """The blocking handler: CPU work done on the event loop instead of in an executor."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sum(range(10_000))


def lookup_session(seconds: float) -> None:
    """The sleeping handler: a synchronous session-store call made on the event loop."""
    time.sleep(seconds)

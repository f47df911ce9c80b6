"""One background thread that runs captures, behind a bounded queue.

The watcher hands a job over with `submit()`, which never blocks: when the
queue is full the job is dropped and counted. A capture that fails is logged
and counted; nothing raised here reaches the host.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("holmespy")

Job = Callable[[], None]
_STOP: Job = lambda: None  # noqa: E731 - a unique sentinel the queue can carry


class CaptureWorker:
    def __init__(self, name: str = "holmespy-capture", maxsize: int = 2) -> None:
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.dropped = 0
        self.failed = 0
        self.done = 0

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue `job`; False (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to finish after the jobs already queued; True if it ended in time."""
        if not self._thread.is_alive():
            return True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                job()
                self.done += 1
            except Exception:
                self.failed += 1
                log.exception("holmespy capture failed")

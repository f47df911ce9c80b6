"""A background thread that runs jobs one after another, behind a bounded queue.

The watcher hands a job over with `submit()`, which never blocks: when the
queue is full the job is dropped and counted. The thread starts with the
first job, so a process whose rules never fire carries no idle capture
thread. A job that fails is logged and counted; nothing raised here reaches
the host.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from holmespy._log import log

Job = Callable[[], None]
_STOP: Job = lambda: None  # noqa: E731 - a unique sentinel the queue can carry


class CaptureWorker:
    def __init__(self, name: str = "holmespy-capture", maxsize: int = 2) -> None:
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        self.failed = 0
        self.done = 0

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    @property
    def busy(self) -> bool:
        """A job is queued or running."""
        return self._thread.is_alive() and (self._queue.unfinished_tasks > 0)

    def submit(self, job: Job) -> bool:
        """Queue `job`; False (and counted as dropped) when the queue is full or closed."""
        with self._lock:
            if self._closed:
                self.dropped += 1
                return False
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                self.dropped += 1
                return False
            if self._thread.ident is None:
                try:
                    self._thread.start()
                except RuntimeError:  # interpreter shutdown: no new threads
                    self._closed = True
                    self.dropped += 1
                    return False
        return True

    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float) -> bool:
        """Run the jobs already queued, then end the thread; True if it ended within `timeout`."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._closed = True
            started = self._thread.ident is not None
        if not started or not self._thread.is_alive():
            return True
        try:
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            return False
        if threading.current_thread() is not self._thread:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                job()
                self.done += 1
            except Exception:
                self.failed += 1
                log.exception("holmespy capture failed")
            finally:
                self._queue.task_done()

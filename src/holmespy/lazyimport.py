"""Imports on holmespy's own threads that a fork never cuts in half.

holmespy imports most of itself on first use (`benchmarks/startup.py`), and
first use is often on one of its own threads: the watcher (asyncio's task
counting, salvage, the capture lanes), a capture lane (the profilers), the
uploader (boto3). Python holds a lock per module while it imports it, and
`fork()` does not reset those locks. A child forked while one of our threads
was inside an import inherits that module half made, its lock held by a
thread the child does not have: whoever imports the module in the child, its
new watcher or the host's own code, waits forever (3.12 and later; on 3.11 a
new thread that happens to reuse the dead thread's id gets the half-made
module instead, and the main thread waits forever). A prefork server forks
when it likes: right after `start()`, or hours later to replace a worker.

So holmespy's threads import only inside `with importing:`, and a fork
waits for the import in progress (`os.register_at_fork`): the child sees each
such module imported whole or not at all. The longest wait is the slowest
lazy import, once per process (`benchmarks/fork_wait.py`).

A fork's `before` hooks run newest first, and logging's takes logging's lock
for the whole fork. Were ours to run after it, a fork could hold logging's
lock while waiting for our import, whose module calls `logging.getLogger()`
(most do) and so waits for logging's lock. Hence the hooks are registered
again as soon as a guarded block starts or ends with `logging` loaded after
them, and the wait is bounded anyway (`FORK_WAIT`): past it the fork goes
on, as it did before this guard existed.

A module imported while a fork runs its `before` hooks (by our thread the
fork waited for, or by the fork's own preloading, `before_first_fork`)
registers its fork hooks too late for this fork's `before` but in time for
its `after_in_parent`: logging's would then release a lock its `before`
never took ("Exception ignored ... cannot release un-acquired lock" on
stderr). For such modules (`PAIRED_FORK_LOCKS`) the guard takes that lock
itself, as their `before` would have.
"""

from __future__ import annotations

import os
import sys
import threading

from holmespy._log import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

FORK_WAIT = 10.0
"""Seconds a fork waits for an import on holmespy's threads before going on without it."""
PAIRED_FORK_LOCKS = (("logging", "_lock"), ("concurrent.futures.thread", "_global_shutdown_lock"))
"""Modules whose fork hooks take a lock before a fork and release it after: (module, lock)."""


class ImportGuard:
    """`with importing:` around an import a holmespy thread makes; forks wait for it.

    Re-entrant, so a guarded import may run code that imports under it too.
    """

    def __init__(self, fork_wait: float = FORK_WAIT) -> None:
        self.fork_wait = fork_wait
        self.forks_not_waited = 0
        """Forks that went on after `fork_wait` while an import was still in progress."""
        self._lock = threading.RLock()
        self._inside = threading.local()  # how deep the calling thread is in `with importing:`
        self._forking = threading.local()  # how often the forking thread's hooks took the lock
        self._after_logging = "logging" in sys.modules
        self._preloads: list[Callable[[], None]] = []
        self._register()

    def __enter__(self) -> None:
        self._after_logging_too()
        self._lock.acquire()
        self._inside.depth = getattr(self._inside, "depth", 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        self._after_logging_too()  # the import may have loaded logging: at once, then
        self._inside.depth -= 1
        self._lock.release()

    def held(self) -> bool:
        """Whether the calling thread is inside `with importing:`."""
        return getattr(self._inside, "depth", 0) > 0

    def before_first_fork(self, load: Callable[[], None]) -> None:
        """Call `load` (imports a forked child will need) in the next fork, under the guard.

        It runs once, in the forking thread, once the import in progress on
        our threads is over; it must not raise.
        """
        self._preloads.append(load)

    def _after_logging_too(self) -> None:
        if not self._after_logging and "logging" in sys.modules:
            self._after_logging = True
            self._register()  # ours run first from now on: see the module's docstring

    def _register(self) -> None:
        os.register_at_fork(
            before=self._before_fork,
            after_in_parent=self._after_fork_in_parent,
            after_in_child=self._after_fork_in_child,
        )

    def _before_fork(self) -> None:
        if getattr(self._forking, "missed", False):
            return  # this fork's other registration waited already, in vain
        loaded = _loaded(PAIRED_FORK_LOCKS)
        if self._lock.acquire(timeout=self.fork_wait):
            self._forking.held = getattr(self._forking, "held", 0) + 1
            while self._preloads:
                try:  # noqa: SIM105 (contextlib costs start() ~0.7 ms)
                    self._preloads.pop(0)()
                except Exception:  # never out of a fork hook: each says why
                    pass
        else:
            self._forking.missed = True
        # Last, once nothing of ours waits any more: see the module's docstring.
        _take_fork_locks(loaded)

    def _after_fork_in_parent(self) -> None:
        # Every registration's hook took the lock once; the first to run gives all back.
        for _ in range(getattr(self._forking, "held", 0)):
            self._lock.release()
        self._forking.held = 0
        if getattr(self._forking, "missed", False):
            self._forking.missed = False
            self.forks_not_waited += 1
            log.warning(
                "holmespy: a fork went on after %g s while a thread of holmespy was still"
                " importing; the child may hang if it imports the same module",
                self.fork_wait,
            )

    def _after_fork_in_child(self) -> None:
        # The only thread left is the one that forked: no import of ours is in progress
        # here (or, past `fork_wait`, its thread is gone): a new lock, held only as
        # deep as the forking thread was inside `with importing:` itself.
        self._lock = threading.RLock()
        for _ in range(getattr(self._inside, "depth", 0)):
            self._lock.acquire()
        self._forking.held = 0
        self._forking.missed = False


def _loaded(modules: tuple[tuple[str, str], ...]) -> frozenset[str]:
    return frozenset(name for name, _ in modules if name in sys.modules)


def _take_fork_locks(loaded_before: frozenset[str]) -> None:
    """Take the fork lock of each `PAIRED_FORK_LOCKS` module imported during this fork."""
    for name, attribute in PAIRED_FORK_LOCKS:
        module = sys.modules.get(name)
        if name in loaded_before or module is None:
            continue
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            continue  # still being imported: its hooks may not even be registered
        lock = getattr(module, attribute, None)
        if lock is not None:
            lock.acquire()


importing = ImportGuard()
"""The process's guard: `with importing: from holmespy import loops`."""

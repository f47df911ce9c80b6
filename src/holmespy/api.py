"""`start()`, `stop()`, `status()`: the process-wide instance, and its life in child processes.

A forked child gets its own watcher, at once or lazily depending on who
forked it; a spawned child (multiprocessing's spawn or forkserver) gets it
right after `prepare()` has restored its server's `sys.argv`, which names
it. See `holmespy.fork`.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from holmespy import fork, signals
from holmespy._log import log
from holmespy.config import Config, default_service
from holmespy.lazyimport import importing
from holmespy.watcher import Watcher

TYPE_CHECKING = False  # typing's, without importing typing (nor storage, for a type)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

    from holmespy.statusview import Status
    from holmespy.storage.reporter import StoredEvent

    Callback = Callable[[StoredEvent], object]

_lock = threading.RLock()
_instance: Watcher | None = None
_disabled: Config | None = None
_pending: _Pending | None = None
_fork_hook_registered = False


class _Pending:
    """A watcher this process starts later: after `prepare()`, or lazily in a forked child."""

    __slots__ = ("callbacks", "config", "lazy", "pid", "rename")

    def __init__(
        self,
        config: Config,
        callbacks: tuple[Callback, ...] = (),
        rename: bool = False,
        lazy: fork.LazyStart | None = None,
    ) -> None:
        self.config = config
        self.callbacks = callbacks
        self.rename = rename
        """The service was the default name: take it again from the argv `prepare()` restores."""
        self.lazy = lazy
        """Set in a forked child whose watcher waits for a sign that the child lives on."""
        self.pid = os.getpid()


def start(config: Config | None = None) -> Watcher | None:
    """Start watching this process; idempotent, returns in a few milliseconds.

    Without `config`, reads `HOLMES_*` from the environment and raises
    `ConfigError` naming any malformed variable. On a running instance, a
    `config` given here is applied live; without one, the instance is returned
    as it is. With `HOLMES_ENABLE=0` (or `Config(enable=False)`) it does
    nothing and returns None. In a multiprocessing child that has not been
    prepared yet (`holmespy run` starts holmespy that early) the watcher
    starts once it is, and this returns None; multiprocessing's resource
    tracker is never watched.
    """
    global _instance, _disabled, _pending
    _start_lazy_child()
    with _lock:
        running = _instance if _instance is not None and _instance.pid == os.getpid() else None
        if running is not None and running.running:
            if config is not None and config != running.config:
                running.reconfigure(config)
            return running
        role = fork.process_role()
        if role is fork.Role.HELPER:
            log.debug("holmespy does not watch multiprocessing helper %d", os.getpid())
            return None
        config = config if config is not None else Config.from_env()
        if not config.enable:
            _disabled = config
            return None
        _disabled = None
        if role is not fork.Role.PROGRAM:
            # Too early to know the server's name, and (fork server) no place for threads.
            rename = config.service == default_service()
            _pending = _Pending(config, rename=rename)
            fork.call_after_prepare(_start_prepared)
            return None
        _pending = None
        return _start_watcher(config)


def stop(timeout: float = 2.0) -> None:
    """Stop the watcher and its capture worker; `start()` works again afterwards."""
    global _instance, _pending
    with _lock:
        instance, _instance = _instance, None
        pending, _pending = _pending, None
    if pending is not None and pending.lazy is not None:
        pending.lazy.disarm()
    if instance is not None and instance.pid == os.getpid():
        instance.stop(timeout)
        signals.uninstall()


def status() -> Status:
    """What holmespy is doing and every failure it absorbed (never raises)."""
    _start_lazy_child()
    instance = _instance
    if instance is None or instance.pid != os.getpid():
        with importing:  # see Watcher.status
            from holmespy.statusview import Status

        return Status(
            enabled=_disabled is None and (instance is not None or _pending is not None),
            running=False,
            pid=os.getpid(),
        )
    return instance.status()


def reconfigure(config: Config | None = None, **changes: Any) -> Config:
    """Change the running instance's settings live, e.g. `reconfigure(interval=1.0)`."""
    instance = current()
    if instance is None or not instance.running:
        raise RuntimeError("holmespy is not running: call holmespy.start() first")
    return instance.reconfigure(config, **changes)


def on_stored(callback: Callable[[StoredEvent], None]) -> None:
    """Call `callback` after each event is stored (holmes' Reporter), on the reporter's thread.

    It gets the event's `event.json` and where its files are; a callback that
    raises or hangs is logged and counted in `status().storage`, never felt
    by the host. Needs `HOLMES_STORAGE`: without it events stay local.
    """
    instance = current()
    if instance is None:
        raise RuntimeError("holmespy is not running: call holmespy.start() first")
    instance.uploader.reporter.subscribe(callback)


def current() -> Watcher | None:
    """The running instance of this process, if any."""
    _start_lazy_child()
    instance = _instance
    return instance if instance is not None and instance.pid == os.getpid() else None


def _start_watcher(config: Config, callbacks: tuple[Callback, ...] = ()) -> Watcher:
    # Called with `_lock` held.
    global _instance, _fork_hook_registered
    if not _fork_hook_registered:
        importing.before_first_fork(_load_for_children)
        os.register_at_fork(after_in_child=_restart_in_child)
        atexit.register(_finish_at_exit)
        _fork_hook_registered = True
    watcher = Watcher(config)
    for callback in callbacks:  # the child reports too
        watcher.uploader.reporter.subscribe(callback)
    _instance = watcher.start()
    if config.exit_seconds > 0:
        signals.install(_finish_on_sigterm)  # the main thread only: see signals.install
    return _instance


def _start_prepared() -> None:
    # Right after multiprocessing's prepare() in a spawned (or fork-server) child.
    global _pending
    try:
        with _lock:
            pending = _pending
            if pending is None or pending.lazy is not None:
                return  # stopped meanwhile
            _pending = None
            if current() is not None:
                return  # the program's own start() ran during prepare()
            config = pending.config
            if pending.rename:
                config = config.replace(service=default_service())
            _start_watcher(config, pending.callbacks)
    except Exception:
        log.exception("holmespy could not start in multiprocessing child %d", os.getpid())


def _start_lazy_child() -> None:
    # Any call into holmespy shows that a forked child lives on: start its watcher now.
    pending = _pending
    if pending is not None and pending.lazy is not None and pending.pid == os.getpid():
        pending.lazy.fire()


def _start_lazy() -> None:
    global _pending
    try:
        with _lock:
            pending = _pending
            if pending is None or pending.lazy is None or pending.pid != os.getpid():
                return
            _pending = None
            _start_watcher(pending.config, pending.callbacks)
    except Exception:
        log.exception("holmespy could not start its watcher in forked child %d", os.getpid())


def _load_for_children() -> None:
    """In the first fork: import what a child's watcher needs later (never raises).

    `start()` leaves the capture lanes, the bundle writer, salvage, storage,
    the flight recorder and the loop watchdog unimported until they are
    needed. A forked worker that then drops to another user may no longer be
    able to read the standard library: it must inherit them. So a process
    that forks pays for them once, before its first fork (a process that
    never forks, never). Called by the import guard's fork hook, under the
    guard (see holmespy.lazyimport).
    """
    try:
        import holmespy.bundle
        import holmespy.capturer  # (it imports asyncio)
        import holmespy.recorder
        import holmespy.salvage
        import holmespy.storage.uploader
        import holmespy.watchdog  # noqa: F401  (made by the child's sampling thread)
    except Exception:
        log.exception("holmespy could not load its capture machinery before a fork")


def _restart_in_child() -> None:
    # Runs in the child right after fork(): the parent's threads do not exist
    # here and its locks may be held forever, so build everything anew.
    global _instance, _lock, _pending
    _lock = threading.RLock()
    parent, inherited = _instance, _pending
    pid = os.getpid()
    try:
        if parent is not None and parent.pid != pid and parent.active:
            # Not `parent.running`: threading has already marked its threads dead here.
            parent.abandon_after_fork()
            _instance = None
            made = parent.made_uploader  # not made: nobody subscribed
            callbacks = tuple(made.reporter.callbacks) if made is not None else ()
            config = parent.config
        elif inherited is not None and inherited.lazy is not None and inherited.pid != pid:
            inherited.lazy.disarm()  # forked by a child whose own watcher had not started
            _pending = None
            config, callbacks = inherited.config, inherited.callbacks
        else:
            return
        # Who called os.fork() says what the child will be; frame 1 is that caller.
        try:
            caller: FrameType | None = sys._getframe(1)
        except ValueError:  # forked from C (uWSGI), with no Python frame above us
            caller = None
        kind = fork.fork_kind(caller)
        if kind is fork.ForkKind.WORKER:
            _start_watcher(config, callbacks)
        elif kind is fork.ForkKind.UNKNOWN:
            _pending = _Pending(config, callbacks, lazy=fork.LazyStart(_start_lazy).arm())
    except Exception:
        log.exception("holmespy could not restart its watcher in forked child %d", pid)


def _finish(reason: str) -> None:
    # A capture in progress stops at once and gets HOLMES_EXIT_SECONDS to be
    # published (marked partial): a server waiting for this worker to go, to
    # start its replacement, is held back by at most that.
    instance = _instance
    if instance is not None and instance.pid == os.getpid() and instance.active:
        instance.stop(timeout=instance.config.exit_seconds, reason=reason, exiting=True)


def _finish_at_exit() -> None:
    # atexit runs before daemon threads are frozen: a sys.exit() from a signal
    # handler (gunicorn's worker timeout: SIGABRT, then sys.exit(1)) ends here too.
    _finish("the process was exiting")


def _finish_on_sigterm(reason: str) -> None:
    _finish(reason)

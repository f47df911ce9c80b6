"""`start()`, `stop()`, `status()`: the process-wide instance, and its life across `fork()`."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from holmespy import signals
from holmespy.config import Config
from holmespy.storage.reporter import StoredEvent
from holmespy.watcher import Status, Watcher

log = logging.getLogger("holmespy")

_lock = threading.RLock()
_instance: Watcher | None = None
_disabled: Config | None = None
_fork_hook_registered = False


def start(config: Config | None = None) -> Watcher | None:
    """Start watching this process; idempotent, returns in a few milliseconds.

    Without `config`, reads `HOLMES_*` from the environment and raises
    `ConfigError` naming any malformed variable. On a running instance, a
    `config` given here is applied live; without one, the instance is returned
    as it is. With `HOLMES_ENABLE=0` (or `Config(enable=False)`) it does
    nothing and returns None.
    """
    global _instance, _disabled, _fork_hook_registered
    with _lock:
        running = _instance if _instance is not None and _instance.pid == os.getpid() else None
        if running is not None and running.running:
            if config is not None and config != running.config:
                running.reconfigure(config)
            return running
        config = config if config is not None else Config.from_env()
        if not config.enable:
            _disabled = config
            return None
        _disabled = None
        if not _fork_hook_registered:
            os.register_at_fork(after_in_child=_restart_in_child)
            atexit.register(_finish_at_exit)
            _fork_hook_registered = True
        _instance = Watcher(config).start()
        if config.exit_seconds > 0:
            signals.install(_finish_on_sigterm)
        return _instance


def stop(timeout: float = 2.0) -> None:
    """Stop the watcher and its capture worker; `start()` works again afterwards."""
    global _instance
    with _lock:
        instance, _instance = _instance, None
    if instance is not None and instance.pid == os.getpid():
        instance.stop(timeout)
        signals.uninstall()


def status() -> Status:
    """What holmespy is doing and every failure it absorbed (never raises)."""
    instance = _instance
    if instance is None or instance.pid != os.getpid():
        return Status(
            enabled=_disabled is None and instance is not None, running=False, pid=os.getpid()
        )
    return instance.status()


def reconfigure(config: Config | None = None, **changes: Any) -> Config:
    """Change the running instance's settings live, e.g. `reconfigure(interval=1.0)`."""
    instance = _instance
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
    instance = _instance
    return instance if instance is not None and instance.pid == os.getpid() else None


def _restart_in_child() -> None:
    # Runs in the child right after fork(): the parent's threads do not exist
    # here and its locks may be held forever, so build everything anew.
    global _instance, _lock
    _lock = threading.RLock()
    parent = _instance
    # Not `parent.running`: threading has already marked the parent's threads dead here.
    if parent is None or parent.pid == os.getpid() or not parent.active:
        return
    try:
        parent.abandon_after_fork()
        _instance = None
        child = Watcher(parent.config)
        for callback in parent.uploader.reporter.callbacks:  # the child reports too
            child.uploader.reporter.subscribe(callback)
        _instance = child.start()
    except Exception:
        log.exception("holmespy could not restart its watcher in forked child %d", os.getpid())


def _finish(reason: str) -> None:
    # A capture in progress stops at once and gets HOLMES_EXIT_SECONDS to be
    # published (marked partial): a server waiting for this worker to go, to
    # start its replacement, is held back by at most that.
    instance = _instance
    if instance is not None and instance.pid == os.getpid() and instance.active:
        instance.stop(timeout=instance.config.exit_seconds, reason=reason)


def _finish_at_exit() -> None:
    # atexit runs before daemon threads are frozen: a sys.exit() from a signal
    # handler (gunicorn's worker timeout: SIGABRT, then sys.exit(1)) ends here too.
    _finish("the process was exiting")


def _finish_on_sigterm(reason: str) -> None:
    _finish(reason)

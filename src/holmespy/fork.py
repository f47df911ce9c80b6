"""When a child process gets its watcher, and under which name.

A server's workers are child processes, made in one of two ways:

- **fork**: gunicorn's arbiter, multiprocessing's `fork` method, a hand-made
  prefork loop, but also `subprocess` running a `preexec_fn` just before
  `exec`, or a test that counts its threads right after `fork()`. The child
  must not find holmespy's threads in it unless it lives on as a worker, so
  the watcher is restarted by who forked: at once for a known worker maker,
  never for a child about to `exec`, and otherwise lazily (`LazyStart`).
- **spawn** (uvicorn and hypercorn `--workers`, multiprocessing `spawn` and
  `forkserver`): a fresh interpreter whose `sitecustomize` (`holmespy run`)
  runs while `sys.argv` is still `['-c', '--multiprocessing-fork']`; the
  parent's argv comes back only in `multiprocessing.spawn.prepare()`. Such a
  child's watcher starts right after `prepare()`, named after the server the
  user started. multiprocessing's helpers (the resource tracker, the fork
  server itself) get no watcher at all.

Everything here reads the process's own command line and frames; nothing is
imported on the start path of an ordinary program.
"""

from __future__ import annotations

import _thread
import gc
import os
import sys
import threading
import time

from holmespy.constant import Constant

TYPE_CHECKING = False  # typing's, without importing typing at start()
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import FrameType
    from typing import Any

SPAWN_MAIN = "from multiprocessing.spawn import spawn_main"
FORKSERVER_MAIN = "from multiprocessing.forkserver import main"
RESOURCE_TRACKER_MAIN = "from multiprocessing.resource_tracker import main"
SPAWN_ARGV = ["-c", "--multiprocessing-fork"]
"""`sys.argv` of a spawned child until `prepare()` restores the parent's."""

ANY = "*"
WORKER_FORKERS = frozenset(
    {
        ("gunicorn.arbiter", "spawn_worker"),  # the child runs the worker loop
        ("gunicorn.arbiter", "spawn_dirty_arbiter"),
        ("gunicorn.dirty.arbiter", "spawn_worker"),
        ("gunicorn.util", "daemonize"),  # the child is the server from now on
        ("multiprocessing.popen_fork", "_launch"),  # Process.start() with the fork method
        ("billiard.popen_fork", "_launch"),  # celery's prefork pool
        ("tornado.process", "fork_processes"),
        ("rq.worker", "fork_work_horse"),  # one job, for as long as it runs
    }
)
"""(module, function) whose `os.fork()` always makes a long-lived worker: watched at once.

A fork from C with no Python frame above it (uWSGI, mod_wsgi, which run the
fork hooks for their workers) counts as one too."""
EXEC_FORKERS = frozenset(
    {
        ("subprocess", ANY),  # a `preexec_fn` child
        ("gunicorn.arbiter", "reexec"),  # SIGUSR2: the child execs a new master
    }
)
"""(module, function) whose fork is followed by `exec`: the child is never watched."""
FORK_WRAPPERS = ("gevent.", "eventlet.")
"""Modules whose own `fork()` wraps `os.fork()`: who called *them* says what the child is."""

LAZY_GRACE = 1.0
"""Seconds a child of an unknown fork must live before a garbage collection starts its watcher."""


class Role(Constant):
    """What this interpreter is, as far as holmespy's start is concerned (no `enum` at start)."""

    __slots__ = ()
    PROGRAM: Role
    """An ordinary program, or a worker whose argv is already its server's: watch now."""
    SPAWN_BOOTSTRAP: Role
    """A multiprocessing child before `prepare()`: watch right after it."""
    FORKSERVER: Role
    """multiprocessing's fork server: unwatched; the children it forks are, after `prepare()`."""
    HELPER: Role
    """A multiprocessing helper such as the resource tracker: never watched."""


Role.PROGRAM = Role("program")
Role.SPAWN_BOOTSTRAP = Role("spawn-bootstrap")
Role.FORKSERVER = Role("forkserver")
Role.HELPER = Role("helper")


def process_role(
    orig_argv: Sequence[str] | None = None,
    argv: Sequence[str] | None = None,
    frame: FrameType | None = None,
) -> Role:
    """This process's role, from its original command line (`sys.orig_argv`).

    Anything unexpected (a host that replaced `sys.argv` with something odd)
    makes it an ordinary program: watched, never an error.
    """
    try:
        return _role(orig_argv, argv, frame)
    except Exception:
        return Role.PROGRAM


def _role(
    orig_argv: Sequence[str] | None, argv: Sequence[str] | None, frame: FrameType | None
) -> Role:
    orig = list(sys.orig_argv if orig_argv is None else orig_argv)
    code = _command(orig)
    if code is None:
        return Role.PROGRAM
    # `in`, not `startswith`: 3.13+ put `import sys; ` before the fork server's.
    if RESOURCE_TRACKER_MAIN in code:
        return Role.HELPER
    if SPAWN_MAIN in code:
        current = list(sys.argv if argv is None else argv)
        return Role.SPAWN_BOOTSTRAP if current == SPAWN_ARGV else Role.PROGRAM
    if FORKSERVER_MAIN in code:
        # The server's children share its command line; they are the ones
        # running `_serve_one` (and `prepare()` has restored their argv).
        start = sys._getframe(2) if frame is None else frame
        return Role.PROGRAM if _in_forkserver_child(start) else Role.FORKSERVER
    return Role.PROGRAM


def interpreter_target(orig_argv: Sequence[str]) -> tuple[str, str]:
    """What `python [options] TARGET` runs.

    One of ('-c', code), ('-m', module), ('script', path), or ('', '') for an
    interactive interpreter.
    """
    args = list(orig_argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "-m"):
            return (arg, args[i + 1]) if i + 1 < len(args) else ("", "")
        if arg[:2] in ("-c", "-m") and not arg.startswith("--"):
            return arg[:2], arg[2:]  # `-mpkg`, `-cCODE`
        if arg in _OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg == "-" or not arg.startswith("-"):
            return ("script", arg)
        i += 1
    return ("", "")


_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "--check-hash-based-pycs"})


def _command(orig_argv: list[str]) -> str | None:
    """The program text of `python -c CODE`, or None."""
    kind, target = interpreter_target(orig_argv)
    return target if kind == "-c" else None


def _in_forkserver_child(frame: FrameType | None) -> bool:
    while frame is not None:
        module = frame.f_globals.get("__name__")
        if module == "multiprocessing.forkserver" and frame.f_code.co_name == "_serve_one":
            return True
        frame = frame.f_back
    return False


def call_after_prepare(callback: Callable[[], None]) -> None:
    """Call `callback` right after `multiprocessing.spawn.prepare()` returns, once per process.

    `prepare()` is where a spawned child gets its parent's `sys.argv`,
    `sys.path` and working folder back. Only called in a process that is
    about to import `multiprocessing.spawn` anyway (a spawn child, the fork
    server), so the import costs nothing extra. `callback` must not raise.
    """
    from multiprocessing import spawn

    original: Callable[..., Any] = spawn.prepare
    if getattr(original, "_holmespy_after", None) is not None:
        return

    def prepare(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)  # the host's behaviour, errors included, first
        if spawn.prepare is prepare:
            spawn.prepare = original  # once per process (a fork server's children each call it)
        callback()
        return result

    prepare._holmespy_after = callback  # type: ignore[attr-defined]
    prepare.__wrapped__ = original  # type: ignore[attr-defined]
    spawn.prepare = prepare


class ForkKind(Constant):
    __slots__ = ()
    WORKER: ForkKind
    """Forked by a known worker maker: watch at once."""
    EXEC: ForkKind
    """The child will `exec` right away: never watch."""
    UNKNOWN: ForkKind
    """Anything else: watch once the child shows it lives on (`LazyStart`)."""


ForkKind.WORKER = ForkKind("worker")
ForkKind.EXEC = ForkKind("exec")
ForkKind.UNKNOWN = ForkKind("unknown")


def fork_kind(caller: FrameType | None) -> ForkKind:
    """Classify a fork by the Python function that called `os.fork()` (module and name)."""
    while caller is not None and str(caller.f_globals.get("__name__")).startswith(FORK_WRAPPERS):
        caller = caller.f_back
    if caller is None:
        return ForkKind.WORKER  # forked from C by an embedding server (uWSGI, mod_wsgi)
    module, function = caller.f_globals.get("__name__"), caller.f_code.co_name
    if (module, function) in WORKER_FORKERS:
        return ForkKind.WORKER
    if (module, function) in EXEC_FORKERS or (module, ANY) in EXEC_FORKERS:
        return ForkKind.EXEC
    return ForkKind.UNKNOWN


class LazyStart:
    """Starts a forked child's watcher once the child has lived `grace` seconds.

    A child cannot be asked whether it will live on, and it has no thread to
    wait with. What a worker does once it gets going is allocate (it loads
    code and data), and allocation brings garbage collections: the first one
    at least `grace` seconds after the fork starts the watcher, as does any
    call into holmespy's API (`fire()`). A child that execs or exits at once
    never collects that late, so it never sees a holmespy thread. A child
    that allocates no more than it frees never collects at all: it stays
    unwatched until it calls holmespy (docs/servers.md says so).

    The collection can happen anywhere in the host, even while a host thread
    holds `threading`'s internal lock; so the callback only spawns a bare OS
    thread, which builds the watcher once the host has moved on.
    """

    def __init__(
        self,
        start: Callable[[], None],
        *,
        grace: float = LAZY_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pid = os.getpid()
        self._start = start
        self._grace = grace
        self._clock = clock
        self._since = clock()
        self._fired = False

    def arm(self) -> LazyStart:
        gc.callbacks.append(self._on_gc)
        return self

    def disarm(self) -> None:
        """Never start; leave `gc.callbacks` (not from inside a collection: see `_on_gc`)."""
        self._fired = True
        # A bound method compares equal to a fresh one, so `remove` finds ours.
        while self._on_gc in gc.callbacks:
            try:
                gc.callbacks.remove(self._on_gc)
            except ValueError:  # removed meanwhile by another thread
                break

    @property
    def armed(self) -> bool:
        return not self._fired

    def fire(self) -> None:
        """Start now, on the calling thread (an API call: a safe point)."""
        if self._fired or os.getpid() != self.pid:
            return
        self.disarm()
        self._start()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Inside the host's allocation path: never raise, never block. The
        # collector walks `gc.callbacks` by index while it calls them, so
        # removing ourselves here would skip the host's next callback: the
        # bare thread does it instead, once this collection is over.
        try:
            if phase != "stop" or self._fired or os.getpid() != self.pid:
                return
            if self._clock() - self._since < self._grace or sys.is_finalizing():
                return
            self._fired = True
            _thread.start_new_thread(_launch, (self,))
        except Exception:
            pass


def _launch(lazy: LazyStart) -> None:
    # A bare thread (no `threading` bookkeeping, no locks taken at the GC's
    # point of call). It hands over to a named `threading` thread so that
    # logging from the start never registers a dummy thread in `threading`.
    # The start logs its own failures; a thread that cannot start leaves the
    # child unwatched, silently, as it would be without holmespy.
    try:
        lazy.disarm()
        threading.Thread(target=lazy._start, name="holmespy-start", daemon=True).start()
    except Exception:
        pass

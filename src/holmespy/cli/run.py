"""`holmespy run -- CMD ...`: run CMD with holmespy watching it, without editing CMD.

Python imports `sitecustomize` from its path at every start-up. `run`
writes one into a private folder put first on PYTHONPATH; it runs the
`sitecustomize` it shadows (if any), then `holmespy.start()`, which reads
the HOLMES_* variables like any program that calls it. So every Python
process CMD starts is watched, forked workers included, and CMD itself may
be a shell script that ends up in Python. The environment is passed through;
the settings are checked here first, so a typo fails before CMD starts
rather than in every process it spawns.

Then `run` *becomes* CMD (exec): same pid, and no parent in between to
forward signals. A forwarding parent doubled every signal sent to the whole
process group or cgroup (systemd's default KillMode=control-group): the
server got a second SIGTERM in the middle of its graceful shutdown. The
folder is kept (in the user's cache, named after its content, so every run
reuses it): CMD's processes read it for as long as they start.

`holmespy.start()` is called once the process has lived `start_delay()`
(at most 1 s: ten intervals, the rules' `diff` warm-up), from a thread of
its own. A process that ends sooner goes unwatched (it could only have
fired an `abs` or `max` rule on its first samples); in exchange the short
helpers a shell script starts by the hundred pay about half a millisecond
each for holmespy instead of its whole start-up (`benchmarks/startup.py`).

Interpreters started with -I, -E or -S ignore PYTHONPATH or site and run
unwatched.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, NoReturn

from holmespy.cli.errors import BadUsage, CLIError, NotFound
from holmespy.cli.text import warn
from holmespy.config import Config
from holmespy.rules import RING_SIZE

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holmespy is imported from: added to the path of a child that lacks it."""

RESTORED = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)
"""Signals Python ignores for itself: CMD gets their default back, as subprocess gives it."""

SITECUSTOMIZE = '''\
"""Written by `holmespy run`: start holmespy in this interpreter, after the
sitecustomize this file shadows. Deleted when `holmespy run` ends."""


def _holmespy_import():
    import sys

    try:
        import holmespy
    except ImportError:
        # Another interpreter than holmespy's own: use the copy `holmespy run` came from.
        sys.path.append(__HOLMESPY_PATH__)
        try:
            import holmespy
        except Exception as exc:
            print(f"holmespy run: {sys.executable} cannot import holmespy: {exc}", file=sys.stderr)
            return None
    return holmespy


def _holmespy_start(holmespy) -> None:
    import sys

    try:
        holmespy.start()
    except Exception as exc:
        print(f"holmespy run: not watching this process: {exc}", file=sys.stderr)


def _holmespy_run() -> None:
    import importlib.machinery
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        import importlib.util

        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)
    delay = __HOLMESPY_DELAY__
    # multiprocessing's own children and helpers (spawn, forkserver, resource
    # tracker) start it at once: holmespy.start() knows what each of them is,
    # and a helper must never hold a thread of ours, not even for a second.
    if delay <= 0 or any("from multiprocessing." in a for a in getattr(sys, "orig_argv", ())):
        holmespy = _holmespy_import()
        if holmespy is not None:
            _holmespy_start(holmespy)
        return
    # Started once this process has lived `delay` s, from a thread of its own
    # (_thread: importing threading alone would cost more than the rest).
    import _thread
    import time

    starting = _thread.allocate_lock()

    def later() -> None:
        time.sleep(delay)
        with starting:
            holmespy = _holmespy_import()
            if holmespy is None:
                return
            try:
                from holmespy.lazyimport import importing
            except ImportError:  # a holmespy without the guard: start it here, as before
                _holmespy_start(holmespy)
                return
        # start() imports the rest of what a tick needs under holmespy's own guard,
        # which a fork waits for as it waits for `starting`. Not under `starting`:
        # the guard's fork hook runs before ours, so a fork holding the guard would
        # wait here for `starting` while start() waited for the guard.
        with importing:
            _holmespy_start(holmespy)

    def before_fork() -> None:
        # A fork in the middle of that thread's imports would leave the child
        # with module locks held by a thread it does not have, and the child
        # would hang importing those modules: the fork waits for them instead.
        starting.acquire()

    def in_child() -> None:
        starting.release()
        # A child forked before the start has no such thread: it gets its own.
        # (One forked after is restarted by holmespy, and start() finds it running.)
        _thread.start_new_thread(later, ())

    _thread.start_new_thread(later, ())
    os.register_at_fork(
        before=before_fork, after_in_parent=starting.release, after_in_child=in_child
    )


_holmespy_run()
del _holmespy_run
'''


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run CMD with the watcher started in it",
        description="Run CMD with holmespy started in every Python process it runs "
        "(HOLMES_* settings from the environment).",
        usage="holmespy run [-h] -- CMD [ARG ...]",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD", help="the command to run")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise BadUsage("run needs a command: holmespy run -- python app.py")
    config = check_settings()
    env = dict(os.environ)
    folder = injection_folder(delay=start_delay(config))
    env["PYTHONPATH"] = _with_first(str(folder), env.get("PYTHONPATH"))
    become(command, env)


def check_settings() -> Config:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = Config.from_env()  # a ConfigError here is bad usage, reported by main
    for warning in caught:
        warn(str(warning.message))
    return config


MAX_START_DELAY = 1.0
"""Seconds a process under `run` lives before holmespy starts in it (see `start_delay`)."""


def start_delay(config: Config) -> float:
    """How long a process under `run` lives before holmespy starts in it.

    Ten intervals (the `diff` comparison's warm-up), at most
    `MAX_START_DELAY`: a long-running program's first event is never more
    than that late, and the processes shorter than that (a shell script's
    helpers) never pay for holmespy. Such a process goes unwatched: it could
    only have fired an `abs` or `max` rule on its first samples.
    """
    return min(MAX_START_DELAY, RING_SIZE * config.interval)


def sitecustomize_text(delay: float = 0.0) -> str:
    """Our sitecustomize; its processes start holmespy once they have lived `delay` s."""
    text = SITECUSTOMIZE.replace("__HOLMESPY_PATH__", repr(str(PACKAGE_ROOT)))
    return text.replace("__HOLMESPY_DELAY__", repr(float(delay)))


def injection_folder(cache: Path | None = None, *, delay: float = 0.0) -> Path:
    """A private folder holding our sitecustomize.py, reused by every run with the same text.

    Under the user's cache (`$XDG_CACHE_HOME` or `~/.cache`), named after a
    hash of the text. A folder found there is used only if it is ours: owned
    by us, a real folder (no symlink), writable by us alone, its file too,
    with the very text we would write. Otherwise, or without a usable cache,
    a fresh private temp folder (left in place: CMD reads it as long as it runs).
    """
    text = sitecustomize_text(delay)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    base = cache if cache is not None else _cache_home()
    if base is not None:
        folder = base / "holmespy" / f"run-{digest}"
        try:
            if not _is_ours(folder, text):
                _create(folder, text)
            if _is_ours(folder, text):
                return folder
        except OSError:
            pass
    folder = Path(tempfile.mkdtemp(prefix="holmespy-run-"))
    _write(folder / "sitecustomize.py", text)
    return folder


def _cache_home() -> Path | None:
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    try:
        return Path.home() / ".cache"
    except RuntimeError:  # no home directory
        return None


def _is_ours(folder: Path, text: str) -> bool:
    me = os.getuid()
    try:
        for path in (folder, folder / "sitecustomize.py"):
            st = path.lstat()
            if st.st_uid != me or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
        if not stat.S_ISDIR(folder.lstat().st_mode):
            return False
        file = folder / "sitecustomize.py"
        if not stat.S_ISREG(file.lstat().st_mode):
            return False
        return file.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def _create(folder: Path, text: str) -> None:
    """Build the folder under a temp name beside it and rename it in place (atomic)."""
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.exists() or folder.is_symlink():
        # Not ours, or stale: out of the way, never into it.
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        else:
            folder.unlink()
    staging = Path(tempfile.mkdtemp(prefix=".run-", dir=folder.parent))
    try:
        _write(staging / "sitecustomize.py", text)
        os.rename(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _with_first(folder: str, old: str | None) -> str:
    return folder + (os.pathsep + old if old else "")


def become(command: list[str], env: dict[str, str]) -> NoReturn:
    """Replace this process with `command`: its exit status and signals are its own."""
    path = shutil.which(command[0], path=env.get("PATH", os.defpath))
    if path is None:
        if os.sep in command[0] and os.path.exists(command[0]):
            raise CLIError(f"{command[0]}: permission denied (not executable?)")
        raise NotFound(f"{command[0]}: command not found")
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    for sig in RESTORED:
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execve(path, command, env)
    except OSError as exc:
        raise CLIError(f"{command[0]}: cannot run it: {exc.strerror}") from None

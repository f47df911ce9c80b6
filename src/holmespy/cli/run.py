"""`holmespy run -- CMD ...`: run CMD with holmespy watching it, without editing CMD.

Python imports `sitecustomize` from its path at every start-up. `run`
writes one into a temp folder put first on PYTHONPATH; it runs the
`sitecustomize` it shadows (if any), then `holmespy.start()`, which reads
the HOLMES_* variables like any program that calls it. So every Python
process CMD starts is watched, forked workers included, and CMD itself may
be a shell script that ends up in Python. The environment is passed through;
the settings are checked here first, so a typo fails before CMD starts
rather than in every process it spawns.

Interpreters started with -I, -E or -S ignore PYTHONPATH or site and run
unwatched. CMD's exit status is returned (128+N when signal N ended it);
SIGTERM, SIGHUP, SIGQUIT and SIGUSR1/2 sent to `holmespy run` go on to CMD,
and Ctrl-C reaches CMD from the terminal directly.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from holmespy.cli.errors import BadUsage, CLIError, NotFound
from holmespy.cli.text import warn
from holmespy.config import Config

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holmespy is imported from: added to the path of a child that lacks it."""

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

SITECUSTOMIZE = '''\
"""Written by `holmespy run`: start holmespy in this interpreter, after the
sitecustomize this file shadows. Deleted when `holmespy run` ends."""


def _holmespy_run() -> None:
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)
    try:
        import holmespy
    except ImportError:
        # Another interpreter than holmespy's own: use the copy `holmespy run` came from.
        sys.path.append(__HOLMESPY_PATH__)
        try:
            import holmespy
        except Exception as exc:
            print(f"holmespy run: {sys.executable} cannot import holmespy: {exc}", file=sys.stderr)
            return
    try:
        holmespy.start()
    except Exception as exc:
        print(f"holmespy run: not watching this process: {exc}", file=sys.stderr)


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
    check_settings()
    with injected_environment(os.environ) as env:
        return run_command(command, env)


def check_settings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Config.from_env()  # a ConfigError here is bad usage, reported by main
    for warning in caught:
        warn(str(warning.message))


@contextmanager
def injected_environment(base: dict[str, str] | os._Environ[str]) -> Iterator[dict[str, str]]:
    """`base` with PYTHONPATH starting at a folder holding the generated sitecustomize."""
    package_root = str(PACKAGE_ROOT)
    with tempfile.TemporaryDirectory(prefix="holmespy-run-") as folder:
        text = SITECUSTOMIZE.replace("__HOLMESPY_PATH__", repr(package_root))
        Path(folder, "sitecustomize.py").write_text(text)
        env = dict(base)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = folder + (os.pathsep + old if old else "")
        yield env


def run_command(command: list[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(command, env=env)
    except FileNotFoundError:
        raise NotFound(f"{command[0]}: command not found") from None
    except PermissionError:
        raise CLIError(f"{command[0]}: permission denied (not executable?)") from None
    with _forwarding(child):
        code = child.wait()
    return 128 - code if code < 0 else code


@contextmanager
def _forwarding(child: subprocess.Popen[bytes]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the signals still reach us by default
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    # The terminal sends Ctrl-C to CMD too; CMD decides what it means, we wait for its status.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""How long the CLI waits for a store, and what it says while it waits.

The S3 client retries a request that times out, and waits a minute for each
answer: against a store that accepts connections and never answers, `ls`
was silent for six minutes. Here every request to a store runs on a daemon
thread that the command waits for until one deadline for the whole command
(`--timeout`, 30 s by default); past it the command fails in one line that
says what it was waiting for, and the request is left to die with the
process. A wait that takes more than two seconds is said on stderr once, so
a slow store is visible before the deadline.

Downloading a file's bytes is the exception: a large bundle may take
minutes, so each block of a download must arrive within `--timeout` of the
one before (a stalled transfer fails; a slow, moving one does not).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from holmespy.cli.errors import CLIError
from holmespy.cli.text import warn

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
SAY_AFTER = 2.0
"""Seconds of waiting for one answer before the CLI says what it is waiting for."""


class TimedOut(CLIError):
    """The store did not answer before the deadline."""


def add_timeout_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up on an S3 source after this long (default 30)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds from 0 to 86400")
    return value


class Deadline:
    """One deadline for a command's requests to a store at `where`."""

    def __init__(
        self,
        seconds: float,
        where: str,
        *,
        say: Callable[[str], None] = warn,
        say_after: float = SAY_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.where = where
        self._say = say
        self._say_after = say_after
        self._clock = clock
        self._ends = clock() + seconds
        self._said = False
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self._ends - self._clock())

    def run(self, what: str, call: Callable[[], T]) -> T:
        """`call()`'s result, or its exception, if it comes before the deadline; else TimedOut."""
        return self._wait(what, call, self.remaining, overall=True)

    def run_step(self, what: str, call: Callable[[], T]) -> T:
        """Like `run`, but the wait is bounded by `seconds` from now, not by the deadline:
        for the next block of a download that is making progress."""
        ends = self._clock() + self.seconds
        return self._wait(what, call, lambda: max(0.0, ends - self._clock()), overall=False)

    def _wait(
        self, what: str, call: Callable[[], T], remaining: Callable[[], float], *, overall: bool
    ) -> T:
        outcome: list[tuple[bool, object]] = []
        done = threading.Event()

        def work() -> None:
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # handed to the waiting thread
                outcome.append((False, exc))
            finally:
                done.set()

        # A daemon: when the deadline passes it is abandoned, and dies with the process.
        threading.Thread(target=work, name="holmespy-cli-request", daemon=True).start()
        if not done.wait(min(self._say_after, remaining())) and remaining() > 0:
            self._waiting(what, remaining())
            done.wait(remaining())
        if not done.is_set():
            limit = "" if overall else " for the next block"
            raise TimedOut(
                f"{self.where} did not answer within {self.seconds:g}s{limit}"
                f" (waiting for {what}); give it longer with --timeout SECONDS"
            )
        ok, value = outcome[0]
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        return value  # type: ignore[return-value]

    def _waiting(self, what: str, remaining: float) -> None:
        with self._lock:
            if self._said:
                return
            self._said = True
        self._say(
            f"waiting for {self.where} to answer ({what});"
            f" giving up in {remaining:.0f}s (--timeout)"
        )

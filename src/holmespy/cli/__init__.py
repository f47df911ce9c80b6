"""The `holmespy` command: one module per verb, `main(argv) -> int`.

Exit status: 0 success, 1 not found or failed, 2 bad usage. Every error is
one line on stderr, never a traceback: verbs raise `CLIError`s that carry
their status, and the few library errors a user can cause (a corrupt
profile, a bad setting, a storage failure, a file system refusal) are turned
into the same one line here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from holmespy import __version__
from holmespy.cli import diff, doctor, fetch, flame, ls, run, serve, show, top
from holmespy.cli.errors import EXIT_FAILED, EXIT_USAGE, CLIError
from holmespy.cli.text import SafeStream, warn
from holmespy.errors import ConfigError, HolmesError

VERBS = (ls, fetch, show, top, flame, diff, run, serve, doctor)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (its default prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _HelpEnv(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from holmespy.config import help_table

        print(help_table())
        parser.exit(0)


def build_parser() -> Parser:
    parser = Parser(
        prog="holmespy",
        description="Find, fetch and read the event bundles holmespy wrote.",
    )
    parser.add_argument("--version", action="version", version=f"holmespy {__version__}")
    parser.add_argument(
        "--help-env",
        action=_HelpEnv,
        nargs=0,
        help="list every HOLMES_* setting with its default and exit",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stdout = sys.stdout
    sys.stdout = SafeStream(stdout)
    try:
        return _run(args)
    finally:
        sys.stdout = stdout


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`holmespy ls | head`); stdout must not be flushed again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CLIError as exc:
        return _fail(str(exc), exc.exit_code)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except HolmesError as exc:  # a corrupt profile, a storage failure
        return _fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
    except (MemoryError, RecursionError) as exc:  # the last net under the reading limits
        what = "memory" if isinstance(exc, MemoryError) else "stack"
        return _fail(f"ran out of {what} (a file too large or too deeply nested?)", EXIT_FAILED)
    return code


def _fail(message: str, code: int) -> int:
    warn(message)  # escaped: messages quote names from bundles and keys
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The `holmespy` command: one module per verb, `main(argv) -> int`.

Exit status: 0 success, 1 not found or failed, 2 bad usage. Every error is
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from holmespy.cli import ls, show
from holmespy.cli.errors import CLIError

VERBS = (ls, show)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="holmespy",
        description="Find and read the event bundles holmespy wrote.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage, argparse's convention
    try:
        code: int = args.run(args)
    except CLIError as exc:
        print(f"holmespy: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `holmespy ls | head`
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`holmespy flame FILE -o OUT`: a flame graph to open in a browser, or an export.

The format comes from `-f`, else from OUT's name: `.html` is the
self-contained page of `flamegraph.py`; `.json` speedscope's file format
(open it at speedscope.app); `.txt`, `.folded` or `.collapsed` Brendan
Gregg's collapsed stacks, which flamegraph.pl, inferno and Pyroscope read.

OUT is written like a dump: a private file (0600) in folders created 0700
when missing, whatever the umask, renamed into place, so a link planted at
OUT is replaced rather than written through.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from holmespy import safefs
from holmespy.cli.errors import BadUsage
from holmespy.cli.flamegraph import render_html, tree_from_collapsed
from holmespy.cli.profiles import collector_paused, column, load
from holmespy.cli.reading import add_max_size_arg
from holmespy.cli.text import quantity, warn
from holmespy.formats.collapsed import to_collapsed
from holmespy.formats.profile import Frame, Profile, Sample
from holmespy.formats.speedscope import to_speedscope

FORMATS = ("html", "collapsed", "speedscope")
BY_SUFFIX = {
    ".html": "html",
    ".htm": "html",
    ".json": "speedscope",
    ".txt": "collapsed",
    ".folded": "collapsed",
    ".collapsed": "collapsed",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "flame",
        help="flame graph a person can open",
        description="Write a flame graph (self-contained HTML) or a collapsed/speedscope export.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="a pprof profile (.pb.gz)")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the file to write, or - for stdout"
    )
    p.add_argument("-f", "--format", choices=FORMATS, help="default: from OUT's extension")
    p.add_argument("-i", "--sample-type", metavar="TYPE", help="which values, e.g. inuse_objects")
    p.add_argument(
        "--merge-threads",
        action="store_true",
        help="one tree for all threads (default: per thread)",
    )
    p.add_argument(
        "--lines", action="store_true", help="one frame per line (default: one per function)"
    )
    add_max_size_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fmt = args.format or _format_of(args.output)
    profile = load(args.file, args.max_size)
    if not args.lines:
        profile = by_function(profile)
    index = column(profile, args.sample_type)
    value_type = profile.sample_types[index]
    if fmt == "speedscope":
        text = json.dumps(to_speedscope(profile, name=args.file.name, sample_type=value_type.type))
    else:
        collapsed = to_collapsed(
            profile, sample_type=value_type.type, thread_roots=not args.merge_threads
        )
        if fmt == "collapsed":
            text = collapsed
        else:
            root = tree_from_collapsed(collapsed)
            title = f"{args.file.name} flame graph"
            total = quantity(root.value, value_type.unit)
            subtitle = f"{value_type.type}/{value_type.unit}, total {total}"
            text = render_html(root, title=title, unit=value_type.unit, subtitle=subtitle)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    safefs.replace_file(out, text.encode())
    warn(f"wrote {out} ({fmt})" + (": open it in a browser" if fmt == "html" else ""))
    return 0


def by_function(profile: Profile) -> Profile:
    """The profile with line numbers dropped, so a function is one frame however many
    of its lines were sampled (py-spy and tracemalloc record the line)."""
    merged: dict[int, Frame] = {}  # by object: decoded profiles share one Frame per location

    def without_line(frame: Frame) -> Frame:
        found = merged.get(id(frame))
        if found is None:
            found = merged[id(frame)] = Frame(frame.function, frame.filename)
        return found

    copy_ = copy.copy(profile)
    with collector_paused():
        copy_.samples = [
            Sample(tuple(map(without_line, s.stack)), s.values, s.labels) for s in profile.samples
        ]
    return copy_


def _format_of(output: str) -> str:
    if output == "-":
        return "collapsed"
    fmt = BY_SUFFIX.get(Path(output).suffix.lower())
    if fmt is None:
        raise BadUsage(
            f"-o {output}: cannot tell the format from the name; add -f {'|'.join(FORMATS)}"
        )
    return fmt

"""Brendan Gregg's collapsed ("folded") stacks, the input of flamegraph.pl and friends.

One line per distinct stack, `outermost;...;innermost VALUE`, values summed
and lines sorted, so two exports of one profile diff cleanly. Stacks whose
total is zero are left out: flame graph tools would draw nothing for them.
"""

from __future__ import annotations

from holmespy.formats.profile import Frame, Profile
from holmespy.printable import printable

__all__ = ["frame_label", "sample_index", "to_collapsed"]


def _safe(text: str) -> str:
    # Frames are split on ";" and the value is taken after the last space, so a
    # ";" or a line break would break a line (spaces inside names are harmless);
    # control characters are escaped as everywhere holmespy writes names.
    return printable(text).replace(";", ",")


def sample_index(profile: Profile, sample_type: str | None = None) -> int:
    """Which value column to use: `sample_type` by name, else the profile's
    default sample type, else the last column (pprof's own rule)."""
    names = [vt.type for vt in profile.sample_types]
    if not names:
        raise ValueError("the profile has no sample types")
    if sample_type is not None:
        if sample_type not in names:
            raise ValueError(
                f"sample type {sample_type!r} is not in the profile (it has {', '.join(names)})"
            )
        return names.index(sample_type)
    if profile.default_sample_type in names:
        return names.index(profile.default_sample_type)
    return len(names) - 1


def frame_label(frame: Frame) -> str:
    """`function (file:line)`, with whatever part is unknown left out."""
    if frame.filename and frame.line:
        text = f"{frame.function} ({frame.filename}:{frame.line})"
    elif frame.filename:
        text = f"{frame.function} ({frame.filename})"
    else:
        text = frame.function
    return _safe(text)


def to_collapsed(
    profile: Profile, *, sample_type: str | None = None, thread_roots: bool = True
) -> str:
    """The profile as collapsed stacks; with `thread_roots`, each stack starts at
    `thread:NAME` when the sample has a "thread" label, so threads stay apart."""
    if not profile.samples:
        return ""
    column = sample_index(profile, sample_type)
    labels: dict[Frame, str] = {}
    totals: dict[tuple[str, tuple[Frame, ...]], int] = {}
    for sample in profile.samples:
        thread = sample.labels.get("thread", "") if thread_roots else ""
        key = (thread, sample.stack)
        totals[key] = totals.get(key, 0) + sample.values[column]

    # Frames that differ only in start_line print alike, so sum again by text.
    by_text: dict[str, int] = {}
    for (thread, stack), total in totals.items():
        parts: list[str] = []
        if thread:
            parts.append(_safe(f"thread:{thread}"))
        for frame in reversed(stack):
            text = labels.get(frame)
            if text is None:
                text = labels[frame] = frame_label(frame)
            parts.append(text)
        if not stack:
            # perf's convention for a sample that caught no frames.
            parts.append("[unknown]")
        line = ";".join(parts)
        by_text[line] = by_text.get(line, 0) + total
    return "".join(f"{line} {total}\n" for line, total in sorted(by_text.items()) if total)

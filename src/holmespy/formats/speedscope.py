"""Speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json).

Speedscope shows one profile at a time and lets the user switch between them,
so each thread becomes its own "sampled" profile instead of one mixed tree;
the file opens on the heaviest thread. Frames are shared across threads, and
samples keep the profile's order, which speedscope's "time order" view shows.
Samples whose selected value is zero are left out (they would have no width).
"""

from __future__ import annotations

from typing import Any

from holmespy.formats.collapsed import sample_index
from holmespy.formats.profile import Profile

__all__ = ["SCHEMA", "to_speedscope"]

SCHEMA = "https://www.speedscope.app/file-format-schema.json"

_UNITS = {
    "nanoseconds": "nanoseconds",
    "microseconds": "microseconds",
    "milliseconds": "milliseconds",
    "seconds": "seconds",
    "bytes": "bytes",
}

NO_THREAD = "(no thread label)"


def to_speedscope(
    profile: Profile, *, name: str = "holmespy profile", sample_type: str | None = None
) -> dict[str, Any]:
    """The profile as a speedscope file (a dict ready for `json.dump`)."""
    column = sample_index(profile, sample_type) if profile.sample_types else 0
    unit = _UNITS.get(profile.sample_types[column].unit, "none") if profile.sample_types else "none"

    frames: list[dict[str, Any]] = []
    frame_index: dict[tuple[str, str, int], int] = {}
    threaded = any("thread" in s.labels for s in profile.samples)
    groups: dict[str, tuple[list[list[int]], list[int]]] = {}

    for sample in profile.samples:
        weight = sample.values[column]
        if not weight:
            continue
        indices: list[int] = []
        for frame in reversed(sample.stack):  # speedscope wants outermost first
            key = (frame.function, frame.filename, frame.line)
            index = frame_index.get(key)
            if index is None:
                index = frame_index[key] = len(frames)
                entry: dict[str, Any] = {"name": frame.function}
                if frame.filename:
                    entry["file"] = frame.filename
                if frame.line:
                    entry["line"] = frame.line
                frames.append(entry)
            indices.append(index)
        group = sample.labels.get("thread", NO_THREAD) if threaded else name
        stacks, weights = groups.setdefault(group, ([], []))
        stacks.append(indices)
        weights.append(weight)

    if not groups:
        # An empty file still has to be loadable, and the schema wants a profile.
        groups[name] = ([], [])

    totals = [sum(weights) for _, weights in groups.values()]
    profiles = [
        {
            "type": "sampled",
            "name": group,
            "unit": unit,
            "startValue": 0,
            "endValue": total,
            "samples": stacks,
            "weights": weights,
        }
        for (group, (stacks, weights)), total in zip(groups.items(), totals, strict=True)
    ]
    heaviest = totals.index(max(totals))
    return {
        "$schema": SCHEMA,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": heaviest,
        "exporter": "holmespy",
    }

"""Reading a profile file for the CLI, and the per-function sums `top` and `show` print."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from holmespy.cli.errors import BadUsage, CLIError, NotFound
from holmespy.cli.reading import DEFAULT_MAX_SIZE, TooLarge
from holmespy.formats.collapsed import sample_index
from holmespy.formats.pprof import ProfileFormatError, ProfileTooLarge, read_pprof
from holmespy.formats.profile import Profile, ValueType


def load(path: Path, max_size: int = DEFAULT_MAX_SIZE) -> Profile:
    """A pprof file, or a one-line error naming it: missing, unreadable, corrupt, foreign,
    or larger than `max_size` once decompressed (a gzip bomb stops there)."""
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    if path.is_dir():
        raise BadUsage(f"{path}: is a folder; give a profile file such as {path}/cpu.pb.gz")
    try:
        return read_pprof(path, max_size=max_size)
    except ProfileTooLarge as exc:
        raise TooLarge(f"{exc}; raise the limit with --max-size if you trust the file") from None
    except ProfileFormatError as exc:
        raise CLIError(str(exc)) from None


def column(profile: Profile, sample_type: str | None) -> int:
    try:
        return sample_index(profile, sample_type)
    except ValueError as exc:
        raise BadUsage(str(exc)) from None


@dataclass(frozen=True)
class FunctionCost:
    function: str
    filename: str
    self: int
    """Summed over the samples where the function is the innermost frame."""
    cum: int
    """Summed over the samples where it is anywhere on the stack (once per sample)."""


def hottest(profile: Profile, index: int) -> tuple[list[FunctionCost], int]:
    """Every function with its self and cumulative value, hottest (by self) first; and the total."""
    # Frames are numbered by object: decoded profiles share one Frame per location,
    # so each is looked at once instead of hashing its fields on every sample.
    number_of: dict[int, int] = {}
    numbered: dict[tuple[str, str], int] = {}
    own: list[int] = []
    cum: list[int] = []
    total = 0
    with collector_paused():
        for sample in profile.samples:
            value = sample.values[index]
            if not value:
                continue
            total += value
            numbers = []
            for frame in sample.stack:
                n = number_of.get(id(frame))
                if n is None:
                    n = numbered.setdefault((frame.function, frame.filename), len(numbered))
                    number_of[id(frame)] = n
                    if n == len(own):
                        own.append(0)
                        cum.append(0)
                numbers.append(n)
            if numbers:
                own[numbers[0]] += value
            # A recursive function is on the stack many times but costs the sample once.
            for n in set(numbers):
                cum[n] += value
    rows = [FunctionCost(name, file, own[n], cum[n]) for (name, file), n in numbered.items()]
    rows.sort(key=lambda r: (-r.self, -r.cum, r.function))
    return rows, total


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection for a while: a big decoded profile is millions of objects,
    and every full collection the loop's own small tuples trigger walks them all
    (`top` of 200,000 samples took 1.8x as long with the collector on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def describe(profile: Profile, index: int) -> str:
    """`cpu/nanoseconds (other columns: samples)`: which values a table shows."""
    chosen = profile.sample_types[index]
    others = [vt.type for i, vt in enumerate(profile.sample_types) if i != index]
    text = _name(chosen)
    return text + (f"; also in the file: {', '.join(others)} (-i TYPE)" if others else "")


def _name(value_type: ValueType) -> str:
    return f"{value_type.type}/{value_type.unit}"

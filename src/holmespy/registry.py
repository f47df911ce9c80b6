"""The rules holmespy knows, in one place: what each samples, in which unit, what it captures.

Config (which `HOLMES_*` rules exist), the watcher (which sample field feeds
a rule, the unit written in `event.json`), the captures each rule takes and
every CLI view (the `--rule` choices, what a value means) read this table,
so a new metric is one entry here plus its sampler and its capture.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing (~9 ms) at start()
if TYPE_CHECKING:
    from typing import Literal, TypeAlias

    RuleName: TypeAlias = Literal["cpu", "mem", "thread", "task", "gcheap", "loop"]


class Metric:
    """One rule's metric (a plain class: `dataclasses` would cost `start()` ~15 ms)."""

    __slots__ = ("captures", "means", "name", "sample_field", "unit")
    name: RuleName
    unit: str
    """As `event.json` writes it after the value: `%`, `threads`, `tasks`."""
    means: str
    """What the value is, for a person: `OS threads`."""
    sample_field: str
    """The `holmespy.sampling.Sample` attribute the rule watches (a list: one value each)."""
    captures: tuple[str, ...]
    """Capture names (`holmespy.profilers`), in the order they run."""

    def __init__(
        self, name: RuleName, unit: str, means: str, sample_field: str, captures: tuple[str, ...]
    ) -> None:
        self.name = name
        self.unit = unit
        self.means = means
        self.sample_field = sample_field
        self.captures = captures

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, {self.unit!r}, sample_field={self.sample_field!r})"


# Thread stacks are cheap (~1 ms) and say what every thread was doing, so every
# event carries them; the task dump goes where asyncio is the likely culprit.
# The flight recorder comes last in every event, so its window reaches from
# before the trigger to the end of the capture. A loop event's stalls are a
# window: one may still be going on, and its capture lets it end.
METRICS: tuple[Metric, ...] = (
    Metric(
        "cpu", "%", "CPU use, % of usable cores", "cpu", ("threads", "tasks", "cpu", "recorder")
    ),
    Metric(
        "mem",
        "%",
        "RSS, % of the memory limit",
        "mem",
        ("threads", "heap", "heap-types", "heap-holders", "recorder"),
    ),
    Metric("thread", "threads", "OS threads", "threads", ("threads", "recorder")),
    Metric("task", "tasks", "asyncio tasks", "tasks", ("tasks", "threads", "recorder")),
    Metric(
        "gcheap",
        "%",
        "memory after a full GC, % of the memory limit",
        "gcheap",
        ("threads", "heap", "heap-2", "heap-types", "heap-holders", "recorder"),
    ),
    Metric(
        "loop",
        "ms",
        "longest event-loop stall, ms",
        "loop",
        ("tasks", "threads", "loop", "recorder"),
    ),
)
RULES: dict[str, Metric] = {m.name: m for m in METRICS}
RULE_NAMES: tuple[RuleName, ...] = tuple(m.name for m in METRICS)

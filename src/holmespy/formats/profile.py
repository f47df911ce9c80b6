"""A profile as data, apart from any file format.

Every engine (py-spy, the in-process sampler, yappi, tracemalloc) produces a
`Profile`; `formats.pprof` writes it as gzipped profile.proto and reads it
back, and the collapsed / speedscope exporters read the same model. Stacks are
stored innermost frame first, as pprof's `Sample.location_id` is.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Frame:
    """One call site: module-qualified function name, file and line."""

    function: str
    """e.g. `myapp.handlers.render_report` (module + qualname)."""
    filename: str
    line: int = 0
    start_line: int = 0
    """First line of the function, when known (pprof's `Function.start_line`)."""


@dataclass(frozen=True, slots=True)
class ValueType:
    """What one column of sample values counts, e.g. ("cpu", "nanoseconds")."""

    type: str
    unit: str


@dataclass(slots=True)
class Sample:
    stack: tuple[Frame, ...]
    """Innermost frame first."""
    values: tuple[int, ...]
    """One value per `Profile.sample_types` column."""
    labels: dict[str, str] = field(default_factory=dict)
    """String labels, e.g. {"thread": "MainThread"}."""


@dataclass(slots=True)
class Profile:
    sample_types: tuple[ValueType, ...]
    samples: list[Sample] = field(default_factory=list)
    time_nanos: int = 0
    """When collection started, Unix epoch nanoseconds."""
    duration_nanos: int = 0
    period_type: ValueType | None = None
    period: int = 0
    default_sample_type: str = ""
    comments: list[str] = field(default_factory=list)

    def add(self, stack: tuple[Frame, ...], values: tuple[int, ...], **labels: str) -> None:
        if len(values) != len(self.sample_types):
            raise ValueError(f"{len(values)} values for {len(self.sample_types)} sample types")
        self.samples.append(Sample(stack, values, dict(labels)))

"""A profile as data, apart from any file format.

Every engine (py-spy, the in-process sampler, yappi, tracemalloc) produces a
`Profile`; `formats.pprof` writes it as gzipped profile.proto and reads it
back, and the collapsed / speedscope exporters read the same model. Stacks are
stored innermost frame first, as pprof's `Sample.location_id` is.

Plain slotted classes, not dataclasses: the flight recorder interns `Frame`s
from the moment it starts, and `dataclasses` (with inspect) would add ~15 ms
to every process's start-up (`benchmarks/startup.py`).
"""

from __future__ import annotations


class Frame:
    """One call site: module-qualified function name, file and line (immutable)."""

    __slots__ = ("filename", "function", "line", "start_line")
    function: str
    """e.g. `myapp.handlers.render_report` (module + qualname)."""
    filename: str
    line: int
    start_line: int
    """First line of the function, when known (pprof's `Function.start_line`)."""

    def __init__(self, function: str, filename: str, line: int = 0, start_line: int = 0) -> None:
        set_ = object.__setattr__
        set_(self, "function", function)
        set_(self, "filename", filename)
        set_(self, "line", line)
        set_(self, "start_line", start_line)

    def _key(self) -> tuple[str, str, int, int]:
        return (self.function, self.filename, self.line, self.start_line)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Frame:
            return NotImplemented
        assert isinstance(other, Frame)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Frame(function={self.function!r}, filename={self.filename!r},"
            f" line={self.line!r}, start_line={self.start_line!r})"
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a Frame is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: a Frame is immutable")

    def __reduce__(self) -> tuple[type[Frame], tuple[str, str, int, int]]:
        return (Frame, self._key())


class ValueType:
    """What one column of sample values counts, e.g. ("cpu", "nanoseconds") (immutable)."""

    __slots__ = ("type", "unit")
    type: str
    unit: str

    def __init__(self, type: str, unit: str) -> None:
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "unit", unit)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not ValueType:
            return NotImplemented
        assert isinstance(other, ValueType)
        return (self.type, self.unit) == (other.type, other.unit)

    def __hash__(self) -> int:
        return hash((self.type, self.unit))

    def __repr__(self) -> str:
        return f"ValueType(type={self.type!r}, unit={self.unit!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a ValueType is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: a ValueType is immutable")

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (ValueType, (self.type, self.unit))


class Sample:
    __slots__ = ("labels", "stack", "values")
    stack: tuple[Frame, ...]
    """Innermost frame first."""
    values: tuple[int, ...]
    """One value per `Profile.sample_types` column."""
    labels: dict[str, str]
    """String labels, e.g. {"thread": "MainThread"}."""

    def __init__(
        self,
        stack: tuple[Frame, ...],
        values: tuple[int, ...],
        labels: dict[str, str] | None = None,
    ) -> None:
        self.stack = stack
        self.values = values
        self.labels = {} if labels is None else labels

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Sample:
            return NotImplemented
        assert isinstance(other, Sample)
        return (self.stack, self.values, self.labels) == (other.stack, other.values, other.labels)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Sample(stack={self.stack!r}, values={self.values!r}, labels={self.labels!r})"


class Profile:
    __slots__ = (
        "comments",
        "default_sample_type",
        "duration_nanos",
        "period",
        "period_type",
        "sample_types",
        "samples",
        "time_nanos",
    )
    sample_types: tuple[ValueType, ...]
    samples: list[Sample]
    time_nanos: int
    """When collection started, Unix epoch nanoseconds."""
    duration_nanos: int
    period_type: ValueType | None
    period: int
    default_sample_type: str
    comments: list[str]

    def __init__(
        self,
        sample_types: tuple[ValueType, ...],
        samples: list[Sample] | None = None,
        time_nanos: int = 0,
        duration_nanos: int = 0,
        period_type: ValueType | None = None,
        period: int = 0,
        default_sample_type: str = "",
        comments: list[str] | None = None,
    ) -> None:
        self.sample_types = sample_types
        self.samples = [] if samples is None else samples
        self.time_nanos = time_nanos
        self.duration_nanos = duration_nanos
        self.period_type = period_type
        self.period = period
        self.default_sample_type = default_sample_type
        self.comments = [] if comments is None else comments

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in Profile.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Profile:
            return NotImplemented
        assert isinstance(other, Profile)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in Profile.__slots__)
        return f"Profile({inner})"

    def add(self, stack: tuple[Frame, ...], values: tuple[int, ...], **labels: str) -> None:
        if len(values) != len(self.sample_types):
            raise ValueError(f"{len(values)} values for {len(self.sample_types)} sample types")
        self.samples.append(Sample(stack, values, dict(labels)))

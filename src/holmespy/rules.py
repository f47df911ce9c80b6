"""The rule engine: one pure function decides for all five rules.

holmes repeats a `xxxCheckAndDump` per metric and does its arithmetic in
integers, so `avg * (100 + diff) / 100` truncates and a ring that already holds
the current sample drags the average towards it. Here a single `evaluate()`
works in floats over the samples *before* the current one, and every decision
carries a reason string a person can read in `event.json` or the log.
"""

from __future__ import annotations

from collections import deque

from holmespy.constant import Constant

TYPE_CHECKING = False  # typing's, without importing typing at start()
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

RING_SIZE = 10
"""Samples kept per rule; also the warm-up of the `diff` comparison, which needs a full ring."""

# Rule and Limit are plain classes, not dataclasses: `import dataclasses`
# (with inspect, re, enum) and building the classes would cost `start()` ~16 ms.


class Limit:
    """At most `count` dumps per sliding `window` seconds (immutable)."""

    __slots__ = ("count", "window")
    count: int
    window: float

    def __init__(self, count: int = 5, window: float = 3600.0) -> None:
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "window", window)

    def __str__(self) -> str:
        return f"{self.count}/{_fmt_seconds(self.window)}"

    def __repr__(self) -> str:
        return f"Limit(count={self.count!r}, window={self.window!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Limit:
            return NotImplemented
        return (self.count, self.window) == (other.count, other.window)

    def __hash__(self) -> int:
        return hash((self.count, self.window))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a Limit is immutable")

    def __reduce__(self) -> tuple[type[Limit], tuple[int, float]]:
        # (copy and pickle would otherwise set each slot, which an immutable refuses)
        return (Limit, (self.count, self.window))

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: a Limit is immutable")


_DEFAULT_LIMIT = Limit()


class Rule:
    """Thresholds of one rule, in the unit of its metric (percent or a count); immutable.

    A sample `cur` fires when `cur >= min` and (`cur > abs` or
    `cur >= avg(previous) * (100 + diff) / 100`) and, if `max` is set, `cur < max`.
    `min`, `abs` and `max` apply from the first sample; the `diff` comparison
    waits until `RING_SIZE` samples came before `cur`.
    """

    FIELDS = ("min", "diff", "abs", "cooldown", "max", "limit")
    __slots__ = FIELDS
    min: float
    diff: float
    abs: float
    cooldown: float
    max: float | None
    limit: Limit

    def __init__(
        self,
        min: float,
        diff: float,
        abs: float,
        cooldown: float = 60.0,
        max: float | None = None,
        limit: Limit = _DEFAULT_LIMIT,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "min", min)
        setattr_(self, "diff", diff)
        setattr_(self, "abs", abs)
        setattr_(self, "cooldown", cooldown)
        setattr_(self, "max", max)
        setattr_(self, "limit", limit)

    def replace(self, **changes: Any) -> Rule:
        """A copy with `changes` applied (as `dataclasses.replace` would)."""
        values = {name: getattr(self, name) for name in Rule.FIELDS}
        for name in changes:
            if name not in values:
                raise TypeError(f"Rule has no field {name!r}")
        values.update(changes)
        return Rule(**values)

    def _key(self) -> tuple[object, ...]:
        return (self.min, self.diff, self.abs, self.cooldown, self.max, self.limit)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Rule:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Rule(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in Rule.FIELDS) + ")"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a Rule is immutable")

    def __reduce__(self) -> tuple[type[Rule], tuple[Any, ...]]:
        return (Rule, self._key())

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: a Rule is immutable")

    def spec(self) -> str:
        """The rule in the `HOLMES_*` GODEBUG-style syntax it was (or could be) written in."""
        parts = [f"min={_fmt_num(self.min)}", f"diff={_fmt_num(self.diff)}"]
        parts.append(f"abs={_fmt_num(self.abs)}")
        if self.max is not None:
            parts.append(f"max={_fmt_num(self.max)}")
        parts.append(f"cooldown={_fmt_seconds(self.cooldown)}")
        parts.append(f"limit={self.limit}")
        return ",".join(parts)


class Verdict(Constant):
    """Why a sample did or did not fire; `FIRE` is the only one that dumps."""

    __slots__ = ()
    FIRE: Verdict
    WARMUP: Verdict
    BELOW_MIN: Verdict
    AT_MAX: Verdict
    NO_SPIKE: Verdict
    COOLDOWN: Verdict
    LIMITED: Verdict
    CPU_MAX: Verdict


FIRE = Verdict.FIRE = Verdict("fire")
WARMUP = Verdict.WARMUP = Verdict("warmup")
BELOW_MIN = Verdict.BELOW_MIN = Verdict("below-min")
AT_MAX = Verdict.AT_MAX = Verdict("at-max")
NO_SPIKE = Verdict.NO_SPIKE = Verdict("no-spike")
COOLDOWN = Verdict.COOLDOWN = Verdict("cooldown")
LIMITED = Verdict.LIMITED = Verdict("limited")
CPU_MAX = Verdict.CPU_MAX = Verdict("cpu-max")
SKIPS = (COOLDOWN, LIMITED, CPU_MAX)
"""Verdicts of a sample that would have fired: counted in `status().skipped`."""


class Decision:
    """What one sample decided, and why (the reason is built only when read)."""

    __slots__ = ("average", "cpu", "cpu_max", "detail", "rule", "value", "verdict")

    def __init__(
        self,
        verdict: Verdict,
        value: float,
        average: float | None,
        rule: Rule,
        detail: float = 0.0,
        cpu: float | None = None,
        cpu_max: float | None = None,
    ) -> None:
        self.verdict = verdict
        self.value = value
        self.average = average
        """Of the samples before `value`, once the ring is full; None below min (never compared)."""
        self.rule = rule
        # What the reason needs besides: samples seen (warm-up), the spike
        # threshold (no spike, fire) or the cooldown left (cooldown).
        self.detail = detail
        self.cpu = cpu
        self.cpu_max = cpu_max

    def __repr__(self) -> str:
        return f"Decision({self.verdict.value}, {self.value!r}, average={self.average!r})"

    @property
    def fire(self) -> bool:
        return self.verdict is FIRE

    @property
    def reason(self) -> str:
        """The decision in words, for `event.json` and the log."""
        # Formatting numbers into text is most of what evaluating a rule would
        # otherwise cost, and most decisions are never read: built here, on demand.
        verdict, rule, v = self.verdict, self.rule, _fmt_num(self.value)
        if verdict is BELOW_MIN:
            return f"{v} < min {_fmt_num(rule.min)}"
        if verdict is AT_MAX:
            return f"{v} >= max {_fmt_num(rule.max or 0)}: too large to dump safely"
        if verdict is WARMUP:
            return (
                f"{v} <= abs {_fmt_num(rule.abs)}; the diff comparison is warming up: "
                f"{int(self.detail)}/{RING_SIZE} samples"
            )
        if verdict is NO_SPIKE:
            return (
                f"{v} <= abs {_fmt_num(rule.abs)} and < {_fmt_num(self.detail)} "
                f"(average {_fmt_num(self.average or 0.0)} + diff {_fmt_num(rule.diff)}%)"
            )
        if self.value > rule.abs:
            why = f"{v} > abs {_fmt_num(rule.abs)}"
        else:
            average = self.average if self.average is not None else 0.0
            spike_at = average * (100.0 + rule.diff) / 100.0
            why = (
                f"{v} >= {_fmt_num(spike_at)} = average {_fmt_num(self.average or 0.0)} of the"
                f" last {RING_SIZE} samples + diff {_fmt_num(rule.diff)}%"
            )
        if verdict is COOLDOWN:
            return f"{why}, but cooling down for {_fmt_seconds(self.detail)} more"
        if verdict is LIMITED:
            return f"{why}, but limit {rule.limit} reached"
        if verdict is CPU_MAX:
            cpu, cpu_max = _fmt_num(self.cpu or 0.0), _fmt_num(self.cpu_max or 0.0)
            return f"{why}, but CPU {cpu}% > HOLMES_CPU_MAX {cpu_max}%"
        return why


def evaluate(
    previous: Sequence[float],
    cur: float,
    rule: Rule,
    *,
    now: float,
    fired_at: Sequence[float] = (),
    cpu: float | None = None,
    cpu_max: float | None = None,
) -> Decision:
    """Decide whether `cur` fires `rule`, given the samples before it.

    `fired_at` holds the times this rule fired recently (for cooldown and
    limit); `cpu`/`cpu_max` apply the global guard: no dump of any kind while
    the process burns more CPU than `cpu_max`.
    """
    if cur < rule.min:  # the common case, first: no average is needed to say no
        return Decision(BELOW_MIN, cur, None, rule)
    return _evaluate(previous, cur, rule, now, fired_at, cpu, cpu_max)


def _evaluate(
    previous: Sequence[float],
    cur: float,
    rule: Rule,
    now: float,
    fired_at: Sequence[float],
    cpu: float | None,
    cpu_max: float | None,
) -> Decision:
    """`evaluate` for a `cur` at or above `min`."""
    n = len(previous)
    # `abs` and `max` need no history: a fresh worker that starts broken is
    # reported at once. Only the `diff` comparison waits for a full ring,
    # which once warm holds exactly RING_SIZE samples: sum it without a copy.
    avg: float | None = None
    if n >= RING_SIZE:
        avg = _fsum(previous if n == RING_SIZE else list(previous)[-RING_SIZE:]) / RING_SIZE
    if rule.max is not None and cur >= rule.max:
        return Decision(AT_MAX, cur, avg, rule)
    spike_at = 0.0
    if cur <= rule.abs:
        if avg is None:
            return Decision(WARMUP, cur, None, rule, n)
        spike_at = avg * (100.0 + rule.diff) / 100.0
        if cur < spike_at:
            return Decision(NO_SPIKE, cur, avg, rule, spike_at)
    if fired_at and now - fired_at[-1] < rule.cooldown:
        return Decision(COOLDOWN, cur, avg, rule, rule.cooldown - (now - fired_at[-1]))
    recent = sum(1 for t in fired_at if now - t < rule.limit.window)
    if recent >= rule.limit.count:
        return Decision(LIMITED, cur, avg, rule)
    if cpu_max is not None and cpu is not None and cpu > cpu_max:
        return Decision(CPU_MAX, cur, avg, rule, 0.0, cpu, cpu_max)
    return Decision(FIRE, cur, avg, rule)


_math_fsum: Callable[[Iterable[float]], float] | None = None


def _fsum(values: Iterable[float]) -> float:
    """`math.fsum`: the average stays exact whatever the order of the samples."""
    global _math_fsum
    fsum = _math_fsum
    if fsum is None:
        # `math` is a shared library to load (~0.3 ms of `start()`): only once a
        # sample reaches the diff comparison. Under the import guard: this runs
        # on the watcher's thread (holmespy.lazyimport).
        from holmespy.lazyimport import importing

        with importing:
            import math

        fsum = _math_fsum = math.fsum
    return fsum(values)


class RuleState:
    """The mutable side of one rule: its ring of samples and its recent fires.

    Used by the watcher thread only, so it needs no lock.
    """

    __slots__ = ("fired_at", "history", "name", "ring", "rule", "skipped")

    def __init__(self, name: str, rule: Rule) -> None:
        self.name = name
        self.rule = rule
        self.ring: deque[float] = deque(maxlen=RING_SIZE)
        # The ring with times, plus the newest sample: what `event.json` shows as history.
        self.history: deque[tuple[float, float]] = deque(maxlen=RING_SIZE + 1)
        self.fired_at: deque[float] = deque()
        self.skipped: dict[Verdict, int] = {}

    def observe(
        self,
        value: float,
        *,
        now: float,
        wall: float,
        cpu: float | None = None,
        cpu_max: float | None = None,
    ) -> Decision:
        """Evaluate `value`, then add it to the ring (whatever the decision).

        `now` is a monotonic clock for cooldowns, `wall` the epoch time kept
        in the history that goes into `event.json`.
        """
        return self.step(value, now, wall, cpu, cpu_max)

    def step(
        self, value: float, now: float, wall: float, cpu: float | None, cpu_max: float | None
    ) -> Decision:
        """`observe`, with positional arguments: the watcher's per-tick call."""
        rule = self.rule
        fired_at = self.fired_at
        if fired_at:
            window = max(rule.limit.window, 0.0)
            while fired_at and now - fired_at[0] >= window:
                fired_at.popleft()
        if value < rule.min:  # nearly every sample of a healthy process
            decision = Decision(BELOW_MIN, value, None, rule)
        else:
            decision = _evaluate(self.ring, value, rule, now, fired_at, cpu, cpu_max)
            verdict = decision.verdict
            if verdict is FIRE:
                fired_at.append(now)
            elif verdict in SKIPS:
                self.skipped[verdict] = self.skipped.get(verdict, 0) + 1
        self.ring.append(value)
        self.history.append((wall, value))
        return decision


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}".rstrip("0")


def _fmt_seconds(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds >= 1:
        return f"{seconds:.1f}s"
    return f"{round(seconds * 1000)}ms"

"""The rule engine: one pure function decides for all five rules.

holmes repeats a `xxxCheckAndDump` per metric and does its arithmetic in
integers, so `avg * (100 + diff) / 100` truncates and a ring that already holds
the current sample drags the average towards it. Here a single `evaluate()`
works in floats over the samples *before* the current one, and every decision
carries a reason string a person can read in `event.json` or the log.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

RING_SIZE = 10
"""Samples kept per rule; also the warm-up of the `diff` comparison, which needs a full ring."""


@dataclass(frozen=True)
class Limit:
    """At most `count` dumps per sliding `window` seconds."""

    count: int = 5
    window: float = 3600.0

    def __str__(self) -> str:
        return f"{self.count}/{_fmt_seconds(self.window)}"


@dataclass(frozen=True)
class Rule:
    """Thresholds of one rule, in the unit of its metric (percent or a count).

    A sample `cur` fires when `cur >= min` and (`cur > abs` or
    `cur >= avg(previous) * (100 + diff) / 100`) and, if `max` is set, `cur < max`.
    `min`, `abs` and `max` apply from the first sample; the `diff` comparison
    waits until `RING_SIZE` samples came before `cur`.
    """

    min: float
    diff: float
    abs: float
    cooldown: float = 60.0
    max: float | None = None
    limit: Limit = field(default_factory=Limit)

    def spec(self) -> str:
        """The rule in the `HOLMES_*` GODEBUG-style syntax it was (or could be) written in."""
        parts = [f"min={_fmt_num(self.min)}", f"diff={_fmt_num(self.diff)}"]
        parts.append(f"abs={_fmt_num(self.abs)}")
        if self.max is not None:
            parts.append(f"max={_fmt_num(self.max)}")
        parts.append(f"cooldown={_fmt_seconds(self.cooldown)}")
        parts.append(f"limit={self.limit}")
        return ",".join(parts)


class Verdict(StrEnum):
    """Why a sample did or did not fire; `FIRE` is the only one that dumps."""

    FIRE = "fire"
    WARMUP = "warmup"
    BELOW_MIN = "below-min"
    AT_MAX = "at-max"
    NO_SPIKE = "no-spike"
    COOLDOWN = "cooldown"
    LIMITED = "limited"
    CPU_MAX = "cpu-max"


@dataclass(slots=True)  # not frozen: a frozen init costs twice as much, and 5 are built per tick
class Decision:
    verdict: Verdict
    value: float
    average: float | None
    explain: Callable[[], str] = field(repr=False, compare=False)
    """Builds the reason on demand: most decisions are never read, and formatting
    numbers into text is most of what evaluating a rule would otherwise cost."""

    @property
    def fire(self) -> bool:
        return self.verdict is Verdict.FIRE

    @property
    def reason(self) -> str:
        return self.explain()


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
    n = len(previous)
    # `abs` and `max` need no history: a fresh worker that starts broken is
    # reported at once. Only the `diff` comparison waits for a full ring,
    # which once warm holds exactly RING_SIZE samples: sum it without a copy.
    avg: float | None = None
    if n >= RING_SIZE:
        avg = math.fsum(previous if n == RING_SIZE else list(previous)[-RING_SIZE:]) / RING_SIZE
    v: Callable[[], str] = lambda: _fmt_num(cur)  # noqa: E731

    if cur < rule.min:
        return Decision(Verdict.BELOW_MIN, cur, avg, lambda: f"{v()} < min {_fmt_num(rule.min)}")
    if rule.max is not None and cur >= rule.max:
        return Decision(
            Verdict.AT_MAX,
            cur,
            avg,
            lambda: f"{v()} >= max {_fmt_num(rule.max or 0)}: too large to dump safely",
        )
    why: Callable[[], str]
    if cur > rule.abs:
        why = lambda: f"{v()} > abs {_fmt_num(rule.abs)}"  # noqa: E731
    elif avg is None:
        return Decision(
            Verdict.WARMUP,
            cur,
            None,
            lambda: (
                f"{v()} <= abs {_fmt_num(rule.abs)}; the diff comparison is warming up: "
                f"{n}/{RING_SIZE} samples"
            ),
        )
    elif cur >= (spike_at := avg * (100.0 + rule.diff) / 100.0):
        why = lambda: (  # noqa: E731
            f"{v()} >= {_fmt_num(spike_at)} = average {_fmt_num(avg)} of the last "
            f"{RING_SIZE} samples + diff {_fmt_num(rule.diff)}%"
        )
    else:
        return Decision(
            Verdict.NO_SPIKE,
            cur,
            avg,
            lambda: (
                f"{v()} <= abs {_fmt_num(rule.abs)} and < {_fmt_num(spike_at)} "
                f"(average {_fmt_num(avg)} + diff {_fmt_num(rule.diff)}%)"
            ),
        )
    if fired_at and now - fired_at[-1] < rule.cooldown:
        left = rule.cooldown - (now - fired_at[-1])
        return Decision(
            Verdict.COOLDOWN,
            cur,
            avg,
            lambda: f"{why()}, but cooling down for {_fmt_seconds(left)} more",
        )
    recent = sum(1 for t in fired_at if now - t < rule.limit.window)
    if recent >= rule.limit.count:
        return Decision(
            Verdict.LIMITED, cur, avg, lambda: f"{why()}, but limit {rule.limit} reached"
        )
    if cpu_max is not None and cpu is not None and cpu > cpu_max:
        return Decision(
            Verdict.CPU_MAX,
            cur,
            avg,
            lambda: f"{why()}, but CPU {_fmt_num(cpu)}% > HOLMES_CPU_MAX {_fmt_num(cpu_max)}%",
        )
    return Decision(Verdict.FIRE, cur, avg, why)


class RuleState:
    """The mutable side of one rule: its ring of samples and its recent fires.

    Used by the watcher thread only, so it needs no lock.
    """

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
        while self.fired_at and now - self.fired_at[0] >= max(self.rule.limit.window, 0.0):
            self.fired_at.popleft()
        decision = evaluate(
            self.ring, value, self.rule, now=now, fired_at=self.fired_at, cpu=cpu, cpu_max=cpu_max
        )
        self.ring.append(value)
        self.history.append((wall, value))
        if decision.fire:
            self.fired_at.append(now)
        elif decision.verdict in (Verdict.COOLDOWN, Verdict.LIMITED, Verdict.CPU_MAX):
            self.skipped[decision.verdict] = self.skipped.get(decision.verdict, 0) + 1
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

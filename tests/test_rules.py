"""The rule engine as truth tables: DESIGN §3, with holmes' pitfalls pinned down."""

from __future__ import annotations

import pytest

from holmespy.rules import RING_SIZE, Limit, Rule, RuleState, Verdict, evaluate

CPU = Rule(min=10, diff=25, abs=70, cooldown=60)
STEADY_40 = [40.0] * RING_SIZE  # average 40: a spike starts at 40 * 1.25 = 50


@pytest.mark.parametrize(
    ("previous", "cur", "verdict"),
    [
        pytest.param([40.0] * 9, 60.0, Verdict.WARMUP, id="9 samples: no diff comparison yet"),
        pytest.param([], 60.0, Verdict.WARMUP, id="no samples: no diff comparison yet"),
        pytest.param([], 70.01, Verdict.FIRE, id="above abs fires from the first sample"),
        pytest.param([40.0] * 9, 99.0, Verdict.FIRE, id="above abs fires during warm-up"),
        pytest.param([], 70.0, Verdict.WARMUP, id="at abs during warm-up waits for the ring"),
        pytest.param([], 9.0, Verdict.BELOW_MIN, id="below min during warm-up"),
        pytest.param(STEADY_40, 9.99, Verdict.BELOW_MIN, id="below min never fires"),
        pytest.param([1.0] * 10, 9.0, Verdict.BELOW_MIN, id="a 9x jump below min is ignored"),
        pytest.param(STEADY_40, 50.0, Verdict.FIRE, id="exactly avg*(100+diff)/100 fires"),
        pytest.param(STEADY_40, 49.99, Verdict.NO_SPIKE, id="just under the diff threshold"),
        pytest.param([70.0] * 10, 70.0, Verdict.NO_SPIKE, id="at abs is not above abs"),
        pytest.param([70.0] * 10, 70.01, Verdict.FIRE, id="above abs fires without a spike"),
        pytest.param([10.0] * 10, 10.0, Verdict.NO_SPIKE, id="steady at min"),
    ],
)
def test_cpu_rule_truth_table(previous: list[float], cur: float, verdict: Verdict) -> None:
    assert evaluate(previous, cur, CPU, now=1000.0).verdict is verdict


@pytest.mark.parametrize(
    ("previous", "cur", "verdict"),
    [
        pytest.param([], 499.0, Verdict.FIRE, id="first sample over abs, under max"),
        pytest.param([], 500.0, Verdict.AT_MAX, id="first sample at max"),
        pytest.param([20.0] * 3, 60.0, Verdict.WARMUP, id="a 3x jump waits for the ring"),
        pytest.param([20.0] * 10, 60.0, Verdict.FIRE, id="the same jump fires once warm"),
    ],
)
def test_thread_rule_truth_table_from_the_first_sample(
    previous: list[float], cur: float, verdict: Verdict
) -> None:
    # A fresh worker that leaks 100 threads in its first seconds is reported
    # at once; only "more than usual" needs to know what usual is.
    rule = Rule(min=10, diff=25, abs=70, max=500)
    assert evaluate(previous, cur, rule, now=0.0).verdict is verdict


def test_warm_up_reason_names_abs_and_the_samples_still_missing() -> None:
    decision = evaluate([40.0] * 4, 60.0, CPU, now=0.0)
    assert decision.average is None
    assert decision.reason == "60 <= abs 70; the diff comparison is warming up: 4/10 samples"


def test_a_fire_during_warm_up_has_no_average() -> None:
    decision = evaluate([40.0] * 4, 90.0, CPU, now=0.0)
    assert decision.fire
    assert decision.average is None
    assert decision.reason == "90 > abs 70"


def test_average_is_float_so_holmes_integer_truncation_does_not_fire() -> None:
    # holmes computes avg and avg*(100+diff)/100 in ints: an average of 10.9
    # threads becomes 10, and 10*125/100 = 12, so 13 threads "spike". In floats
    # the threshold is 10.9 * 1.25 = 13.625 and 13 is no spike.
    rule = Rule(min=5, diff=25, abs=1000)
    previous = [10.0] + [11.0] * 9
    decision = evaluate(previous, 13.0, rule, now=0.0)
    assert decision.verdict is Verdict.NO_SPIKE
    assert decision.average == pytest.approx(10.9)
    assert evaluate(previous, 13.625, rule, now=0.0).fire


def test_average_excludes_the_current_sample() -> None:
    # Had the ring already held `cur`, the average would be (9*10 + 12.6)/10 =
    # 10.26 and the threshold 12.83: the spike to 12.6 would hide itself.
    rule = Rule(min=5, diff=25, abs=1000)
    previous = [10.0] * 10
    decision = evaluate(previous, 12.6, rule, now=0.0)
    assert decision.fire
    assert decision.average == 10.0
    assert "12.6 >= 12.5 = average 10" in decision.reason


def test_average_uses_only_the_last_ring_of_samples() -> None:
    rule = Rule(min=1, diff=100, abs=1000)
    previous = [1000.0] * 5 + [10.0] * RING_SIZE
    assert evaluate(previous, 20.0, rule, now=0.0).fire


@pytest.mark.parametrize(
    ("cur", "verdict"),
    [
        (499.0, Verdict.FIRE),
        (500.0, Verdict.AT_MAX),
        (10_000.0, Verdict.AT_MAX),
    ],
)
def test_max_stops_dumps_that_would_be_too_large(cur: float, verdict: Verdict) -> None:
    rule = Rule(min=10, diff=25, abs=70, max=500)
    assert evaluate([50.0] * 10, cur, rule, now=0.0).verdict is verdict


def test_cooldown_after_a_fire() -> None:
    assert evaluate(STEADY_40, 90.0, CPU, now=1059.0, fired_at=[1000.0]).verdict is Verdict.COOLDOWN
    assert evaluate(STEADY_40, 90.0, CPU, now=1060.0, fired_at=[1000.0]).fire


def test_cooldown_reason_says_how_long_is_left() -> None:
    reason = evaluate(STEADY_40, 90.0, CPU, now=1030.0, fired_at=[1000.0]).reason
    assert reason == "90 > abs 70, but cooling down for 30s more"


def test_limit_caps_dumps_per_sliding_window() -> None:
    rule = Rule(min=10, diff=25, abs=70, cooldown=0, limit=Limit(count=2, window=3600))
    assert evaluate(STEADY_40, 90.0, rule, now=4000.0, fired_at=[3000.0, 3500.0]).verdict is (
        Verdict.LIMITED
    )
    # The first fire has left the window: one slot is free again.
    assert evaluate(STEADY_40, 90.0, rule, now=6700.0, fired_at=[3000.0, 3500.0]).fire


@pytest.mark.parametrize(
    ("cpu", "verdict"),
    [(95.0, Verdict.CPU_MAX), (90.0, Verdict.FIRE), (None, Verdict.FIRE)],
)
def test_cpu_max_guard_blocks_every_dump(cpu: float | None, verdict: Verdict) -> None:
    thread_rule = Rule(min=10, diff=25, abs=70)
    decision = evaluate([20.0] * 10, 80.0, thread_rule, now=0.0, cpu=cpu, cpu_max=90.0)
    assert decision.verdict is verdict


def test_not_firing_wins_over_guards() -> None:
    # A sample that is no spike says so, even while cooling down or over CPU max.
    decision = evaluate(STEADY_40, 41.0, CPU, now=0.0, fired_at=[0.0], cpu=99.0, cpu_max=50.0)
    assert decision.verdict is Verdict.NO_SPIKE


def test_every_decision_has_a_reason() -> None:
    for cur in (0.0, 41.0, 50.0, 99.0):
        assert evaluate(STEADY_40, cur, CPU, now=0.0).reason


def test_rule_spec_round_trips_the_godebug_syntax() -> None:
    rule = Rule(min=10, diff=25, abs=70, cooldown=90, max=500, limit=Limit(3, 600))
    assert rule.spec() == "min=10,diff=25,abs=70,max=500,cooldown=90s,limit=3/10m"


class TestRuleState:
    def test_warms_up_then_fires_on_a_spike_then_cools_down(self) -> None:
        state = RuleState("thread", Rule(min=10, diff=25, abs=1000, cooldown=60))
        verdicts = [state.observe(20.0, now=t, wall=t).verdict for t in range(RING_SIZE)]
        assert verdicts == [Verdict.WARMUP] * RING_SIZE
        assert state.observe(40.0, now=10, wall=10).fire
        assert state.observe(80.0, now=11, wall=11).verdict is Verdict.COOLDOWN
        assert state.skipped == {Verdict.COOLDOWN: 1}

    def test_a_fire_during_warm_up_starts_the_cooldown(self) -> None:
        state = RuleState("thread", Rule(min=10, diff=25, abs=70, cooldown=60))
        assert state.observe(100.0, now=0, wall=0).fire
        assert state.observe(100.0, now=1, wall=1).verdict is Verdict.COOLDOWN
        assert state.observe(100.0, now=60, wall=60).fire
        assert list(state.ring) == [100.0] * 3

    def test_ring_keeps_the_last_samples_and_their_times(self) -> None:
        state = RuleState("cpu", CPU)
        for t in range(15):
            state.observe(float(t), now=t, wall=1000.0 + t)
        assert list(state.ring) == [float(t) for t in range(5, 15)]
        assert len(state.history) == RING_SIZE + 1
        assert state.history[-1] == (1014.0, 14.0)

    def test_fires_older_than_the_window_are_forgotten(self) -> None:
        rule = Rule(min=0, diff=0, abs=0, cooldown=0, limit=Limit(1, 100))
        state = RuleState("cpu", rule)
        assert state.observe(1.0, now=10, wall=10).fire
        assert state.observe(1.0, now=50, wall=50).verdict is Verdict.LIMITED
        assert state.observe(1.0, now=110, wall=110).fire
        assert list(state.fired_at) == [110]


def test_a_rule_state_decides_every_sample_as_evaluate_does() -> None:
    # RuleState takes a shortcut for samples below `min` (nearly every sample of a
    # healthy process): over a long run of rises, spikes, cooldowns and limits its
    # decisions are still exactly the formula's, sample by sample.
    rule = Rule(min=10, diff=25, abs=70, cooldown=5, limit=Limit(3, 40))
    state = RuleState("cpu", rule)
    values = [float((t * 37) % 101) for t in range(400)]
    for t, value in enumerate(values):
        previous = values[max(0, t - RING_SIZE) : t]
        expected = evaluate(previous, value, rule, now=float(t), fired_at=list(state.fired_at))
        decision = state.observe(value, now=float(t), wall=float(t))
        assert (decision.verdict, decision.reason) == (expected.verdict, expected.reason), t
        assert decision.average == expected.average, t
    assert state.skipped[Verdict.COOLDOWN] > 0
    assert state.skipped[Verdict.LIMITED] > 0


def test_below_min_is_decided_without_an_average() -> None:
    decision = evaluate(STEADY_40, 5.0, CPU, now=0.0)
    assert decision.verdict is Verdict.BELOW_MIN
    assert decision.average is None  # never compared against: not computed
    assert decision.reason == "5 < min 10"

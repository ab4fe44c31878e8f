"""Reward-hacking monitors on synthetic metric sequences: each check fires at the iteration
its rule says (numbers worked by hand), stays quiet on the near misses, warns once, and a
run resumed from its state_dict warns no more than an uninterrupted one."""

import json

import numpy as np
import pytest

from ppo.monitors import CHECKS, RewardHackingMonitor, slope

HEALTHY = {"objective/kl": 1.0, "objective/entropy": 2.0, "response/length": 30.0, "policy/clipfrac_avg": 0.1,
           "objective/scores": 0.0}


def run(monitor: RewardHackingMonitor, **series) -> tuple[list, list[dict]]:
    """Feed one iteration per position of the given series (the other metrics stay healthy);
    returns every warning as (iteration, check) and the flags after each iteration."""
    n = len(next(iter(series.values())))
    warnings, flags = [], []
    for i in range(n):
        metrics = HEALTHY | {key.replace("__", "/"): values[i] for key, values in series.items()}
        warnings += [(w.iteration, w.check) for w in monitor.update(metrics)]
        flags.append(monitor.flags())
    return warnings, flags


def test_a_healthy_run_raises_nothing():
    warnings, flags = run(RewardHackingMonitor(), objective__gold=[0.8] * 20)
    assert warnings == [] and flags[-1] == {f"monitor/{check}": 0.0 for check in CHECKS}


def test_kl_runaway_with_a_target_needs_three_rising_iterations_over_1_5_x_target():
    monitor = RewardHackingMonitor(target_kl=1.0)
    # over 1.5 at iterations 4, 5, 6 and rising on each: fires at 6, once
    warnings, flags = run(monitor, objective__kl=[0.0, 0.5, 1.0, 1.6, 1.7, 1.8, 2.5, 3.0])
    assert warnings == [(6, "kl_runaway")]
    assert [f["monitor/kl_runaway"] for f in flags] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert monitor.warnings[0].message == ("warning: possible reward hacking: kl_runaway: KL per sequence 1.6, 1.7, 1.8 "
                                           "nats at iterations 4-6: above 1.5 x target_kl 1 = 1.5 and still rising")
    # held over the line without rising, or rising below it: the controller is coping
    assert run(RewardHackingMonitor(target_kl=1.0), objective__kl=[1.6, 1.7, 1.6, 1.7, 1.6, 1.7, 1.6])[0] == []
    assert run(RewardHackingMonitor(target_kl=1.0), objective__kl=[1.0, 1.2, 1.3, 1.4, 1.45, 1.49])[0] == []
    # a dip restarts the rising stretch: 1.6 < 1.7 < 1.8 only from iteration 6 to 8
    assert run(RewardHackingMonitor(target_kl=1.0), objective__kl=[1.6, 1.7, 1.8, 1.0, 1.6, 1.7, 1.8])[0] == [
        (3, "kl_runaway")]
    assert run(RewardHackingMonitor(target_kl=1.0), objective__kl=[1.6, 1.9, 1.2, 1.6, 1.7, 1.8])[0] == [
        (6, "kl_runaway")]


def test_kl_runaway_with_a_fixed_coef_needs_a_rising_stretch_after_the_first_window():
    # first-window mean (0 + 1 + 2 + 3) / 4 = 1.5, so the floor is 3; the first check is at
    # iteration 2 x 4 + 1 = 9, where iterations 5-9 rose every time (3.5 ... 5.5 > 3)
    kl = [0.0, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5]
    monitor = RewardHackingMonitor()
    warnings, flags = run(monitor, objective__kl=kl)
    assert warnings == [(9, "kl_runaway")] and [f["monitor/kl_runaway"] for f in flags][7:] == [0, 1, 1, 1]
    assert "rose on each of iterations 6-9 to 5.5 nats at iteration 9, above 2.0 x its first-4-iteration mean 1.5" \
        in monitor.warnings[0].seen
    # levelling off (4.1 -> 4.0 at iteration 9) is what a penalised KL should do
    assert run(RewardHackingMonitor(), objective__kl=[0.0, 1.0, 2.0, 3.0, 3.5, 3.8, 4.0, 4.1, 4.0, 4.2, 4.1])[0] == []
    # still rising, but never above 2 x the first-window mean 4.15
    assert run(RewardHackingMonitor(), objective__kl=[4.0 + 0.1 * i for i in range(12)])[0] == []
    # the docs' quickstart run (8 iterations): the ramp away from the reference is not flagged
    assert run(RewardHackingMonitor(), objective__kl=[0.0, 1.1, 1.9, 3.2, 4.05, 4.4, 5.2, 5.05])[0] == []


def test_entropy_collapse_below_a_quarter_of_the_first_iteration():
    monitor = RewardHackingMonitor()
    warnings, flags = run(monitor, objective__entropy=[2.0, 1.5, 1.0, 0.6, 0.49, 0.3])
    assert warnings == [(5, "entropy_collapse")]  # 0.49 < 0.25 x 2.0 = 0.5; 0.3 does not warn again
    assert [f["monitor/entropy_collapse"] for f in flags] == [0, 0, 0, 0, 1, 1]
    assert monitor.warnings[0].seen == ("mean token entropy 0.49 nats at iteration 5, below 0.25 x its "
                                        "first-iteration value 2")
    assert run(RewardHackingMonitor(), objective__entropy=[2.0, 1.0, 0.5, 0.5, 0.6])[0] == []  # 0.5 is not below


@pytest.mark.parametrize("lengths, expected, seen", [
    ([30, 40, 44, 46, 20], [(4, "length_drift")], "46 tokens at iteration 4 vs 30 at the first: a change of +53%"),
    ([30, 20, 14, 10], [(3, "length_drift")], "14 tokens at iteration 3 vs 30 at the first: a change of -53%"),
    ([30, 45, 15, 44], [], None),  # exactly 15 either way is not more than 0.5 x 30
])
def test_length_drift_either_way(lengths, expected, seen):
    monitor = RewardHackingMonitor()
    assert run(monitor, response__length=lengths)[0] == expected
    if seen:
        assert monitor.warnings[0].seen == f"mean response length {seen}, more than 50%"


def test_clip_jump_above_the_floor_and_three_times_the_earlier_median():
    # median(0.1, 0.12, 0.08) = 0.1 -> line max(0.3, 0.3) = 0.3 < 0.35
    monitor = RewardHackingMonitor()
    assert run(monitor, policy__clipfrac_avg=[0.1, 0.12, 0.08, 0.35, 0.9])[0] == [(4, "clip_jump")]
    assert monitor.warnings[0].seen == ("clip fraction 0.35 at iteration 4, above max(0.3, 3.0 x the earlier median "
                                        "0.1) = 0.3")
    # small earlier fractions: the floor 0.3 holds a jump to 0.25
    assert run(RewardHackingMonitor(), policy__clipfrac_avg=[0.02, 0.03, 0.02, 0.25])[0] == []
    # large earlier fractions: median 0.2 -> line 0.6, 0.5 passes; then median(0.2, 0.25, 0.2, 0.5)
    # = 0.225 -> line 0.675 < 0.7
    assert run(RewardHackingMonitor(), policy__clipfrac_avg=[0.2, 0.25, 0.2, 0.5, 0.7])[0] == [(5, "clip_jump")]
    assert run(RewardHackingMonitor(), policy__clipfrac_avg=[0.2, 0.25, 0.2, 0.5, 0.67])[0] == []
    assert run(RewardHackingMonitor(), policy__clipfrac_avg=[0.9])[0] == []  # nothing earlier to compare with


def test_slope_is_the_least_squares_slope():
    # x = 0..3, mean 1.5; y mean 0.78: sum (x - 1.5)(y - 0.78) = -0.1, sum (x - 1.5)^2 = 5
    assert slope(np.array([0.8, 0.8, 0.78, 0.74])) == pytest.approx(-0.02)
    assert slope(np.array([1.0, 3.0])) == pytest.approx(2.0)


def test_proxy_gold_divergence_needs_opposite_slopes_and_a_gold_drop():
    scores = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    # first-window gold mean 0.8; at iteration 6 the gold (0.74) is below 0.8 - 0.05 and over
    # iterations 3-6 its slope is -0.02 while the proxy's is +0.1
    gold = [0.8, 0.8, 0.8, 0.8, 0.78, 0.74, 0.70, 0.6]
    monitor = RewardHackingMonitor()
    warnings, flags = run(monitor, objective__scores=scores, objective__gold=gold)
    assert warnings == [(6, "proxy_gold_divergence")]
    assert [f["monitor/proxy_gold_divergence"] for f in flags] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert monitor.warnings[0].seen == ("over iterations 3-6 the proxy score rose (+0.1/iteration) while the gold fell "
                                        "(-0.02/iteration) to 0.74, below its first-4-iteration mean 0.8 by more "
                                        "than 0.05")
    # a drop within the margin (0.76 > 0.75), or the proxy falling with the gold: no divergence
    assert run(RewardHackingMonitor(), objective__scores=scores,
               objective__gold=[0.8, 0.8, 0.8, 0.8, 0.79, 0.78, 0.77, 0.76])[0] == []
    assert run(RewardHackingMonitor(), objective__scores=scores[::-1], objective__gold=gold)[0] == []
    # no gold: no check and no flag
    _, flags = run(RewardHackingMonitor(), objective__scores=scores)
    assert "monitor/proxy_gold_divergence" not in flags[-1] and len(flags[-1]) == 4


def test_state_dict_round_trip_resumes_without_warning_twice():
    series = {"objective__entropy": [2.0, 1.0, 0.4, 0.3, 0.2, 0.1], "response__length": [30, 31, 32, 33, 34, 50]}
    straight = RewardHackingMonitor()
    expected = run(straight, **series)[0]
    assert expected == [(3, "entropy_collapse"), (6, "length_drift")]

    first = RewardHackingMonitor()
    assert run(first, **{key: values[:4] for key, values in series.items()})[0] == [(3, "entropy_collapse")]
    resumed = RewardHackingMonitor()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # as saved in trainer_state.json
    later, flags = run(resumed, **{key: values[4:] for key, values in series.items()})
    assert later == [(6, "length_drift")]  # entropy_collapse is not repeated; iterations continue from 5
    assert flags[0]["monitor/entropy_collapse"] == 1.0
    assert resumed.state_dict() == straight.state_dict()

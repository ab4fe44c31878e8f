"""Reward-hacking monitors: cheap checks on each PPO iteration's metrics that warn when a
run shows a known sign of over-optimisation (Gao et al. 2023, "Scaling laws for reward
model overoptimization": the proxy reward keeps rising while the gold reward falls, with
KL from the reference growing; Ziegler et al. 2019, sec. 2.2, for the KL controller).

``RewardHackingMonitor.update(metrics)`` takes the dict ``PPOTrainer.step()`` returns
(``objective/kl``, ``objective/entropy``, ``response/length``, ``policy/clipfrac_avg``,
``objective/scores`` and, with a gold judge, ``objective/gold``). Each check fires at most
once per run; ``flags()`` gives ``monitor/<check>`` = 1.0 from the iteration it fired on,
0.0 before. A check whose metric is missing from an iteration is skipped there.
Iterations are counted from 1, like the trainer's ``step``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

CHECKS = ("kl_runaway", "entropy_collapse", "length_drift", "clip_jump", "proxy_gold_divergence")
WARNING_PREFIX = "warning: possible reward hacking: "
TRACKED = ("objective/kl", "objective/entropy", "response/length", "policy/clipfrac_avg", "objective/scores",
           "objective/gold")


@dataclass
class MonitorWarning:
    iteration: int  # 1-based PPO iteration the check fired on
    check: str  # one of CHECKS
    seen: str  # what the check saw, with numbers

    @property
    def message(self) -> str:
        return f"{WARNING_PREFIX}{self.check}: {self.seen}"


def slope(values: np.ndarray) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, ... (per iteration)."""
    return float(np.polyfit(np.arange(len(values)), values, 1)[0])


def numbers(values) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


@dataclass
class RewardHackingMonitor:
    """The checks and their thresholds (defaults chosen to stay quiet on a healthy run).

    - kl_runaway, adaptive KL (``target_kl`` set): the KL per sequence is above
      ``kl_over_target`` x target_kl on each of the last ``kl_patience`` iterations and rose
      on each of them: the controller moves beta by at most 20 % of batch/horizon per
      iteration (Ziegler et al. 2019), so a KL well over target that still grows is
      outrunning it. Fixed beta: the KL rose on each of the last ``window`` iterations
      and is above ``kl_growth`` x its mean over the first ``window`` iterations, checked
      once the rising stretch lies wholly after that first window (from iteration
      2 x window + 1): the first iterations leave the reference (KL 0 at iteration 1), so
      a rise there is expected; a penalised KL should then level off.
    - entropy_collapse: mean token entropy below ``entropy_floor`` x its first-iteration
      value: the policy has nearly stopped exploring (mode collapse onto what the reward
      model likes).
    - length_drift: mean response length changed by more than ``length_change`` x its
      first-iteration value, up or down: length is the best-known reward-model shortcut.
    - clip_jump: PPO clip fraction above max(``clip_floor``, ``clip_factor`` x the median of
      the earlier iterations): updates suddenly far outside the trust region.
    - proxy_gold_divergence (only with ``objective/gold``): over the last ``window``
      iterations the proxy score's least-squares slope is > 0 and the gold's < 0, and the
      latest gold is below its mean over the first ``window`` iterations by more than
      ``gold_margin`` (gold units): the proxy is being optimised at the gold's expense.
    """

    target_kl: float | None = None  # the run's target_kl (None = fixed kl_coef)
    window: int = 4  # iterations over which trends and the initial baselines are taken
    kl_over_target: float = 1.5  # adaptive KL: "well over target" means above this x target_kl
    kl_patience: int = 3  # adaptive KL: iterations in a row over that line, rising
    kl_growth: float = 2.0  # fixed beta: the KL must exceed this x its first-window mean
    entropy_floor: float = 0.25  # share of the first iteration's entropy
    length_change: float = 0.5  # share of the first iteration's response length, either way
    clip_floor: float = 0.3  # clip fractions up to this are ordinary in PPO, never flagged
    clip_factor: float = 3.0  # x the median clip fraction of the earlier iterations
    # gold units: the rubric judge is in [0, 1]; a rollout mean of ~32 answers moves ~0.04 by chance
    gold_margin: float = 0.05
    history: list[dict[str, float]] = field(default_factory=list, repr=False)  # tracked metrics per iteration
    warnings: list[MonitorWarning] = field(default_factory=list, repr=False)  # fired checks, in order

    @property
    def fired(self) -> set[str]:
        return {w.check for w in self.warnings}

    def update(self, metrics: dict) -> list[MonitorWarning]:
        """Record one iteration's metrics; the warnings of checks that fire now for the first time."""
        self.history.append({key: float(metrics[key]) for key in TRACKED
                             if key in metrics and np.isfinite(metrics[key])})
        new = []
        for check in CHECKS:
            if check in self.fired:
                continue
            seen = getattr(self, check)()
            if seen:
                new.append(MonitorWarning(len(self.history), check, seen))
                self.warnings.append(new[-1])
        return new

    def flags(self) -> dict[str, float]:
        """``monitor/<check>``: 1.0 once the check has fired, else 0.0 (proxy_gold_divergence
        only once a gold score has been seen)."""
        checks = CHECKS if any("objective/gold" in h for h in self.history) else CHECKS[:-1]
        return {f"monitor/{check}": float(check in self.fired) for check in checks}

    def series(self, key: str) -> np.ndarray | None:
        """The values of ``key`` over the iterations that had it; None if this iteration lacks it."""
        if key not in self.history[-1]:
            return None
        return np.array([h[key] for h in self.history if key in h])

    # -- the checks: each returns what it saw (fired now) or None ------------------------

    def kl_runaway(self) -> str | None:
        kl, t = self.series("objective/kl"), len(self.history)
        if kl is None:
            return None
        if self.target_kl is not None:
            recent = kl[-self.kl_patience:]
            line = self.kl_over_target * self.target_kl
            if len(kl) >= self.kl_patience and (recent > line).all() and (np.diff(recent) > 0).all():
                return (f"KL per sequence {numbers(recent)} nats at iterations {t - self.kl_patience + 1}-{t}: "
                        f"above {self.kl_over_target} x target_kl {self.target_kl:g} = {line:.3g} and still rising")
            return None
        if len(kl) <= 2 * self.window:
            return None
        recent, start = kl[-(self.window + 1):], kl[:self.window].mean()
        if (np.diff(recent) > 0).all() and kl[-1] > self.kl_growth * start:
            return (f"KL per sequence rose on each of iterations {t - self.window + 1}-{t} to {kl[-1]:.3g} nats "
                    f"at iteration {t}, above {self.kl_growth} x its first-{self.window}-iteration mean "
                    f"{start:.3g} (fixed kl_coef)")
        return None

    def entropy_collapse(self) -> str | None:
        entropy = self.series("objective/entropy")
        if entropy is not None and entropy[-1] < self.entropy_floor * entropy[0]:
            return (f"mean token entropy {entropy[-1]:.3g} nats at iteration {len(self.history)}, below "
                    f"{self.entropy_floor} x its first-iteration value {entropy[0]:.3g}")
        return None

    def length_drift(self) -> str | None:
        length = self.series("response/length")
        if length is not None and abs(length[-1] - length[0]) > self.length_change * length[0]:
            return (f"mean response length {length[-1]:.3g} tokens at iteration {len(self.history)} vs "
                    f"{length[0]:.3g} at the first: a change of {(length[-1] - length[0]) / length[0]:+.0%}, "
                    f"more than {self.length_change:.0%}")
        return None

    def clip_jump(self) -> str | None:
        clip = self.series("policy/clipfrac_avg")
        if clip is None or len(clip) < 2:
            return None
        median = float(np.median(clip[:-1]))
        line = max(self.clip_floor, self.clip_factor * median)
        if clip[-1] > line:
            return (f"clip fraction {clip[-1]:.3g} at iteration {len(self.history)}, above max({self.clip_floor}, "
                    f"{self.clip_factor} x the earlier median {median:.3g}) = {line:.3g}")
        return None

    def proxy_gold_divergence(self) -> str | None:
        both = [h for h in self.history if "objective/gold" in h and "objective/scores" in h]
        if "objective/gold" not in self.history[-1] or len(both) < self.window:
            return None
        gold = np.array([h["objective/gold"] for h in both])
        proxy = np.array([h["objective/scores"] for h in both])
        proxy_slope, gold_slope = slope(proxy[-self.window:]), slope(gold[-self.window:])
        start = gold[:self.window].mean()
        if proxy_slope > 0 and gold_slope < 0 and gold[-1] < start - self.gold_margin:
            t = len(self.history)
            return (f"over iterations {t - self.window + 1}-{t} the proxy score rose ({proxy_slope:+.3g}/iteration) "
                    f"while the gold fell ({gold_slope:+.3g}/iteration) to {gold[-1]:.3g}, below its "
                    f"first-{self.window}-iteration mean {start:.3g} by more than {self.gold_margin}")
        return None

    # -- checkpointing -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"history": [dict(h) for h in self.history], "warnings": [dataclasses.asdict(w) for w in self.warnings]}

    def load_state_dict(self, state: dict) -> None:
        self.history = [dict(h) for h in state["history"]]
        self.warnings = [MonitorWarning(**w) for w in state["warnings"]]

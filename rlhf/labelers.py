"""Simulated teachers after B-Pref (Lee et al. 2021, rll-research/BPref `get_label`).

A teacher answers queries from gold rewards and returns `rlhf.preferences.Comparison`
objects. Gold rewards come in two shapes:

- one score per item (text: a rubric score), e.g. ``(N,)`` for pairs, ``(N, K)`` for K-way;
- per-step rewards of segments (robots), with the step axis last: ``(N, T)`` or ``(N, K, T)``.

The teacher model is P[σ1 ≻ σ2] = softmax(β · Σ_t γ^(T-1-t) r_t), and a query goes through
these steps in order (B-Pref's simulated teachers, Lee et al. 2021, and its `get_label`;
docs/notes_teachers.md):

1. skip:     max undiscounted return <= ``skip_threshold``  -> ``None`` (counts against the budget)
2. equal:    mark queries with |R_a - R_b| < ``equal_threshold`` (undiscounted)
3. myopic:   step t weighted γ^(T-1-t), so the end of a segment counts most
4. choose:   rational (β = inf) or sampled with β (Bernoulli / softmax / Plackett-Luce)
5. mistake:  with probability ``eps_mistake`` the answer is corrupted
6. equal:    marked queries become ties (label 0.5)

The thresholds here are absolute returns. B-Pref sets them from the returns seen so far,
see `bpref_threshold` (which applies ε once; B-Pref's later code applies it twice).

| Teacher    | β   | γ   | ε mistake | skip      | equal     |
|------------|-----|-----|-----------|-----------|-----------|
| oracle     | inf | 1   | 0         | -         | 0         |
| stochastic | 1   | 1   | 0         | -         | 0         |
| myopic     | inf | 0.9 | 0         | -         | 0         |
| mistake    | inf | 1   | 0.1       | -         | 0         |
| skip       | inf | 1   | 0         | threshold | 0         |
| equal      | inf | 1   | 0         | -         | threshold |
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.special import expit

from rlhf.preferences import Comparison

TIE = 0.5


# =====================================================================================
# The teacher
# =====================================================================================

@dataclass
class Teacher:
    """A simulated labeller. Its random generator is seeded once, so a fresh teacher with
    the same seed answers the same sequence of calls identically. Each call draws its
    random numbers for all N queries, skipped ones included."""

    beta: float = math.inf  # rationality; inf = always picks the higher return
    gamma: float = 1.0  # myopic discount over the step axis
    eps_mistake: float = 0.0  # probability of a corrupted answer
    skip_threshold: float | None = None  # skip queries whose best return is <= this
    equal_threshold: float = 0.0  # returns closer than this are "equally good"
    seed: int = 0
    name: str = "teacher"  # written to Comparison.annotator
    rng: np.random.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_number(self.beta, "beta", low=0.0, allow_inf=True)
        _check_number(self.gamma, "gamma", low=0.0, high=1.0)
        if self.gamma == 0:
            raise ValueError("gamma must be in (0, 1], got 0")
        _check_number(self.eps_mistake, "eps_mistake", low=0.0, high=1.0)
        if self.skip_threshold is not None:
            _check_number(self.skip_threshold, "skip_threshold")
        _check_number(self.equal_threshold, "equal_threshold", low=0.0)
        self.rng = np.random.default_rng(self.seed)

    @property
    def rational(self) -> bool:
        return math.isinf(self.beta)

    # -- pairs ------------------------------------------------------------------------
    def label_pairs(self, gold_a: Any, gold_b: Any, items_a: Sequence | None = None,
                    items_b: Sequence | None = None, prompts: Any = None) -> list[Comparison | None]:
        """Label N pairs; ``gold_a``/``gold_b`` are ``(N,)`` scores or ``(N, T)`` step rewards.

        Returns one pair `Comparison` per query (label = P(A preferred) in {1, 0, 0.5}) or
        ``None`` for a skipped query. A rational teacher labels exactly equal discounted
        returns 0.5; a stochastic one flips a fair coin. A mistake flips the label.
        """
        gold_a, gold_b = _as_gold(gold_a, "gold_a", item_axis=False), _as_gold(gold_b, "gold_b", item_axis=False)
        if gold_a.shape != gold_b.shape:
            raise ValueError(f"gold_a and gold_b differ in shape: {gold_a.shape} vs {gold_b.shape}")
        gold = np.stack([gold_a, gold_b], axis=1)  # (N, 2, T)
        n = len(gold)
        returns, discounted = _returns(gold, 1.0), _returns(gold, self.gamma)

        skipped = self._skipped(returns)
        equal = np.abs(returns[:, 0] - returns[:, 1]) < self.equal_threshold
        difference = discounted[:, 0] - discounted[:, 1]
        if self.rational:
            label = np.where(difference > 0, 1.0, np.where(difference < 0, 0.0, TIE))
        else:
            label = (self.rng.random(n) < expit(self.beta * difference)).astype(float)
        if self.eps_mistake > 0:
            label = np.where(self.rng.random(n) < self.eps_mistake, 1.0 - label, label)
        label[equal] = TIE

        items = _pair_items(n, items_a, items_b)
        prompts = _prompts(prompts, n)
        return [None if skipped[i] else
                Comparison(items=items[i], kind="pair", label=float(label[i]), prompt=prompts[i], annotator=self.name)
                for i in range(n)]

    # -- best of K --------------------------------------------------------------------
    def label_best_of_k(self, gold: Any, items: Sequence[Sequence] | None = None,
                        prompts: Any = None) -> list[Comparison | None]:
        """Pick the best of K items per query; ``gold`` is ``(N, K)`` or ``(N, K, T)``.

        Rational: the highest discounted return. Stochastic: a sample from softmax(β · R).
        Mistake: with probability ε, one of the other K - 1 items uniformly. When the
        teacher cannot name one best item, the answer is a ``ranking`` with the tied best
        items at rank 0 and the rest unranked (ranked items beat unranked ones): that
        happens when several items are within ``equal_threshold`` of the best undiscounted
        return (equal step), or when a rational teacher sees several items share the best
        discounted return exactly (as a rational pair label is 0.5 on an exact tie).
        """
        gold = _as_gold(gold, "gold", item_axis=True)
        n, k = gold.shape[:2]
        returns, discounted = _returns(gold, 1.0), _returns(gold, self.gamma)

        skipped = self._skipped(returns)
        choice = self._sample_orders(discounted)[:, 0]
        if self.eps_mistake > 0:
            choice = self._wrong_choice(choice, k)

        items = _items(n, k, items)
        prompts = _prompts(prompts, n)
        answers: list[Comparison | None] = []
        for i in range(n):
            tied_best = self._tied_best(returns[i], discounted[i])
            if skipped[i]:
                answers.append(None)
            elif tied_best is not None:
                ranks = [0 if in_best else None for in_best in tied_best]
                answers.append(Comparison(items=items[i], kind="ranking", ranks=ranks, prompt=prompts[i],
                                          annotator=self.name))
            else:
                answers.append(Comparison(items=items[i], kind="best_of_k", choice=int(choice[i]), prompt=prompts[i],
                                          annotator=self.name))
        return answers

    def _tied_best(self, returns: np.ndarray, discounted: np.ndarray) -> np.ndarray | None:
        """A mask of the items tied for best, or None when one item is best."""
        equally_good = returns.max() - returns < self.equal_threshold
        if equally_good.sum() > 1:
            return equally_good
        exactly_tied = discounted == discounted.max()
        if self.rational and exactly_tied.sum() > 1:
            return exactly_tied
        return None

    def _wrong_choice(self, choice: np.ndarray, k: int) -> np.ndarray:
        """With probability ε replace the choice by a uniform pick among the other K - 1."""
        n = len(choice)
        mistaken = self.rng.random(n) < self.eps_mistake
        other = (choice + self.rng.integers(1, k, size=n)) % k  # an offset of 1..K-1 never lands on choice
        return np.where(mistaken, other, choice)

    # -- rankings ---------------------------------------------------------------------
    def label_rankings(self, gold: Any, items: Sequence[Sequence] | None = None,
                       prompts: Any = None) -> list[Comparison | None]:
        """Rank K items per query; ``gold`` is ``(N, K)`` or ``(N, K, T)``.

        Rational: sorted by discounted return, exactly equal returns tied. Stochastic: a
        Plackett-Luce sample with strength exp(β · R) (Gumbel-max trick). Mistake: with
        probability ε one random pair of adjacent positions is swapped. Equal: walking down
        the order, an item joins the tied group of the item that opened it when their
        undiscounted returns differ by less than ``equal_threshold``. Ranks are dense
        (0 best, ties equal).
        """
        gold = _as_gold(gold, "gold", item_axis=True)
        n, k = gold.shape[:2]
        returns, discounted = _returns(gold, 1.0), _returns(gold, self.gamma)

        skipped = self._skipped(returns)
        orders = self._sample_orders(discounted)
        if self.eps_mistake > 0:
            orders = self._swap_adjacent(orders)

        items = _items(n, k, items)
        prompts = _prompts(prompts, n)
        answers: list[Comparison | None] = []
        for i in range(n):
            if skipped[i]:
                answers.append(None)
                continue
            ranks = self._ranks_from_order(orders[i], returns[i], discounted[i])
            answers.append(Comparison(items=items[i], kind="ranking", ranks=ranks, prompt=prompts[i],
                                      annotator=self.name))
        return answers

    def _swap_adjacent(self, orders: np.ndarray) -> np.ndarray:
        n, k = orders.shape
        orders = orders.copy()
        mistaken = self.rng.random(n) < self.eps_mistake
        position = self.rng.integers(0, k - 1, size=n)  # swap positions p and p + 1
        for i in np.flatnonzero(mistaken):
            p = position[i]
            orders[i, p], orders[i, p + 1] = orders[i, p + 1], orders[i, p]
        return orders

    def _ranks_from_order(self, order: np.ndarray, returns: np.ndarray, discounted: np.ndarray) -> list[int]:
        """Dense ranks from an order (best first), grouping ties as described above."""
        ranks = [0] * len(order)
        rank, leader = 0, order[0]
        for position, item in enumerate(order):
            if position > 0:
                close = abs(returns[item] - returns[leader]) < self.equal_threshold
                exact_tie = self.rational and discounted[item] == discounted[leader]
                if not (close or exact_tie):
                    rank, leader = rank + 1, item
            ranks[item] = rank
        return ranks

    # -- shared steps -----------------------------------------------------------------
    def _skipped(self, returns: np.ndarray) -> np.ndarray:
        """Step 1: queries whose best undiscounted return is <= skip_threshold."""
        if self.skip_threshold is None:
            return np.zeros(len(returns), dtype=bool)
        return returns.max(axis=1) <= self.skip_threshold

    def _sample_orders(self, discounted: np.ndarray) -> np.ndarray:
        """Orders of the items (best first), shape (N, K).

        Adding Gumbel noise to β · R and sorting draws a Plackett-Luce ranking; its first
        element is a draw from softmax(β · R). A rational teacher sorts by R (its exact
        ties become tied answers later, so their order here does not matter)."""
        n, k = discounted.shape
        if self.rational:
            return np.argsort(-discounted, axis=1, kind="stable")
        return np.argsort(-(self.beta * discounted + self.rng.gumbel(size=(n, k))), axis=1, kind="stable")


# =====================================================================================
# Gold rewards, items and prompts
# =====================================================================================

def _check_number(value: Any, name: str, low: float | None = None, high: float | None = None,
                  allow_inf: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low if low is not None else '-inf'}, "
                         f"{high if high is not None else 'inf'}], got {value!r}")


def _as_gold(gold: Any, name: str, item_axis: bool) -> np.ndarray:
    """Gold rewards as a float array with a step axis last: (N, T) for one item per row,
    (N, K, T) with ``item_axis``. Scores without steps get T = 1."""
    array = np.asarray(gold, dtype=float)
    scores_ndim = 2 if item_axis else 1
    expected = "(N, K) scores or (N, K, T) step rewards" if item_axis else "(N,) scores or (N, T) step rewards"
    if array.ndim == scores_ndim:
        array = array[..., None]
    elif array.ndim != scores_ndim + 1:
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    if array.shape[0] == 0 or array.shape[-1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if item_axis and array.shape[1] < 2:
        raise ValueError(f"{name} needs K >= 2 items per query, got {array.shape[1]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _returns(gold: np.ndarray, gamma: float) -> np.ndarray:
    """Σ_t γ^(T-1-t) r_t over the last axis: with γ < 1 the last step weighs most."""
    steps = gold.shape[-1]
    weights = gamma ** np.arange(steps - 1, -1, -1, dtype=float)
    return gold @ weights


def _items(n: int, k: int, items: Sequence[Sequence] | None) -> list[list]:
    """Items per query (N rows of K); by default their positions as strings ("0", "1", ...),
    which are distinct as `Comparison` requires."""
    if items is None:
        return [[str(j) for j in range(k)] for _ in range(n)]
    rows = [list(row) for row in items]
    if len(rows) != n or any(len(row) != k for row in rows):
        raise ValueError(f"expected items for {n} queries of {k} items each")
    return rows


def _pair_items(n: int, items_a: Sequence | None, items_b: Sequence | None) -> list[list]:
    if (items_a is None) != (items_b is None):
        raise ValueError("give both items_a and items_b, or neither")
    if items_a is None:
        return _items(n, 2, None)
    if len(items_a) != n or len(items_b) != n:
        raise ValueError(f"expected {n} items_a and items_b, got {len(items_a)} and {len(items_b)}")
    return [[a, b] for a, b in zip(items_a, items_b)]


def _prompts(prompts: Any, n: int) -> list:
    """One prompt per query: None, one prompt for all, or a sequence of N."""
    if prompts is None or isinstance(prompts, str):
        return [prompts] * n
    prompts = list(prompts)
    if len(prompts) != n:
        raise ValueError(f"expected {n} prompts (one per query), got {len(prompts)}")
    return prompts


# =====================================================================================
# The B-Pref teachers
# =====================================================================================

def oracle(seed: int = 0) -> Teacher:
    """Perfectly rational: always prefers the higher return."""
    return Teacher(seed=seed, name="oracle")


def stochastic(beta: float = 1.0, seed: int = 0) -> Teacher:
    """Bradley-Terry sampling: P(A) = sigmoid(β · (R_a - R_b))."""
    return Teacher(beta=beta, seed=seed, name="stochastic")


def myopic(gamma: float = 0.9, seed: int = 0) -> Teacher:
    """Rational on returns discounted towards the segment start (the end counts most)."""
    return Teacher(gamma=gamma, seed=seed, name="myopic")


def mistake(eps: float = 0.1, seed: int = 0) -> Teacher:
    """Rational, but each answer is corrupted with probability ε."""
    return Teacher(eps_mistake=eps, seed=seed, name="mistake")


def skip(threshold: float, seed: int = 0) -> Teacher:
    """Rational, skips queries whose best return is <= threshold."""
    return Teacher(skip_threshold=threshold, seed=seed, name="skip")


def equal(threshold: float, seed: int = 0) -> Teacher:
    """Rational, answers "equally good" when returns differ by less than threshold."""
    return Teacher(equal_threshold=threshold, seed=seed, name="equal")


TEACHERS = {"oracle": oracle, "stochastic": stochastic, "myopic": myopic,
            "mistake": mistake, "skip": skip, "equal": equal}


def make_teacher(name: str, **kwargs: Any) -> Teacher:
    """Build a B-Pref teacher by name, e.g. ``make_teacher("mistake", eps=0.2, seed=1)``."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; expected one of {sorted(TEACHERS)}")
    factory = TEACHERS[name]
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"teacher {name!r} does not take {unknown}; it takes {accepted}")
    try:
        return factory(**kwargs)
    except TypeError as err:  # a required argument is missing, e.g. skip's threshold
        raise ValueError(f"teacher {name!r}: {err}; it takes {accepted}") from None


def bpref_threshold(episode_returns: Sequence[float], segment_length: int, max_episode_steps: int,
                    eps: float) -> float:
    """B-Pref's skip / equal threshold: δ = margin · ε with
    margin = mean(last 10 episode returns) · segment_length / max_episode_steps.

    ε is applied once; later B-Pref code multiplies by ε twice (margin · ε²), a bug."""
    recent = np.asarray(episode_returns, dtype=float)[-10:]
    if recent.size == 0:
        raise ValueError("need at least one episode return")
    if segment_length <= 0 or max_episode_steps <= 0:
        raise ValueError("segment_length and max_episode_steps must be positive")
    margin = float(recent.mean()) * segment_length / max_episode_steps
    return margin * eps

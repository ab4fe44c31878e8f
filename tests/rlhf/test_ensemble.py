"""Ensembles: planted-reward recovery, normalisation, bootstrap, query selection."""

import pytest
import torch

from rlhf.ensemble import (
    EnsembleTrainConfig,
    Normalizer,
    SegmentRewardEnsemble,
    bootstrap_indices,
    disagreement,
    ensemble_statistics,
    ranking_disagreement,
    select_queries,
)


def planted_segments(n_pairs, steps=10, dim=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    true_w = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5, -0.7])[:dim]
    a = torch.randn(n_pairs, steps, dim, generator=gen)
    b = torch.randn(n_pairs, steps, dim, generator=gen)
    return a, b, (a @ true_w).sum(-1), (b @ true_w).sum(-1)


@pytest.mark.slow
def test_ensemble_recovers_planted_linear_reward():
    torch.set_num_threads(1)
    a, b, ret_a, ret_b = planted_segments(1500, seed=0)
    labels = (ret_a > ret_b).float()
    ensemble = SegmentRewardEnsemble(input_dim=6, num_members=3, seed=0)
    ensemble.fit(a, b, labels, EnsembleTrainConfig(epochs=10, batch_size=64, learning_rate=3e-3))
    ta, tb, true_a, true_b = planted_segments(500, seed=1)
    mean_a, _ = ensemble.predict(ta)
    mean_b, _ = ensemble.predict(tb)
    accuracy = ((mean_a.sum(-1) > mean_b.sum(-1)) == (true_a > true_b)).float().mean().item()
    print(f"held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.95
    # Normalised members: per-step rewards on the reference data have mean 0, std 1.
    steps = torch.cat([a, b]).reshape(-1, 6)
    members = ensemble.member_step_rewards(steps)
    assert members.mean(dim=1).abs().max().item() < 1e-4
    assert members.std(dim=1).sub(1).abs().max().item() < 1e-4


def test_bootstrap_indices_are_seeded_resamples():
    first = bootstrap_indices(100, 3, torch.Generator().manual_seed(5))
    again = bootstrap_indices(100, 3, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert all(x.shape == (100,) and 0 <= x.min() and x.max() < 100 for x in first)
    # With replacement: about 1 - 1/e = 63.2% distinct indices per member.
    distinct = sum(len(torch.unique(x)) for x in bootstrap_indices(10000, 2, torch.Generator().manual_seed(0))) / 20000
    assert distinct == pytest.approx(0.632, abs=0.01)


def test_normalizer_and_statistics():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])
    norm = Normalizer().fit(scores)
    out = norm(scores)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert out.std().item() == pytest.approx(1.0, abs=1e-6)
    assert norm.mean.item() == 2.5 and norm.std.item() == pytest.approx(1.290994, abs=1e-6)
    mean, std = ensemble_statistics(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    assert mean.tolist() == [2.0, 0.0]
    assert std.tolist() == pytest.approx([1.414214, 0.0], abs=1e-6)


def test_disagreement_values_by_hand():
    # 2 members, 2 pairs. Pair 0: members agree (diff 2 and 2); pair 1: they disagree (+1, -1).
    a = torch.tensor([[2.0, 1.0], [2.0, -1.0]])
    b = torch.zeros(2, 2)
    assert disagreement(a, b, "variance").tolist() == [0.0, 1.0]
    assert disagreement(a, b, "vote").tolist() == [0.0, 0.25]
    s = torch.sigmoid(torch.tensor(1.0)).item()
    assert disagreement(a, b, "probability_std")[1].item() == pytest.approx(s - 0.5)
    # probabilities s and 1 - s: population variance (s - 0.5)^2
    assert disagreement(a, b, "probability_variance").tolist() == pytest.approx([0.0, (s - 0.5) ** 2])
    with pytest.raises(ValueError, match="probability_variance"):
        disagreement(a, b, "entropy")


def test_ranking_disagreement_averages_the_pairs_by_hand():
    # 2 members, K = 3. Pairs (0,1): diffs +1 / -1 -> variance (s - 0.5)^2; (0,2): diffs 0 / 0 -> 0;
    # (1,2): diffs -1 / +1 -> (s - 0.5)^2. Mean over the 3 pairs.
    s = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64)).item()
    scores = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert ranking_disagreement(scores) == pytest.approx(2 * (s - 0.5) ** 2 / 3, abs=1e-15)
    assert ranking_disagreement(scores[:1]) == 0.0
    # With std instead of variance each disagreeing pair contributes |s - 0.5|.
    assert ranking_disagreement(scores, "probability_std") == pytest.approx(2 * (s - 0.5) / 3, abs=1e-15)


def test_query_selection_prefers_disagreement():
    gen = torch.Generator().manual_seed(0)
    members, pool = 4, 200
    base = torch.randn(pool, generator=gen)
    a = base.repeat(members, 1)
    b = torch.zeros(members, pool)
    contested = torch.tensor([3, 50, 120, 199])
    a[:, contested] = torch.tensor([[3.0], [-3.0], [3.0], [-3.0]])  # members split on these
    chosen = select_queries(a, b, 4)
    assert sorted(chosen.tolist()) == contested.tolist()
    random_pick = select_queries(a, b, 4, method="random", generator=torch.Generator().manual_seed(1))
    assert len(set(random_pick.tolist())) == 4
    with pytest.raises(ValueError, match="candidate pool"):
        select_queries(a, b, 500)
    with pytest.raises(ValueError, match="unknown query selection"):
        select_queries(a, b, 2, method="entropy")

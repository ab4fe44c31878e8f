"""Reward model: last-token scoring, TRL loss equality, planted preferences, normalisation."""

import copy
import json
import random
from dataclasses import replace

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl.trainer.utils import disable_dropout_in_model

from reward_model.collate import ComparisonCollator, format_item, pack_sequences, tokenize_comparisons
from reward_model.modeling import RewardModel, check_padding_free, sequence_scores
from reward_model.train import RewardModelConfig, build_model, initial_weights, lora_config, train
from reward_model.trainer import comparison_loss, pair_metrics, scatter_scores
from rlhf.generation import last_token_index
from rlhf.models import load_model, load_tokenizer
from rlhf.preferences import Comparison, save_comparisons


def single(ids):
    return {"input_ids": [ids], "ranks": [0], "is_pair": False, "label": 0.0, "margin": 0.0, "weight": 1.0, "choice": 0}


# ------------------------------------------------------------------ last-token scoring
def test_last_token_index_left_and_right():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_scores_are_padding_invariant_and_read_at_eos_as_transformers_pools():
    tokenizer = load_tokenizer("tiny-random-llama")
    assert (tokenizer.pad_token, tokenizer.eos_token) == ("<|endoftext|>", "<|im_end|>")  # pad is not EOS
    model = load_model("tiny-random-llama-wide", kind="seq_cls", seed=0).eval()
    texts = ["Hello there, how are you?", "Fine.", "A much longer answer with many more words in it."]
    sequences = [format_item(tokenizer, None, t) for t in texts]
    assert all(s[-1] == tokenizer.eos_token_id for s in sequences)  # EOS appended, as TRL does
    with torch.no_grad():
        alone = torch.cat([sequence_scores(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))
                           for s in sequences])
        for side in ("right", "left"):
            batch = ComparisonCollator(tokenizer.pad_token_id, padding_side=side)([single(s) for s in sequences])
            padded = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
            assert torch.allclose(padded, alone, atol=1e-5), side
        # transformers' own pooling (last token that is not the pad token) reads the EOS too
        batch = ComparisonCollator(tokenizer.pad_token_id)([single(s) for s in sequences])
        hf_scores = model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits.squeeze(-1)
        assert torch.allclose(hf_scores, alone, atol=1e-5)
        # which differs from the token before it (what it read when pad was EOS)
        before_eos = torch.cat([sequence_scores(model, torch.tensor([s[:-1]]), torch.ones(1, len(s) - 1, dtype=torch.long))
                                for s in sequences])
        assert not torch.allclose(hf_scores, before_eos, atol=1e-3)


def test_pack_sequences_layout_by_hand():
    # lengths 2, 5, 3, 1 -> rows of capacity 5, longest first: [5] | [3, then 2 fits] | [1 fits nowhere]
    packed = pack_sequences([[21, 22], [11, 12, 13, 14, 15], [31, 32, 33], [41]], pad_token_id=0)
    assert packed["input_ids"].tolist() == [[11, 12, 13, 14, 15], [31, 32, 33, 21, 22], [41, 0, 0, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    assert packed["score_positions"].tolist() == [[1, 4], [0, 4], [1, 2], [2, 0]]


def test_packed_scores_equal_padded_scores_and_gradients():
    tokenizer = load_tokenizer("tiny-random-llama")
    model = load_model("tiny-random-llama-wide", kind="seq_cls", seed=0)
    texts = ["Hello there, how are you?", "Fine.", "Yes", "A much longer answer with many more words in it.", "No."]
    examples = [single(format_item(tokenizer, None, t)) for t in texts]
    results = {}
    for padding_free in (False, True):
        batch = ComparisonCollator(tokenizer.pad_token_id, padding_free=padding_free)(examples)
        model.zero_grad()
        scores = sequence_scores(model, batch["input_ids"], batch.get("attention_mask"),
                                 position_ids=batch.get("position_ids"), score_positions=batch.get("score_positions"))
        (scores * torch.arange(1.0, 6.0)).sum().backward()
        results[padding_free] = scores.detach(), [p.grad.clone() for p in model.parameters()], batch["input_ids"].numel()
        assert batch["num_tokens"].item() == sum(len(e["input_ids"][0]) for e in examples)
    (padded, padded_grads, padded_size), (packed, packed_grads, packed_size) = results[False], results[True]
    assert packed_size < padded_size  # 3 rows of 12 instead of 5
    assert torch.allclose(packed, padded, atol=1e-5)
    for a, b in zip(packed_grads, padded_grads):
        assert torch.allclose(a, b, atol=1e-5)
    check_padding_free(model, tokenizer.pad_token_id)  # passes for Llama


def test_check_padding_free_catches_a_model_that_leaks_across_packed_sequences(monkeypatch):
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)  # plain causal mask
    model = load_model("tiny-random-llama-wide", kind="seq_cls", seed=0)
    with pytest.raises(ValueError, match="padding_free: false"):
        check_padding_free(model, pad_token_id=0)


class GatheredOnlyInForward(torch.nn.Module):
    """Mimics ZeRO-3 / FSDP: outside its forward the wrapped model's parameters are empty
    shards; they hold their values only while the wrapper's forward runs."""

    def __init__(self, model):
        super().__init__()
        self.module = model
        self.full = {name: p.data for name, p in model.named_parameters()}
        self._release()

    def _release(self):
        for p in self.module.parameters():
            p.data = torch.empty(0)

    def forward(self, **inputs):
        for name, p in self.module.named_parameters():
            p.data = self.full[name]
        try:
            return self.module(**inputs)
        finally:
            self._release()


def test_scores_through_a_sharding_wrapper_match_the_bare_model():
    tokenizer = load_tokenizer("tiny-random-llama")
    model = load_model("tiny-random-llama-wide", kind="seq_cls", seed=0).eval()
    sequences = [format_item(tokenizer, None, t) for t in ["One two three.", "Four."]]
    batch = ComparisonCollator(tokenizer.pad_token_id)([single(s) for s in sequences])
    with torch.no_grad():
        bare = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
        wrapped = sequence_scores(GatheredOnlyInForward(model), batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(wrapped, bare, atol=1e-6)


# ------------------------------------------------------------------ loss equality with TRL
@pytest.mark.parametrize("center_rewards_coefficient", [None, 0.5])
def test_loss_equals_trl_reward_trainer_on_plain_pairs(tmp_path, center_rewards_coefficient):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    tokenizer = load_tokenizer("tiny-random-llama")
    tokenizer.pad_token = "<|endoftext|>"  # a pad distinct from EOS, so TRL's pooling reads the EOS too
    model = load_model("tiny-random-llama-wide", kind="seq_cls", seed=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = [{"prompt": f"Question {i}:", "chosen": f" answer {'yes ' * (i % 3 + 1)}", "rejected": f" no {i}"}
            for i in range(6)]
    args = RewardConfig(output_dir=str(tmp_path), report_to="none", per_device_eval_batch_size=6,
                        use_cpu=True, bf16=False, gradient_checkpointing=False,
                        center_rewards_coefficient=center_rewards_coefficient)
    trl_trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer,
                                train_dataset=Dataset.from_list(rows), eval_dataset=Dataset.from_list(rows))
    trl_batch = next(iter(trl_trainer.get_eval_dataloader()))
    model.eval()
    with torch.no_grad():
        trl_loss = trl_trainer.compute_loss(model, dict(trl_batch)).item()
        comparisons = [Comparison(items=[r["chosen"], r["rejected"]], kind="pair", label=1.0, prompt=r["prompt"])
                       for r in rows]
        examples, _ = tokenize_comparisons(comparisons, tokenizer)
        batch = ComparisonCollator(tokenizer.pad_token_id)(examples)
        scores = scatter_scores(sequence_scores(model, batch["input_ids"], batch["attention_mask"]), batch["item_mask"])
        ours = comparison_loss(scores, batch, center_rewards_coefficient=center_rewards_coefficient).item()
        plain = comparison_loss(scores, batch).item()
    assert ours == pytest.approx(trl_loss, abs=1e-6)
    assert plain != pytest.approx(0.6931, abs=1e-3)  # a real, non-trivial loss
    if center_rewards_coefficient:
        # The centering term is large enough here to tell TRL's objective from the old mean of r^2.
        assert ours - plain > 1e-3
        old = plain + center_rewards_coefficient * (scores**2).mean().item()
        assert abs(old - trl_loss) > 1e-3


def test_comparison_loss_centering_on_a_mixed_batch_by_hand():
    # Row 0: a pair (weight 2); row 1: a K = 3 ranking with a tie and an unranked item.
    scores = torch.tensor([[0.7, -0.2, 0.0], [1.5, 0.5, -0.4]], dtype=torch.float64)
    batch = {"item_mask": torch.tensor([[True, True, False], [True, True, True]]),
             "ranks": torch.tensor([[0, 1, -1], [0, 0, -1]]), "is_pair": torch.tensor([True, False]),
             "label": torch.tensor([1.0, 0.0]), "margin": torch.tensor([0.0, 0.0]),
             "choice": torch.tensor([0, -1]), "weight": torch.tensor([2.0, 1.0])}
    coefficient = 0.1
    per_row, weights = [], [2.0, 1.0]
    for row, keep in zip(scores.tolist(), batch["item_mask"].tolist()):
        items = [r for r, k in zip(row, keep) if k]
        per_row.append((2 * sum(items) / len(items)) ** 2)
    assert per_row == pytest.approx([0.25, 10.24 / 9])  # (0.7 - 0.2)^2, (2 * 1.6 / 3)^2
    centering = sum(w * p for w, p in zip(weights, per_row)) / sum(weights)
    plain = comparison_loss(scores, batch).item()
    centred = comparison_loss(scores, batch, center_rewards_coefficient=coefficient).item()
    assert centred - plain == pytest.approx(coefficient * centering, rel=1e-12)


def test_pair_metrics_by_hand():
    scores = torch.tensor([[2.0, 1.0, 1.0], [0.0, 3.0, 0.0]])
    ranks = torch.tensor([[0, 1, 2], [0, 0, -1]])  # row 2: items 0 and 1 tied, item 2 unranked
    mask = torch.tensor([[True, True, True], [True, True, False]])
    metrics = pair_metrics(scores, ranks, mask)
    # strict pairs: (0>1) right, (0>2) right, (1>2) equal scores -> wrong  => 2/3
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    # half credit: 2 + 0.5 (equal scores) + 0.5 (labelled tie) over 4 pairs
    assert metrics["accuracy_ties_half"] == pytest.approx(3 / 4)
    assert metrics["margin"] == pytest.approx((1 + 1 + 0) / 3)



def tensor_pair_metrics(scores, ranks, mask):
    """pair_metrics as the trainer computed it before rlhf.metrics (batched float32 tensors)."""
    unranked = ranks < 0
    effective = torch.where(unranked, ranks.max() + 1, ranks)
    compared = mask[:, :, None] & mask[:, None, :] & ~(unranked[:, :, None] & unranked[:, None, :])
    better = (effective[:, :, None] < effective[:, None, :]) & compared
    tied = (effective[:, :, None] == effective[:, None, :]) & compared
    tied &= torch.triu(torch.ones_like(tied[0]), 1)
    diff = scores[:, :, None] - scores[:, None, :]
    strict_correct = ((diff > 0) & better).sum().float()
    strict_half = strict_correct + 0.5 * ((diff == 0) & better).sum()
    n_all = (better.sum() + tied.sum()).clamp_min(1)
    return {"accuracy": (strict_correct / better.sum().clamp_min(1)).item(),
            "accuracy_ties_half": ((strict_half + 0.5 * tied.sum()) / n_all).item(),
            "margin": (diff[better].mean() if better.any() else diff.new_zeros(())).item()}


def test_pair_metrics_equal_the_batched_tensor_version():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randint(0, 3, (6, 4), generator=gen).float()  # many exact score ties
        ranks = torch.randint(-1, 3, (6, 4), generator=gen)
        mask = torch.rand(6, 4, generator=gen) < 0.8
        ours, theirs = pair_metrics(scores, ranks, mask), tensor_pair_metrics(scores, ranks, mask)
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-7)

# ------------------------------------------------------------------ planted preferences
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "tree", "rock"]


def planted(n, k, seed):
    """Completions of random words; the gold score is the number of 'apple's (0..k-1)."""
    rng = random.Random(seed)
    comparisons = []
    for i in range(n):
        items = []
        for apples in range(k):
            words = [rng.choice(WORDS) for _ in range(5)] + ["apple"] * apples
            rng.shuffle(words)
            items.append(" " + " ".join(words))
        order = list(range(k))
        rng.shuffle(order)
        items = [items[j] for j in order]
        gold = [order[j] for j in range(k)]  # apples in item j
        ranks = [k - 1 - g for g in gold]
        if k == 2:
            comparisons.append(Comparison(items=items, kind="pair", label=1.0 if gold[0] > gold[1] else 0.0,
                                          prompt=f"Item {i}:"))
        else:
            comparisons.append(Comparison(items=items, kind="ranking", ranks=ranks, prompt=f"Item {i}:"))
    return comparisons


def held_out_accuracy(output_dir, k, loss, n=40, seed=99):
    """What the loss teaches, on new comparisons: top-1 accuracy for best-of-K (it only
    learns which item is best), otherwise the share of correctly ordered pairs."""
    model = RewardModel.load(output_dir)
    test = planted(n, k, seed)
    prompts = [c.prompt for c in test for _ in range(k)]
    items = [item for c in test for item in c.items]
    scores = model.score(prompts, items)[0].reshape(n, k)
    ranks = torch.tensor([c.to_ranks() for c in test])
    if loss == "best_of_k":
        return (ranks.gather(1, scores.argmax(1, keepdim=True)) == 0).float().mean().item()
    return pair_metrics(scores, ranks, torch.ones_like(ranks, dtype=torch.bool))["accuracy"]


@pytest.mark.parametrize("loss,k", [("bradley_terry", 2), ("best_of_k", 4), ("pairwise_ranking", 4),
                                    ("plackett_luce", 4)])
@pytest.mark.slow
def test_every_loss_learns_a_planted_preference(tmp_path, loss, k):
    data = save_comparisons(planted(96, k, seed=0), tmp_path / "train.jsonl")
    config = RewardModelConfig(output_dir=str(tmp_path / "rm"), model_name_or_path="tiny-random-llama-wide",
                               train_data=str(data), loss=loss, learning_rate=3e-3, num_train_epochs=2 if k == 4 else 5,
                               per_device_train_batch_size=8, use_cpu=True, save_strategy="no",
                               disable_tqdm=True, seed=0, logging_steps=20)
    summary = train(config)
    accuracy = held_out_accuracy(tmp_path / "rm", k, loss)
    print(f"{loss}: held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.9
    stats = json.loads((tmp_path / "rm" / "reward_stats.json").read_text())
    assert stats["n"] == 96 * k and stats["std"] > 0
    assert summary["log_history"][0][-1]["train_loss"] > 0


# ------------------------------------------------------------------ folder format, library pieces
def test_reward_model_folder_api(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    assert not RewardModel.is_model_dir(single)
    (single / "config.json").write_text("{}")
    RewardModel.write_stats(single, {"mean": 0.5, "std": 2.0, "n": 3})
    assert RewardModel.is_model_dir(single) and RewardModel.member_dirs(single) == [single]
    assert RewardModel.read_stats(single) == {"mean": 0.5, "std": 2.0, "n": 3}

    ensemble = tmp_path / "ensemble"
    members = [ensemble / "member_0", ensemble / "member_1"]
    for member in members:
        member.mkdir(parents=True)
    RewardModel.write_ensemble_index(ensemble, members)
    assert json.loads((ensemble / "ensemble.json").read_text()) == {"members": ["member_0", "member_1"]}
    assert RewardModel.is_model_dir(ensemble) and RewardModel.member_dirs(ensemble) == members


def test_lora_config_is_the_hand_built_one_and_dropout_is_off():
    config = RewardModelConfig(output_dir="unused", use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.05,
                               report_to="none")
    by_hand = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.05, target_modules="all-linear",
                         modules_to_save=["score"])
    assert lora_config(config).to_dict() == by_hand.to_dict()

    # Dropout is switched off before the adapters are added (their own dropout stays).
    model = build_model(replace(config, model_name_or_path="tiny-random-llama"), seed=0)
    assert sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}) == [0.05]


def test_trl_disable_dropout_equals_the_hand_loop():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1), torch.nn.Dropout(0.1))
    by_hand = copy.deepcopy(net)
    for module in by_hand.modules():  # the loop build_model had
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    disable_dropout_in_model(net)
    x = torch.randn(5, 4)
    assert [m.p for m in net if isinstance(m, torch.nn.Dropout)] == [0, 0]
    assert torch.equal(net.train()(x), by_hand.train()(x)) and torch.equal(net(x), net.eval()(x))


def test_dataset_from_list_collates_like_the_list():
    tokenizer = load_tokenizer("tiny-random-llama")
    comparisons = [Comparison(items=[" a b", " c"], kind="pair", label=1.0, prompt="p", margin=0.5),
                   Comparison(items=[" x", " y y", " z"], kind="ranking", ranks=[1, 0, None], prompt="q", weight=2.0),
                   Comparison(items=[" u", " v"], kind="pair", label=0.5, prompt="r")]
    examples, _ = tokenize_comparisons(comparisons, tokenizer)
    collator = ComparisonCollator(tokenizer.pad_token_id, padding_free=True)
    from_list = Dataset.from_list(examples)
    ours, theirs = collator(examples), collator([from_list[i] for i in range(len(from_list))])
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_warm_start_takes_each_member_from_its_namesake(tmp_path):
    """A saved ensemble as model_name_or_path: member i starts from member_i (cycling), so a
    refit (the live loop's) continues each member; a plain model name is used as it is."""
    members = []
    for i in range(2):
        model = build_model(RewardModelConfig(output_dir=str(tmp_path / "run"), use_cpu=True), seed=i)
        model.save_pretrained(tmp_path / "saved" / f"member_{i}")
        members.append(tmp_path / "saved" / f"member_{i}")
    RewardModel.write_ensemble_index(tmp_path / "saved", members)
    config = RewardModelConfig(output_dir=str(tmp_path / "run"), model_name_or_path=str(tmp_path / "saved"),
                               use_cpu=True)
    assert [initial_weights(config, i) for i in range(3)] == [str(members[0]), str(members[1]), str(members[0])]
    warm = build_model(config, seed=7, member=1)
    saved = load_model(members[1], kind="seq_cls")
    assert all(torch.equal(a, b) for a, b in zip(warm.state_dict().values(), saved.state_dict().values()))
    plain = RewardModelConfig(output_dir=str(tmp_path / "run"), use_cpu=True)
    assert initial_weights(plain, 1) == "tiny-random-llama"

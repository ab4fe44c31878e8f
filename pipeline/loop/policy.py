"""The policy part of the live loop: PPO-ptx that never waits, and the queries it sends.

Start-up (Christiano et al. 2017 label clips of the untrained policy first): the initial
policy's K completions of `labels_before_first_fit` training prompts go to the app; PPO
starts when the reward part publishes its first version. From then on, each iteration:

1. at the iteration boundary, switch to the newest published reward version (its members
   and their saved normalisation), logged as ``loop/reward_version``;
2. one PPO iteration (`PPOTrainer.step`) against the reward model in use;
3. live mode: sample K completions for `candidates_per_iteration` training prompts from the
   current policy, score them with every ensemble member and send the
   `queries_per_iteration` the members disagree on most (``rlhf.ensemble.ranking_disagreement``)
   to the app, with that disagreement as their priority; nothing is sent while
   `max_queue` items are open or once the label budget is spent;
4. every `eval_every` iterations: held-out gold judge and proxy (reward-model) score of the
   current policy, each as a gain over the initial policy in its initial standard deviations.

Nothing here waits for labels or for the reward part: with no new version PPO goes on with
the one in use; an app that does not answer only means no query is sent this iteration.
A checkpoint (every `ppo.save_steps` iterations, the newest kept) holds the trainer and the
loop's state; a restart resumes from it and cuts the logs back to its step.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
from tqdm.auto import tqdm

from labeling_app.http_client import AdminClient, ApiError
from pipeline.end_to_end import gold_summary
from pipeline.loop.config import LoopConfig, LoopFields, LoopPaths
from pipeline.loop.report import write_report
from pipeline.loop.reward import append_durably
from ppo.config import PPOConfig, every, load_prompts, num_total_batches
from ppo.trainer import PPOTrainer, TextRewardModel
from rlhf.ensemble import ranking_disagreement
from rlhf.generation import decode_responses, derive_seed
from rlhf.outputs import cut_log
from rlhf.preferences import read_jsonl
from rlhf.rubric import gold_score

LOOP_STATE = "loop_state.json"


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (their loop state is written last), oldest first."""
    found = [p for p in folder.glob("step_*") if (p / LOOP_STATE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def gain_in_std(now: np.ndarray, initial: np.ndarray) -> float:
    """(mean now - mean initially) in standard deviations of the initial scores."""
    return float((now.mean() - initial.mean()) / max(initial.std(), 1e-9))


class QueryingPart:
    """What every policy part (text or robot) does with the app: send items within the label
    budget and the queue, report its state, and wait at start-up for the first reward version.
    A subclass has `step` and `version`."""

    step = version = 0

    def __init__(self, config: LoopFields, client: AdminClient | None = None):
        self.config = config
        self.paths = LoopPaths(config.out)
        self.paths.policy.mkdir(parents=True, exist_ok=True)
        # a short timeout: an app that does not answer costs this part at most 2 s
        self.client = client or AdminClient(self.paths.app_url(config), self.paths.api_token(), timeout=2.0)
        self.sent_ids = {row["id"] for _, row in read_jsonl(self.paths.sent)} if self.paths.sent.exists() else set()
        self.startup_seconds = 0.0

    # -- talking to the app (never blocking) ---------------------------------------------
    def send(self, items: list[dict], priorities: dict[str, float]) -> int:
        """Items to the app, recorded in sent.jsonl; returns how many are new there. Re-sending
        is a no-op in the app, so an item the app already holds (sent before a crash) counts
        as sent. An app that does not answer (or fails, 5xx) is tried again later; a request
        it refuses (4xx) would be refused every time, so it stops the part with the app's reason."""
        try:
            reply = self.client.add_items(items, priorities)
        except ApiError as err:
            if err.status < 500:
                raise RuntimeError(f"the labelling app refused the items: {err}") from None
            return 0
        except httpx.HTTPError:
            return 0
        held = set(reply["added"]) | set(reply["existing"])
        new = [item for item in items if item["id"] in held and item["id"] not in self.sent_ids]
        append_durably(self.paths.sent, [{"id": item["id"], "step": self.step, "priority": priorities.get(item["id"], 0.0)}
                                         for item in new])
        self.sent_ids |= {item["id"] for item in new}
        return len(reply["added"])

    def open_items(self) -> int | None:
        try:
            return self.client.status()["open"]
        except (ApiError, httpx.HTTPError):
            return None

    def room(self) -> tuple[int | None, int]:
        """(open items, how many items may be sent now): none once the label budget is spent,
        while `max_queue` items are open, or when the app does not answer."""
        if self.items_sent >= self.budget_items:
            return None, 0
        open_now = self.open_items()
        if open_now is None or open_now >= self.config.max_queue:
            return open_now, 0
        return open_now, min(self.config.queries_per_iteration, self.budget_items - self.items_sent,
                             self.config.max_queue - open_now)

    def heartbeat(self, **state) -> None:
        try:
            self.client.heartbeat("policy", {"iteration": self.step, "reward_version": self.version,
                                             "items_sent": self.items_sent} | state)
        except (ApiError, httpx.HTTPError):
            pass

    @property
    def items_sent(self) -> int:
        return len(self.sent_ids)

    @property
    def budget_items(self) -> int:
        return self.config.label_budget // self.config.overlap

    def send_initial_and_wait(self, initial: list[dict]) -> None:
        """Send the initial policy's items, then wait for the first reward version (the only
        wait: there is nothing to optimise before it); sets `startup_seconds`."""
        started = time.time()
        wanted = {item["id"] for item in initial}
        while not wanted <= self.sent_ids:
            self.send(initial, {})
            if not wanted <= self.sent_ids:
                time.sleep(1.0)  # the app is not up yet, or did not answer
        while self.paths.latest_version() == 0:
            self.heartbeat(phase="waiting for the first reward model")
            time.sleep(1.0)
        self.startup_seconds = time.time() - started


class PolicyPart(QueryingPart):
    write_report = staticmethod(write_report)  # what the launcher writes when the loop ends

    @staticmethod
    def iterations(ppo_config: PPOConfig) -> int:
        """The iterations the part runs (the launcher's progress bar): TRL's num_total_batches."""
        return num_total_batches(ppo_config, len(load_prompts(ppo_config.prompts)))

    def __init__(self, config: LoopConfig, ppo_config: PPOConfig, client: AdminClient | None = None):
        super().__init__(config, client)
        self.ppo_config = ppo_config
        split = json.loads((self.paths.data / "split.json").read_text())
        self.initial_items, self.heldout_prompts = split["initial_items"], split["heldout_prompts"][: config.eval_prompts]
        self.trainer: PPOTrainer | None = None
        self.version = 0
        self.initial_texts: list[str] | None = None

    @property
    def step(self) -> int:
        return self.trainer.state.step if self.trainer else 0

    # -- start-up ------------------------------------------------------------------------
    def start(self) -> None:
        """Send the initial policy's items, wait for the first reward version, then build or
        resume the trainer."""
        self.send_initial_and_wait(self.initial_items[: self.config.labels_before_first_fit // self.config.overlap])

        found = checkpoints(self.paths.policy / "checkpoints")
        resume = found[-1] if found else None
        self.version = (json.loads((resume / LOOP_STATE).read_text())["reward_version"] if resume
                        else self.paths.latest_version())
        ppo_config = dataclasses.replace(self.ppo_config, reward_models=[{"path": self.model_dir(self.version),
                                                                          "weight": 1.0}],
                                         resume_from_checkpoint=str(resume) if resume else None, report_to="none")
        self.trainer = PPOTrainer(ppo_config)
        cut_log(self.paths.policy / "metrics.jsonl", self.step)
        cut_log(self.paths.eval, self.step)
        initial_file = self.paths.policy / "eval_initial.jsonl"
        if initial_file.exists():
            self.initial_texts = [row["text"] for _, row in read_jsonl(initial_file)]

    def model_dir(self, version: int) -> str:
        return str(self.paths.version_dir(version) / "model")

    def reward_model(self):
        return self.trainer.reward_models[0][0].model

    def maybe_switch(self) -> None:
        newest = self.paths.latest_version()
        if newest != self.version:
            self.trainer.reward_models = [(TextRewardModel(self.model_dir(newest), self.trainer.accelerator.device), 1.0)]
            self.version = newest

    # -- queries -------------------------------------------------------------------------
    def send_queries(self) -> dict:
        """Step 3: the most disputed of this iteration's candidate items, to the app."""
        cfg, trainer = self.config, self.trainer
        if cfg.mode != "live" or self.items_sent >= self.budget_items:
            return {}
        open_now, room = self.room()
        if not room:
            return {"loop/queue_open": open_now if open_now is not None else -1}
        rng = np.random.default_rng([cfg.seed, self.step])
        chosen = rng.choice(len(trainer.prompts), size=min(cfg.candidates_per_iteration, len(trainer.prompts)),
                            replace=False).tolist()
        prompt_ids = [trainer.prompt_ids[i] for i in chosen for _ in range(cfg.k)]
        sampled = trainer.sample(prompt_ids, seed=derive_seed(cfg.seed, "queries", self.step))
        texts = decode_responses(trainer.tokenizer, sampled.responses)
        prompts = [trainer.prompts[i] for i in chosen for _ in range(cfg.k)]
        scores = self.reward_model().member_scores(prompts, texts, batch_size=trainer.config.per_device_train_batch_size)
        candidates = []
        for g, index in enumerate(chosen):
            group = texts[g * cfg.k:(g + 1) * cfg.k]
            if len(set(group)) < cfg.k or not all(text.strip() for text in group):
                continue  # the app refuses empty or identical completions: nothing to compare
            disagreement = ranking_disagreement(scores[:, g * cfg.k:(g + 1) * cfg.k], "probability_variance")
            candidates.append((disagreement, {"id": f"it{self.step:04d}-p{index}", "prompt": trainer.prompts[index],
                                              "completions": group}))
        candidates.sort(key=lambda pair: -pair[0])
        picked = candidates[:room]
        sent = self.send([item for _, item in picked], {item["id"]: d for d, item in picked})
        return {"loop/queue_open": open_now, "loop/queries_sent": sent,
                "loop/query_disagreement": float(np.mean([d for d, _ in picked])) if picked else 0.0}

    # -- held-out evaluation -------------------------------------------------------------
    def evaluate(self) -> dict:
        """Step 4: gold and proxy of the current policy's held-out completions, each also as
        a gain over the initial policy's completions (same prompts, same seed) in initial
        standard deviations, scored by the reward version in use; their difference is the
        proxy-minus-gold divergence (Gao et al. 2023 call its growth over-optimisation)."""
        cfg, trainer = self.config, self.trainer
        texts = trainer.generate(self.heldout_prompts, max_new_tokens=cfg.eval_max_new_tokens, seed=cfg.seed)
        if self.initial_texts is None:  # step 0: this is the initial policy
            self.initial_texts = texts
            (self.paths.policy / "eval_initial.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        gold = gold_summary(texts, self.heldout_prompts)
        gold_now = np.array([gold_score(t, p) for t, p in zip(texts, self.heldout_prompts)])
        gold_initial = np.array([gold_score(t, p) for t, p in zip(self.initial_texts, self.heldout_prompts)])
        model = self.reward_model()
        proxy_now = model.member_scores(self.heldout_prompts, texts).mean(0).numpy()
        proxy_initial = model.member_scores(self.heldout_prompts, self.initial_texts).mean(0).numpy()
        row = {"step": self.step, "reward_version": self.version, "gold": gold["mean"], "proxy": float(proxy_now.mean()),
               "gold_gain_std": gain_in_std(gold_now, gold_initial), "proxy_gain_std": gain_in_std(proxy_now, proxy_initial),
               "topical": gold["topical"], "content_free": gold["content_free"], "words": gold["words"],
               "samples": [{"prompt": p, "text": t} for p, t in list(zip(self.heldout_prompts, texts))[:3]]}
        row["divergence_std"] = row["proxy_gain_std"] - row["gold_gain_std"]
        append_durably(self.paths.eval, [row])
        return row

    # -- the part ------------------------------------------------------------------------
    def save(self) -> None:
        """A checkpoint with the loop's state written last (what makes it complete); older
        checkpoints are then removed (a 135M policy's checkpoint is about 2 GB)."""
        folder = self.trainer.save_checkpoint()
        state = {"reward_version": self.version, "items_sent": self.items_sent, "step": self.step}
        (folder / LOOP_STATE).write_text(json.dumps(state))
        for old in checkpoints(self.paths.policy / "checkpoints")[:-1]:
            shutil.rmtree(old)

    def run(self) -> dict:
        self.start()
        cfg, trainer = self.config, self.trainer
        total = trainer.num_iterations
        save_every = every(trainer.config.save_steps, total)
        if self.step == 0 and not self.paths.eval.exists():
            self.evaluate()
        bar = tqdm(total=total, initial=self.step, desc="policy", unit="it", disable=trainer.config.disable_tqdm)
        while self.step < total:
            self.maybe_switch()
            metrics = trainer.step()
            t0 = time.perf_counter()
            rollout = trainer.last_rollout
            metrics["gold/rollout"] = float(np.mean([gold_score(c, p) for p, c in zip(rollout.prompts, rollout.completions)]))
            metrics |= self.send_queries()
            metrics |= {"loop/reward_version": self.version, "loop/items_sent": self.items_sent,
                        "loop/waited_seconds": 0.0, "time/queries": time.perf_counter() - t0}
            if self.step % cfg.eval_every == 0 or self.step == total:
                evaluation = self.evaluate()
                metrics |= {f"eval/{key}": value for key, value in evaluation.items() if key not in ("step", "samples")}
            trainer.log(metrics)
            bar.update(1)
            bar.set_postfix(version=self.version, sent=self.items_sent, score=f"{metrics['objective/scores']:.2f}",
                            kl=f"{metrics['objective/kl']:.2f}")
            self.heartbeat(phase="training", kl=metrics["objective/kl"])
            if save_every and self.step % save_every == 0 and self.step < total:
                self.save()
        bar.close()
        self.save()
        policy_dir = trainer.save_policy()
        summary = {"steps": self.step, "startup_seconds": self.startup_seconds, "items_sent": self.items_sent,
                   "reward_version": self.version, "policy_dir": str(policy_dir)}
        (self.paths.policy / "summary.json").write_text(json.dumps(summary, indent=2))
        self.heartbeat(phase="done")
        return summary

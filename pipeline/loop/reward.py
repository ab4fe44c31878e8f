"""The reward part of the live loop: pull votes from the app, refit, publish versions.

Christiano et al. (2017, section 2.2.3) fit the reward predictor asynchronously on the
growing set of comparisons while RL runs; this part is that process:

1. every `poll_seconds` it asks the app for votes after the last one it holds and appends
   them to ``reward/labels.jsonl`` (fsync'd), keyed by the app's vote id: a vote pulled
   twice (after a crash) is kept once, none is lost (the app's store is the source);
2. when `refit_every` new votes have landed (or, before the first version, the initial
   ones), it fits the reward model on every vote so far, warm-started from the previous
   version, with the items whose id hash falls in the held-out share kept out to check it;
3. it publishes the fit atomically: the model is written under ``reward/.tmp-vNNNN``,
   renamed to ``reward/vNNNN`` when complete, and then the pointer ``reward/LATEST`` is
   replaced by rename. A fit killed half-way leaves only a ``.tmp`` folder, removed on
   restart; the policy part only ever reads a complete version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import httpx

from labeling_app.http_client import AdminClient, ApiError
from pipeline.loop.config import LoopConfig, LoopPaths
from reward_model.benchmarks import load_examples, score_examples
from reward_model.evaluate import accuracy_block
from reward_model.modeling import RewardModel
from reward_model.train import RewardModelConfig
from reward_model.train import train as train_reward_model
from rlhf.preferences import write_jsonl


def is_heldout(item_id: str, every: int) -> bool:
    """Whether an item's votes check the fits instead of training them: a hash of its id,
    so the split never changes as votes arrive and all votes of one item stay together."""
    return every > 0 and int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % every == 0


def append_durably(path: Path, rows: list[dict]) -> None:
    """Append JSON lines and fsync before returning: a pulled vote survives kill -9."""
    with path.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_labels(path: Path) -> list[dict]:
    """The pulled votes, each vote id once (the first copy), oldest first. A line cut by a
    crash mid-write is the last one and is dropped (its vote is pulled again)."""
    labels, seen = [], set()
    if not path.exists():
        return labels
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["vote_id"] not in seen:
            seen.add(row["vote_id"])
            labels.append(row)
    return labels


def heldout_accuracy(model_dir: Path, heldout_file: Path) -> float | None:
    """Strict pair accuracy of a fit on its held-out votes (the ensemble's mean score), as
    `rlhf eval-rm` computes it (labelled ties left out)."""
    examples, _ = load_examples(heldout_file)
    score_examples(RewardModel.load(model_dir), examples, progress=False)
    return accuracy_block(examples, n_resamples=0, seed=0)["accuracy"]


def publish(paths: LoopPaths, version: int) -> None:
    """Point ``LATEST`` at a complete version folder, atomically (write, fsync, rename)."""
    pointer = paths.latest.with_suffix(".tmp")
    with pointer.open("w") as handle:
        handle.write(f"v{version:04d}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(pointer, paths.latest)


class RewardPart:
    def __init__(self, config: LoopConfig, rm_config: RewardModelConfig, client: AdminClient | None = None):
        self.config, self.rm_config = config, rm_config
        self.paths = LoopPaths(config.out)
        self.paths.reward.mkdir(parents=True, exist_ok=True)
        for half_written in self.paths.reward.glob(".tmp-v*"):  # a fit killed before its rename
            shutil.rmtree(half_written)
        self.client = client or AdminClient(self.paths.app_url(config), self.paths.api_token())
        self.labels = read_labels(self.paths.labels)
        self.version = self.paths.latest_version()
        self.fitted_on = self._meta(self.version)["votes"] if self.version else 0
        self.last_fit: dict = {}

    def _meta(self, version: int) -> dict:
        return json.loads((self.paths.version_dir(version) / "meta.json").read_text())

    # -- 1. pull -------------------------------------------------------------------------
    def pull(self) -> int:
        """New votes from the app into labels.jsonl; returns how many."""
        after = self.labels[-1]["vote_id"] if self.labels else 0
        known = {label["vote_id"] for label in self.labels}
        new = []
        while True:
            page = self.client.votes(after=after, limit=1000)
            new += [v for v in page["votes"] if v["vote_id"] not in known]
            if not page["votes"]:
                break
            after = page["last_id"]
        if new:
            append_durably(self.paths.labels, new)
            self.labels += new
        return len(new)

    # -- 2. fit --------------------------------------------------------------------------
    def due(self) -> bool:
        if self.version == 0:
            return len(self.labels) >= self.config.labels_before_first_fit
        return self.config.refits and len(self.labels) >= self.fitted_on + self.config.refit_every

    def fit(self) -> int:
        """Fit on every vote so far; publish it as the next version; return its number."""
        version = self.version + 1
        started = time.time()
        labels = list(self.labels)  # the set this version sees, whatever arrives meanwhile
        train, heldout = [], []
        for label in labels:
            if label["comparison"] is not None:  # a dropped vote (can't tell) counts, trains nothing
                (heldout if is_heldout(label["item_id"], self.config.heldout_every) else train).append(label)
        tmp = self.paths.reward / f".tmp-v{version:04d}"
        tmp.mkdir(parents=True)
        write_jsonl([label["comparison"] for label in train], tmp / "train.jsonl")  # core rows, as the app sent them
        if heldout:
            write_jsonl([label["comparison"] for label in heldout], tmp / "heldout.jsonl")
        fitted = self.train_version(tmp, version)
        meta = {"version": version, "votes": len(labels), "trained_vote_ids": [label["vote_id"] for label in train],
                "heldout_vote_ids": [label["vote_id"] for label in heldout], **fitted,
                "seconds": time.time() - started, "published_at": time.time()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        os.rename(tmp, self.paths.version_dir(version))
        publish(self.paths, version)
        self.version, self.fitted_on, self.last_fit = version, len(labels), meta
        return version

    def train_version(self, tmp: Path, version: int) -> dict:
        """The reward model of a version, trained on ``tmp/train.jsonl`` into ``tmp/model``
        and checked on ``tmp/heldout.jsonl`` (when there is one); returns its meta entries."""
        has_heldout = (tmp / "heldout.jsonl").exists()
        start_from = (str(self.paths.version_dir(self.version) / "model")
                      if self.config.warm_start and self.version else self.rm_config.model_name_or_path)
        rm_config = dataclasses.replace(
            self.rm_config, model_name_or_path=start_from, train_data=str(tmp / "train.jsonl"),
            eval_data=str(tmp / "heldout.jsonl") if has_heldout else None, output_dir=str(tmp / "model"),
            seed=self.config.seed + version, report_to="none", disable_tqdm=True)
        train_reward_model(rm_config)
        return {"heldout_accuracy": heldout_accuracy(tmp / "model", tmp / "heldout.jsonl") if has_heldout else None,
                "warm_start_from": start_from}

    # -- the part ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"labels": len(self.labels), "version": self.version, "fitted_on": self.fitted_on,
                "heldout_accuracy": self.last_fit.get("heldout_accuracy"),
                "last_fit_seconds": self.last_fit.get("seconds")}

    def heartbeat(self, **extra) -> None:
        try:
            self.client.heartbeat("reward", self.state() | extra)
        except (ApiError, httpx.HTTPError):
            pass  # the app restarting: the next heartbeat tells

    def run(self, stop=lambda: False) -> None:
        """Pull, fit when due, report; until `stop()` (the launcher ends it with SIGTERM)."""
        while not stop():
            try:
                self.pull()
            except (ApiError, httpx.HTTPError):
                pass  # the app is down or restarting; its store keeps the votes
            if self.due():
                self.heartbeat(fitting=True)
                self.fit()
            self.heartbeat(fitting=False)
            time.sleep(self.config.poll_seconds)

"""Active ordering: items on which a reward-model ensemble disagrees most are shown first.

Disagreement of an item = the variance across ensemble members of the Bradley-Terry
preference probability sigmoid(r_i - r_j), averaged over all pairs (i, j) of completions.
Members that agree give 0; members split between "i clearly better" and "j clearly
better" give up to 0.25.

Scores come from either
- ``ensemble: {scores: FILE.jsonl}``: lines ``{"id": item id, "scores": [[member 0's score
  per completion], [member 1's ...], ...]}`` (items without a line get priority 0), or
- ``ensemble: {scorer: "module:function"}``: ``function(prompt, completions)`` returns the
  same list of lists; called once per text item at start-up.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

from rlhf.preferences import read_jsonl

from .sources import Item, SourceError


def disagreement(member_scores: list[list[float]]) -> float:
    """Mean over pairs of completions of the members' variance of sigmoid(r_i - r_j)
    (`rlhf.ensemble.ranking_disagreement`, method ``probability_variance``)."""
    # torch (through rlhf.ensemble) is heavy and only needed when an ensemble is configured.
    import torch

    from rlhf.ensemble import ranking_disagreement

    return ranking_disagreement(torch.tensor(member_scores, dtype=torch.float64), "probability_variance")


def _check_scores(scores, k: int, source, line) -> list[list[float]]:
    if not isinstance(scores, list) or not scores or not all(isinstance(s, list) for s in scores):
        raise SourceError("expected a list of per-member score lists", source, line, "scores")
    for member in scores:
        if len(member) != k or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in member):
            raise SourceError(f"each member needs {k} finite scores (one per completion)", source, line, "scores")
    return scores


def priorities(config, items: list[Item]) -> dict[str, float]:
    ensemble = config.ensemble or {}
    by_id = {item.id: item for item in items}
    out: dict[str, float] = {}
    if "scores" in ensemble:
        path = Path(ensemble["scores"])
        for number, row in read_jsonl(path, SourceError):
            item = by_id.get(str(row.get("id")))
            if item is None:
                raise SourceError(f"no item with id {row.get('id')!r} in the sources", path, number, "id")
            out[item.id] = disagreement(_check_scores(row.get("scores"), item.k, path, number))
    elif "scorer" in ensemble:
        module_name, _, function_name = ensemble["scorer"].partition(":")
        scorer = getattr(importlib.import_module(module_name), function_name)
        for item in items:
            if item.mode != "clip":
                out[item.id] = disagreement(_check_scores(scorer(item.prompt, item.completions), item.k,
                                                          ensemble["scorer"], None))
    return out

"""The admin page's numbers: progress, agreement, label distribution, time per vote.

Agreement uses `rlhf.metrics` (the core): labels are compared in true item order, so two
annotators who saw A and B swapped still agree when they preferred the same completion.
- pairs and clips: the category is the true label (1, 0.5 tie, 0); can't tell is missing;
- best-of-K: the chosen true index;
- rankings: one unit per (item, completion) with its rank, Krippendorff's alpha ordinal.
Cohen's kappa is the mean over annotator pairs sharing at least two rated items; Fleiss'
kappa uses the items that reached the full overlap; Krippendorff's alpha takes everything.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter, defaultdict
from itertools import combinations

from rlhf.metrics import cohens_kappa, fleiss_kappa, krippendorff_alpha

from .handlers import escape_markdown


def _category(vote: dict):
    if vote["kind"] == "pair":
        return vote["label"]
    if vote["kind"] == "best_of_k":
        return float(vote["choice"])
    return None  # not comparable, or a ranking (handled per completion)


def _safe(fn, *args, **kwargs) -> float | None:
    try:
        value = fn(*args, **kwargs)
    except (ValueError, ZeroDivisionError):
        return None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, 4)


def agreement(votes: list[dict], overlap: int) -> dict:
    """Cohen's kappa (mean over annotator pairs), Fleiss' kappa, Krippendorff's alpha."""
    ratings: dict[str, dict[str, float]] = defaultdict(dict)  # item -> annotator -> category
    rank_units: dict[tuple, dict[str, int]] = defaultdict(dict)  # (item, completion) -> annotator -> rank
    for vote in votes:
        if vote["kind"] == "ranking":
            for index, rank in enumerate(vote["ranks"]):
                rank_units[(vote["item_id"], index)][vote["annotator"]] = rank
        elif _category(vote) is not None:
            ratings[vote["item_id"]][vote["annotator"]] = _category(vote)
    annotators = sorted({v["annotator"] for v in votes})
    items = sorted(ratings)

    kappas = []
    for a, b in combinations(annotators, 2):
        shared = [i for i in items if a in ratings[i] and b in ratings[i]]
        if len(shared) >= 2:
            value = _safe(cohens_kappa, [ratings[i][a] for i in shared], [ratings[i][b] for i in shared])
            if value is not None:
                kappas.append(value)

    full = [i for i in items if len(ratings[i]) == overlap and overlap >= 2]
    fleiss = None
    if full:
        categories = sorted({c for i in full for c in ratings[i].values()})
        table = [[list(ratings[i].values()).count(c) for c in categories] for i in full]
        fleiss = _safe(fleiss_kappa, table=table)

    alpha = None
    if annotators and items:
        data = [[ratings[i].get(a) for i in items] for a in annotators]
        alpha = _safe(krippendorff_alpha, data, level="nominal")
    alpha_rank = None
    if annotators and rank_units:
        units = sorted(rank_units)
        data = [[rank_units[u].get(a) for u in units] for a in annotators]
        alpha_rank = _safe(krippendorff_alpha, data, level="ordinal")
    return {
        "cohens_kappa_mean": round(statistics.mean(kappas), 4) if kappas else None,
        "cohens_kappa_pairs": len(kappas),
        "fleiss_kappa": fleiss, "fleiss_items": len(full),
        "krippendorff_alpha_nominal": alpha,
        "krippendorff_alpha_rankings_ordinal": alpha_rank,
    }


def label_name(vote: dict) -> str:
    if vote["kind"] == "pair":
        return {1.0: "first item", 0.0: "second item", 0.5: "tie"}[vote["label"]]
    if vote["kind"] == "best_of_k":
        return f"best = item {vote['choice']}"
    if vote["kind"] == "ranking":
        return "ranking" + (" with ties" if len(set(vote["ranks"])) < len(vote["ranks"]) else "")
    return "can't tell"


def report(storage) -> dict:
    """Everything the admin page shows, as plain tables (lists of rows) and numbers."""
    votes, skips, items = storage.votes(), storage.skips(), storage.items()
    by_annotator: dict[str, list[dict]] = defaultdict(list)
    for vote in votes:
        by_annotator[vote["annotator"]].append(vote)
    skip_count = Counter(s["annotator"] for s in skips)
    annotator_rows = []
    for name in sorted(set(by_annotator) | set(skip_count)):
        mine = by_annotator.get(name, [])
        seconds = [v["seconds"] for v in mine]
        annotator_rows.append([name, len(mine), skip_count.get(name, 0),
                               round(statistics.median(seconds), 2) if seconds else None])
    per_item = Counter(v["item_id"] for v in votes)
    item_rows = [[item.id, item.mode, per_item.get(item.id, 0), storage.overlap,
                  "done" if per_item.get(item.id, 0) >= storage.overlap else "open"] for item in items]
    distribution = Counter(label_name(v) for v in votes)
    seconds = [v["seconds"] for v in votes]
    return {
        "votes": len(votes), "items": len(items),
        "items_done": sum(1 for row in item_rows if row[4] == "done"),
        "median_seconds": round(statistics.median(seconds), 2) if seconds else None,
        "annotators": annotator_rows,  # name, votes, skips, median seconds
        "items_table": item_rows,  # item, mode, votes, overlap, status
        "distribution": sorted(distribution.items(), key=lambda kv: -kv[1]),
        "agreement": agreement(votes, storage.overlap),
        "parts": storage.heartbeats(),  # the live loop's parts: {part: {"state", "at"}}
    }


def parts_markdown(parts: dict[str, dict]) -> list[str]:
    """One line per loop part: its last state and when it arrived."""
    lines = []
    for part, heartbeat in parts.items():
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(heartbeat["at"]))
        state = json.dumps(heartbeat["state"], ensure_ascii=False)
        lines.append(f"- **{escape_markdown(part)}** (at {at}): {escape_markdown(state)}")
    return ["", "**Loop parts:**", *lines] if lines else []


def summary_markdown(data: dict) -> str:
    a = data["agreement"]

    def fmt(x):
        return "n/a" if x is None else f"{x}"

    return "\n".join([
        f"**{data['votes']} votes** on {data['items_done']} / {data['items']} fully labelled items; "
        f"median time per vote **{fmt(data['median_seconds'])} s**.",
        "",
        f"- Cohen's kappa (mean over {a['cohens_kappa_pairs']} annotator pairs): {fmt(a['cohens_kappa_mean'])}",
        f"- Fleiss' kappa ({a['fleiss_items']} items at full overlap): {fmt(a['fleiss_kappa'])}",
        f"- Krippendorff's alpha, nominal (pairs, clips, best-of-K): {fmt(a['krippendorff_alpha_nominal'])}",
        f"- Krippendorff's alpha, ordinal (rankings): {fmt(a['krippendorff_alpha_rankings_ordinal'])}",
        *parts_markdown(data.get("parts", {})),
    ])

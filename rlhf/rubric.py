"""The demo's gold rubric: a transparent score for an answer, used by the simulated teacher.

The untuned SmolLM2-135M-Instruct tends to answer at length and in Markdown (lists,
headers, bold). The rubric rewards three properties it does not already satisfy:

    gold = 0.5 * concise + 0.3 * plain_prose + 0.2 * finished

- ``concise``: 1 for answers of at most 40 words, falling linearly to 0 at 120 words.
- ``plain_prose``: 1 minus the share of lines that are Markdown (list items, headers,
  tables, code fences), minus 0.5 if bold/italic markers appear; clipped to [0, 1].
- ``finished``: 1 if the answer ends with terminal punctuation (. ! ? or a closing quote or
  parenthesis after one), 0.5 if it is cut off mid-sentence but has a complete sentence,
  else 0.

All three are plain string checks, so anyone can recompute a label by hand. The score is
in [0, 1]; the simulated teacher compares scores of completions of the same prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONCISE_WORDS = 40
VERBOSE_WORDS = 120
WEIGHTS = {"concise": 0.5, "plain_prose": 0.3, "finished": 0.2}

_MARKDOWN_LINE = re.compile(r"^\s*([-*+•]\s|\d+[.)]\s|#{1,6}\s|\||```)")
_EMPHASIS = re.compile(r"(\*\*|__)\S|\S(\*\*|__)")
_TERMINAL = re.compile(r"[.!?][\"')\]]*\s*$")


@dataclass(frozen=True)
class RubricScore:
    concise: float
    plain_prose: float
    finished: float

    @property
    def total(self) -> float:
        return sum(WEIGHTS[name] * getattr(self, name) for name in WEIGHTS)


def concise_score(text: str) -> float:
    words = len(text.split())
    if words <= CONCISE_WORDS:
        return 1.0
    return max(0.0, 1.0 - (words - CONCISE_WORDS) / (VERBOSE_WORDS - CONCISE_WORDS))


def plain_prose_score(text: str) -> float:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0
    markdown_share = sum(bool(_MARKDOWN_LINE.match(line)) for line in lines) / len(lines)
    penalty = 0.5 if _EMPHASIS.search(text) else 0.0
    return min(1.0, max(0.0, 1.0 - markdown_share - penalty))


def finished_score(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        return 0.0
    if _TERMINAL.search(stripped):
        return 1.0
    return 0.5 if re.search(r"[.!?]\s", stripped) else 0.0


def rubric(text: str) -> RubricScore:
    return RubricScore(concise_score(text), plain_prose_score(text), finished_score(text))


def gold_score(text: str) -> float:
    """The rubric total in [0, 1] (see the module docstring)."""
    return rubric(text).total

"""The gold judge of the demos: a transparent score for an answer to a built-in prompt.

The simulated teacher ranks completions of the same prompt by this score, and the demos
report it as "gold". It must reward answering, not merely saying little: an earlier
style-only rubric (0.5 concise + 0.3 plain + 0.2 finished) gave its maximum to
"Hello there! Thanks for asking! Simple yet amazing!", and PPO learned exactly that.

    gold = 0.30 on_topic + 0.15 task + 0.15 content + 0.10 no_dodge      (substance, 0.70)
         + 0.12 concise  + 0.08 plain_prose + 0.10 finished              (style, 0.30)

Every property is a plain string check in [0, 1] that anyone can recompute by hand.
Words are the whitespace-separated pieces of the answer; sentences are split after
. ! ? and at line breaks. A *content word* is a lower-cased word (letters, digits,
apostrophes; a final plural "s" dropped) that is not a stop word (``STOP_WORDS``), not a
greeting, politeness or hype word (``FILLER_WORDS``: hello, thanks, sure, amazing,
journey, crucial...) and not a word of the prompt itself. A *content sentence* holds at
least one content word; the others ("Thanks for asking!", "Sure!", an emoji, "How about
exploring the water cycle?") say nothing. An answer with fewer than 3 distinct content
words is *content-free* (``is_content_free``): it gets 0 for on_topic, task and
no_dodge, so it keeps at most its style and 2/8 of content, 0.3375.

- ``on_topic`` (0.30): 1 if the answer names the prompt's topic and is not content-free,
  else 0. The topic is named by one of its ``topic_terms`` in
  ``rlhf/data/prompt_parts.jsonl`` (the topic's own words and a few words specific to it,
  e.g. photosynthesis: photosynth*, plant, sunlight, chlorophyll, leaf). A term matches a
  whole word (plural s/es allowed), or any word it begins when it ends in ``*``. The
  largest weight, because an answer about something else is worth less than any answer
  about the topic, however well written: it keeps a long Markdown answer on the topic
  above a short, well-written off-topic one (this needs on_topic > concise + plain_prose
  + finished / 2).
- ``task`` (0.15): the share of the prompt's ask that a content sentence answers. The
  built-in prompts come from eight templates (the most important thing, a tip, a reason,
  a misconception, a history, an explanation for a child, a description, a first step)
  and 20 one-off prompts; each ask has cue groups (``ASK_CUES``, or ``ask_cues`` in the
  data file: "canberra" for the capital of Australia, "366" and a reason for a leap
  year), and the score is the share of groups with a term in a content sentence. "In a
  few sentences" is checked as at least 2 content sentences (too many is the concise
  property's job). A prompt outside the built-in set has no known ask: its task score
  equals its on_topic score.
- ``content`` (0.15): distinct content words / 8, capped at 1. A correct 20-word answer
  has 8 or more; "Hello there! Thanks for asking!" has none.
- ``no_dodge`` (0.10): the share of the answer's words that stand in content sentences
  (0 for a content-free answer): "Sure! X is Y because Z." loses 1 word of 8.
- ``concise`` (0.12): 1 for answers of at most 40 words, falling linearly to 0 at 120.
- ``plain_prose`` (0.08): 1 minus the share of lines that are Markdown (list items,
  headers, tables, code fences), minus 0.5 if bold/italic markers appear; clipped to [0, 1].
- ``finished`` (0.10): 1 if the answer ends with terminal punctuation (. ! ? or a closing
  quote or parenthesis after one), 0.5 if it is cut off but has a complete sentence, else 0.

Why these weights (checked for every built-in prompt in tests/rlhf/test_judge_order.py,
and against hand orders of written answers, docs/gold_judge.md): a correct plain answer
of 20-40 words scores 1.0; a content-free reply at most 0.3375; a well-written off-topic
answer at most 0.70; a long Markdown answer on the topic 0.70-0.80; a correct answer of
60-75 words 0.95-0.97, above the same answer cut off at about 50 words (0.92-0.94),
because finishing (0.10) weighs more than the part of concise (0.12) it loses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib.resources import files

from rlhf.metrics import pairwise_accuracy

CONCISE_WORDS = 40
VERBOSE_WORDS = 120
CONTENT_WORDS_FOR_FULL_SCORE = 8
CONTENT_FREE_BELOW = 3  # fewer distinct content words than this: the answer says nothing
DESCRIBE_MIN_SENTENCES = 2  # "in a few sentences"; the upper end is the concise property's job
# The style-only rubric this judge replaced; kept to show in the judge's check what it got wrong.
STYLE_ONLY_WEIGHTS = {"concise": 0.5, "plain_prose": 0.3, "finished": 0.2}
WEIGHTS = {"on_topic": 0.30, "task": 0.15, "content": 0.15, "no_dodge": 0.10,
           "concise": 0.12, "plain_prose": 0.08, "finished": 0.10}

# Cue groups per templated ask (see the module docstring); a term matches a whole word
# (plural s/es allowed) or, ending in *, any word it begins.
ASK_CUES: dict[str, list[list[str]] | None] = {
    "most_important": [["important", "key", "main", "essential", "crucial", "basic*", "central", "core",
                        "matter*", "remember", "know*", "understand*", "mean*", "because", "critical", "fundamental*",
                        "role", "help*"]],
    "tip": [["tip", "try", "use", "using", "make sure", "start*", "keep", "avoid", "set", "always", "never",
             "should", "remember", "check", "practi*", "don't", "instead", "you", "your"]],
    "reason": [["because", "since", "so", "help*", "let", "lets", "allow*", "enabl*", "matter*", "important",
                "without", "depend*", "provid*", "protect*", "save*", "affect*", "keep*", "need*", "useful",
                "reason", "make", "makes", "support*", "mean*", "feed*", "give*", "benefit*", "improv*",
                "health*", "cause*"]],
    "misconception": [["not", "no", "don't", "doesn't", "isn't", "aren't", "can't", "won't", "didn't", "never",
                       "myth", "misconception*", "actually", "in fact", "really", "think*", "believe*",
                       "assum*", "wrong", "mistak*", "only", "but", "however", "misunderst*", "true"]],
    "history": [["century", "centuries", "ancient", "bc", "bce", "began", "begin*", "first", "invent*",
                 "discover*", "ago", "era", "modern", "today", "since", "later", "histor*", "medieval",
                 "started", "found*", "develop*", "year*", "decade*", "age"]],
    "explain_to_child": [["imagine", "like", "think of", "pretend", "picture", "you", "your", "just as", "as if"]],
    "describe": None,  # at least 2 content sentences
    "first_step": [["start*", "begin*", "first", "read*", "watch*", "book*", "course*", "video*", "class*",
                    "basic*", "practi*", "learn*", "try", "visit*", "step*", "library", "documentar*",
                    "experiment*"]],
}

# Function words: carry no content of their own. Written out (not scikit-learn's list,
# which counts words such as "interest", "fire" and "system" as stop words).
STOP_WORDS = frozenset("""
a an the and or but nor so yet if then than that this these those there here it its it's itself
i me my mine we us our ours you your yours he him his she her hers they them their theirs one ones
is are was were be been being am do does did doing done have has had having get gets got
can could will would shall should may might must also too very just quite rather really much many
more most less least some any all each every both either neither no not only own same such other
another of in on at by for with about against between into through during before after above below
to from up down out off over under again further once as until while because since what which who
whom whose when where why how thing things something anything everything nothing way ways lot lots
kind sort bit like even still ever often always never well i'm i'd i'll i've you're you've you'll
we're we've they're they've he's she's that's there's here's what's let's don't doesn't didn't
isn't aren't wasn't weren't can't won't wouldn't couldn't shouldn't
""".split())

# Greetings, thanks, politeness and hype: words a reply can be made of without saying anything.
FILLER_WORDS = frozenset("""
hello hi hey greetings welcome thanks thank asking asked ask question questions sure certainly
absolutely definitely indeed course okay ok yes yeah wow oh ah happy glad pleasure delighted excited
exciting amazing awesome wonderful fantastic fascinating incredible interesting remarkable beautiful
lovely magic magical marvelous marvellous great good simple simply truly super totally journey
adventure realm world dive delve explore exploring exploration embark enjoy love friend dear topic
answer hope helpful fun important importance crucial vital essential significant key main
""".split())

_MARKDOWN_LINE = re.compile(r"^\s*([-*+•]\s|\d+[.)]\s|#{1,6}\s|\||```)")
_EMPHASIS = re.compile(r"(\*\*|__)\S|\S(\*\*|__)")
_TERMINAL = re.compile(r"[.!?][\"')\]]*\s*$")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


@dataclass(frozen=True)
class PromptParts:
    """What a built-in prompt asks: its topic, the words that name it, and its ask."""

    topic: str
    ask: str
    topic_terms: tuple[str, ...]
    ask_cues: tuple[tuple[str, ...], ...] | None  # None: checked by sentence count ("describe") or unknown


@dataclass(frozen=True)
class RubricScore:
    on_topic: float
    task: float
    content: float
    no_dodge: float
    concise: float
    plain_prose: float
    finished: float

    @property
    def total(self) -> float:
        return sum(WEIGHTS[name] * getattr(self, name) for name in WEIGHTS)


PROPERTIES = tuple(f.name for f in fields(RubricScore))


@lru_cache(maxsize=1)
def _builtin_parts() -> dict[str, PromptParts]:
    text = files("rlhf").joinpath("data/prompt_parts.jsonl").read_text(encoding="utf-8")
    parts = {}
    for line in text.splitlines():
        row = json.loads(line)
        cues = row.get("ask_cues", ASK_CUES.get(row["ask"]))
        parts[row["prompt"]] = PromptParts(row["topic"], row["ask"], tuple(row["topic_terms"]),
                                           None if cues is None else tuple(tuple(group) for group in cues))
    return parts


def prompt_parts(prompt: str) -> PromptParts:
    """The topic and ask of a built-in prompt; for any other prompt, its own content words
    (of 4 letters or more) as topic terms and an unknown ask."""
    known = _builtin_parts().get(prompt.strip())
    if known is not None:
        return known
    terms = tuple(w for w in _content_keys(prompt, exclude=frozenset()) if len(w) >= 4)
    return PromptParts(topic=prompt.strip(), ask="unknown", topic_terms=terms, ask_cues=None)


def _normalise(text: str) -> str:
    return text.lower().replace("\u2019", "'")


def _key(word: str) -> str:
    """A word as compared with others: a possessive 's and a plural s dropped."""
    word = word.removesuffix("'s")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _content_keys(text: str, exclude: frozenset[str]) -> list[str]:
    keys = []
    for word in _WORD.findall(_normalise(text)):
        if word in STOP_WORDS or word in FILLER_WORDS:
            continue
        key = _key(word)
        if key not in exclude and key not in FILLER_WORDS:
            keys.append(key)
    return keys


def _prompt_keys(prompt: str) -> frozenset[str]:
    return frozenset(_key(word) for word in _WORD.findall(_normalise(prompt)))


def term_matches(term: str, text: str) -> bool:
    """A whole word or phrase (plural s/es allowed), or with a final * any word it begins."""
    term = _normalise(term)
    if term.endswith("*"):
        pattern = r"(?<![a-z0-9])" + re.escape(term[:-1])
    else:
        pattern = r"(?<![a-z0-9])" + re.escape(term) + (r"(?:s|es)?(?![a-z0-9])" if term[-1:].isalnum() else "")
    return re.search(pattern, _normalise(text)) is not None


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_BREAK.split(text) if s.strip()]


def content_sentences(text: str, prompt: str) -> list[str]:
    """The sentences that hold at least one content word (see the module docstring)."""
    exclude = _prompt_keys(prompt)
    return [s for s in sentences(text) if _content_keys(s, exclude)]


def content_word_count(text: str, prompt: str) -> int:
    return len(set(_content_keys(text, _prompt_keys(prompt))))


def on_topic_score(text: str, prompt: str) -> float:
    if is_content_free(text, prompt):
        return 0.0
    return float(any(term_matches(term, text) for term in prompt_parts(prompt).topic_terms))


def task_score(text: str, prompt: str) -> float:
    if is_content_free(text, prompt):
        return 0.0
    parts = prompt_parts(prompt)
    said = content_sentences(text, prompt)
    if parts.ask == "describe":
        return float(len(said) >= DESCRIBE_MIN_SENTENCES)
    if parts.ask_cues is None:
        return on_topic_score(text, prompt)
    joined = " ".join(said)
    return sum(any(term_matches(term, joined) for term in group) for group in parts.ask_cues) / len(parts.ask_cues)


def content_score(text: str, prompt: str) -> float:
    return min(1.0, content_word_count(text, prompt) / CONTENT_WORDS_FOR_FULL_SCORE)


def no_dodge_score(text: str, prompt: str) -> float:
    words = len(text.split())
    if words == 0 or is_content_free(text, prompt):
        return 0.0
    return sum(len(s.split()) for s in content_sentences(text, prompt)) / words


def is_content_free(text: str, prompt: str) -> bool:
    return content_word_count(text, prompt) < CONTENT_FREE_BELOW


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


def rubric(text: str, prompt: str) -> RubricScore:
    """Every property of an answer to a prompt (the per-property breakdown of the gold)."""
    return RubricScore(on_topic=on_topic_score(text, prompt), task=task_score(text, prompt),
                       content=content_score(text, prompt), no_dodge=no_dodge_score(text, prompt),
                       concise=concise_score(text), plain_prose=plain_prose_score(text),
                       finished=finished_score(text))


def gold_score(text: str, prompt: str) -> float:
    """The gold of an answer to a prompt, in [0, 1] (see the module docstring)."""
    return rubric(text, prompt).total


# --- The judge's own check: hand-ordered answers (docs/gold_judge.md) -------------------

ANSWER_KINDS = ("good_short", "good_long", "cut_off", "markdown", "off_topic", "content_free")  # hand order, best first


@dataclass(frozen=True)
class CheckedAnswer:
    prompt: str
    kind: str
    hand_rank: int  # 1 = best within its prompt
    answer: str


def hand_check_set() -> list[CheckedAnswer]:
    """Hand-written answers of each kind for several built-in prompts, with their hand order
    (rlhf/data/judge_check.jsonl)."""
    text = files("rlhf").joinpath("data/judge_check.jsonl").read_text(encoding="utf-8")
    return [CheckedAnswer(**json.loads(line)) for line in text.splitlines()]


def style_only_score(text: str) -> float:
    """The replaced rubric: 0.5 concise + 0.3 plain_prose + 0.2 finished."""
    return sum(weight * score for weight, score in
               zip(STYLE_ONLY_WEIGHTS.values(), (concise_score(text), plain_prose_score(text), finished_score(text))))


def hand_order_agreement(answers: list[CheckedAnswer], score) -> tuple[float, int]:
    """Share of within-prompt pairs with different hand ranks that `score(answer, prompt)`
    orders like the hand (equal scores count as wrong), and the number of pairs."""
    first, second, labels = [], [], []
    for i, a in enumerate(answers):
        for b in answers[i + 1:]:
            if a.prompt == b.prompt and a.hand_rank != b.hand_rank:
                first.append(score(a.answer, a.prompt))
                second.append(score(b.answer, b.prompt))
                labels.append(1.0 if a.hand_rank < b.hand_rank else 0.0)
    return pairwise_accuracy(first, second, labels, score_ties="wrong"), len(labels)


def agreement_table(answers: list[CheckedAnswer] | None = None) -> str:
    """A Markdown table: per prompt, the share of hand-ordered pairs each judge orders like the hand."""
    answers = hand_check_set() if answers is None else answers
    judges = {"gold judge": gold_score, "style-only rubric (replaced)": lambda text, _prompt: style_only_score(text)}
    lines = ["| prompt | pairs | " + " | ".join(judges) + " |", "|---|---|" + "---|" * len(judges)]
    groups = [[a for a in answers if a.prompt == prompt] for prompt in dict.fromkeys(a.prompt for a in answers)]
    for group in groups + [answers]:
        cells = [hand_order_agreement(group, judge) for judge in judges.values()]
        name = "**all**" if group is answers else group[0].prompt
        lines.append(f"| {name} | {cells[0][1]} | " + " | ".join(f"{share:.3f}" for share, _ in cells) + " |")
    return "\n".join(lines)

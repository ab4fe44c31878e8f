"""The gold judge, property by property, checked against hand-computed values."""

import json
from importlib.resources import files

import pytest

from rlhf.generation import builtin_prompts
from rlhf.rubric import (
    WEIGHTS,
    concise_score,
    content_sentences,
    content_word_count,
    finished_score,
    gold_score,
    is_content_free,
    no_dodge_score,
    on_topic_score,
    plain_prose_score,
    prompt_parts,
    rubric,
    style_only_score,
    task_score,
    term_matches,
)

WHY_PHOTOSYNTHESIS = "Why do people care about photosynthesis?"


def test_weights_sum_to_one():
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)
    assert WEIGHTS["on_topic"] > WEIGHTS["concise"] + WEIGHTS["plain_prose"] + WEIGHTS["finished"] / 2


def test_concise_score_by_hand():
    assert concise_score("word " * 40) == 1.0
    assert concise_score("word " * 80) == pytest.approx(0.5)  # halfway between 40 and 120 words
    assert concise_score("word " * 130) == 0.0


def test_plain_prose_score_by_hand():
    assert plain_prose_score("Just a sentence.\nAnother one.") == 1.0
    assert plain_prose_score("Intro:\n- one\n- two\n3. three") == pytest.approx(0.25)  # 3 of 4 lines are lists
    assert plain_prose_score("This is **bold** text.") == 0.5
    assert plain_prose_score("## Title\n**Bold**") == 0.0


def test_finished_score_by_hand():
    assert finished_score("It is done.") == 1.0
    assert finished_score('He said "stop!"') == 1.0
    assert finished_score("First sentence. And then the") == 0.5
    assert finished_score("no punctuation at all") == 0.0


def test_term_matching_whole_words_plurals_and_prefixes():
    assert term_matches("bean", "Roast the beans.") and not term_matches("bean", "a beanstalk")
    assert term_matches("photosynth*", "Photosynthetic bacteria") and not term_matches("plant", "a plantation")
    assert term_matches("moon", "the moon's phases") and term_matches("buenos d", '"buenos días"')


def test_content_words_by_hand():
    # prompt words (why, people, care, photosynthesis) and filler (sure, crucial) do not count;
    # content: process, support(s), life, earth -> 4
    text = "Sure! Photosynthesis is a crucial process that supports life on Earth."
    assert content_word_count(text, WHY_PHOTOSYNTHESIS) == 4
    assert content_sentences(text, WHY_PHOTOSYNTHESIS) == ["Photosynthesis is a crucial process that supports life on Earth."]
    assert no_dodge_score(text, WHY_PHOTOSYNTHESIS) == pytest.approx(10 / 11)  # "Sure!" is 1 of 11 words
    assert content_word_count("Hello there! 🌟 Thanks for asking! Simple yet amazing! 🌟", WHY_PHOTOSYNTHESIS) == 0


def test_issue_examples_by_hand():
    # the three "after" samples quoted in the issue
    empty = ("How would you start learning about compound interest?", "Hello there! 🌟 Thanks for asking! Simple yet amazing! 🌟")
    journey = ("How would you start learning about the water cycle?",
               "Let's start our journey into the world of water! How about exploring the water cycle?")
    for prompt, text in (empty, journey):
        score = rubric(text, prompt)
        assert is_content_free(text, prompt)
        assert (score.on_topic, score.task, score.content, score.no_dodge) == (0, 0, 0, 0)
    # the first ends on an emoji after "!", so it is "cut off" with complete sentences: finished 0.5
    assert gold_score(*empty[::-1]) == pytest.approx(0.12 + 0.08 + 0.10 * 0.5)
    assert gold_score(*journey[::-1]) == pytest.approx(0.30)  # style only: 0.12 + 0.08 + 0.10
    # a one-sentence reason: on topic, a reason cue ("supports"), 4 of 8 content words, 10 of 11 words said
    weak = "Sure! Photosynthesis is a crucial process that supports life on Earth."
    assert gold_score(weak, WHY_PHOTOSYNTHESIS) == pytest.approx(0.30 + 0.15 + 0.15 * 0.5 + 0.10 * 10 / 11 + 0.30)
    full = ("Plants use sunlight, water and carbon dioxide to make sugar and release oxygen, so photosynthesis "
            "feeds almost every food chain and gives us the air we breathe.")
    assert gold_score(full, WHY_PHOTOSYNTHESIS) == pytest.approx(1.0)


def test_task_by_ask():
    tip = "Give me one practical tip about sleep."
    assert task_score("Keep a fixed wake-up time so your body clock settles.", tip) == 1.0
    assert task_score("Sleep happens at night in mammals and birds alike.", tip) == 0.0
    describe = "Describe the water cycle in a few sentences."
    assert task_score("Water evaporates from the sea and rises.", describe) == 0.0  # one content sentence
    assert task_score("Water evaporates from the sea. It falls again as rain.", describe) == 1.0
    leap = "How many days are in a leap year, and why?"  # two cue groups: "366" and a reason
    assert task_score("A leap year has 366 days: February gets a 29th.", leap) == 0.5  # no reason given
    assert task_score("A leap year has 366 days because Earth's orbit takes about 365.25 days.", leap) == 1.0


def test_on_topic_needs_the_topic_and_some_content():
    prompt = "Explain volcanoes to a ten-year-old."
    assert on_topic_score("Magma rises through cracks and bursts out as lava.", prompt) == 1.0
    assert on_topic_score("Your heart pumps blood through every part of your body.", prompt) == 0.0
    assert on_topic_score("Volcanoes are super cool! Wow!", prompt) == 0.0  # names it, says nothing


def test_unknown_prompt_uses_its_own_words():
    parts = prompt_parts("Tell me about lighthouses and their keepers.")
    assert parts.ask == "unknown" and set(parts.topic_terms) == {"tell", "lighthouse", "keeper"}
    text = "Lighthouse keepers trimmed wicks and wound clockwork every night to keep ships off the rocks."
    assert rubric(text, "Tell me about lighthouses and their keepers.").task == 1.0  # = on_topic


def test_every_builtin_prompt_has_parts_and_its_topic_names_itself():
    rows = [json.loads(line) for line in files("rlhf").joinpath("data/prompt_parts.jsonl").read_text().splitlines()]
    assert [row["prompt"] for row in rows] == builtin_prompts()
    assert sum(row["ask"] == "own" for row in rows) == 18
    for row in rows:
        if row["ask"] not in ("own", "tip"):
            assert any(term_matches(term, row["topic"]) for term in row["topic_terms"]), row["topic"]


def test_style_only_score_is_the_replaced_rubric():
    text = "Intro:\n- one\n- two\n- three"  # 7 words, 3/4 markdown lines, no sentence end anywhere
    assert style_only_score(text) == pytest.approx(0.5 * 1.0 + 0.3 * 0.25 + 0.2 * 0.0)

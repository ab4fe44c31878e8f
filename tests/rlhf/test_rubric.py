"""The demo's gold rubric, checked against hand-computed values."""

import pytest

from rlhf.rubric import concise_score, finished_score, gold_score, plain_prose_score, rubric


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


def test_gold_score_combines_weights():
    text = "Intro:\n- one\n- two\n- three"  # 7 words, 3/4 markdown lines, no sentence end anywhere
    assert rubric(text).total == pytest.approx(0.5 * 1.0 + 0.3 * 0.25 + 0.2 * 0.0)
    assert gold_score("A short, plain, finished answer.") == pytest.approx(1.0)

"""The judge's own check: hand orders it must reproduce, and every built-in prompt.

1. Hand-written answers of six kinds for nine built-in prompts (rlhf/data/judge_check.jsonl),
   ordered by hand: good short > good long > cut off > Markdown > off-topic > content-free.
   The judge must reproduce each prompt's order exactly; the replaced style-only rubric
   agrees on 59 of 135 pairs (docs/gold_judge.md prints the table).
2. For every one of the 233 built-in prompts: a correct plain 20-40-word answer built from
   the prompt's topic and ask scores 1.0, above a long Markdown answer on the same topic
   (at most 0.75) and above content-free replies (at most 0.3375).
"""

import pytest

from rlhf.generation import builtin_prompts
from rlhf.rubric import (
    ANSWER_KINDS,
    agreement_table,
    gold_score,
    hand_check_set,
    hand_order_agreement,
    is_content_free,
    prompt_parts,
    rubric,
    style_only_score,
)

CHECKS = hand_check_set()
CHECKED_PROMPTS = list(dict.fromkeys(a.prompt for a in CHECKS))

# A correct plain answer per templated ask, from the topic alone (20-40 words).
GOOD_BY_ASK = {
    "most_important": "The key fact about {topic} is easy to state: small daily choices add up over years, so steady "
                      "practice and careful notes matter more than any single clever trick.",
    "tip": "Try this with {topic}: set aside ten minutes each morning, write down one new fact in a notebook, and "
           "review the notebook every Sunday so the details stick.",
    "reason": "People care about {topic} because it shapes daily life: it affects health, money and the natural "
              "world, and understanding it helps families make better choices.",
    "misconception": "Many people think {topic} is only for experts, but that is wrong: the basic ideas fit on one "
                     "page, and anyone can learn them with a good book and steady practice.",
    "history": "Interest in {topic} began centuries ago with scholars who recorded careful observations; printed "
               "books spread those ideas widely, and modern research refined them with measurement.",
    "explain_to_child": "Imagine {topic} is like a big puzzle: each piece is a small idea, and when you fit the "
                        "pieces together you can see the whole picture clearly.",
    "describe": "{Topic} is a subject with a long past and many practical uses. Experts study it with careful "
                "measurement and clear models. Beginners can learn the basics from a short book.",
    "first_step": "I would start by reading a short beginner's book about {topic}, then watch a few lectures online "
                  "and keep a notebook of questions to check with an expert later.",
}

# The one-off prompts, answered by hand (20-40 words).
GOOD_OWN = {
    "Write a one-sentence thank-you note to a teacher.":
        "Dear Mrs Patel, thank you for the patience you showed every morning in class; your clear lessons and kind "
        "notes turned chemistry from my worst subject into my favourite one this year.",
    "Suggest a name for a small bakery.":
        'Call it "Rise and Shine Bakery": the name promises fresh bread at dawn, it is easy to remember, and it fits '
        "a small shop where neighbours stop for warm rolls before work.",
    "What should I pack for a day hike?":
        "Pack two litres of water, a few snacks, a paper map, sunscreen, a hat, a light rain jacket and a small "
        "first aid kit, and wear boots that are already broken in.",
    "How do I make a cup of tea?":
        "Boil fresh water, pour it over a tea bag in a warm mug, and let it steep for three to five minutes. Remove "
        "the bag, then add milk or lemon if you like.",
    "Give me a short motivational sentence for a Monday.":
        "This Monday is a fresh start: pick one task that matters, finish it before lunch, and let that small win "
        "carry you through the rest of the week.",
    "What is 15 percent of 80?":
        "Fifteen percent of 80 is 12. One quick way: ten percent of 80 is 8, five percent is half of that, 4, and 8 "
        "plus 4 gives 12.",
    "Translate 'good morning' into Spanish and French.":
        'In Spanish, good morning is "buenos días", and in French it is "bonjour". Both are used until about noon, '
        'when Spanish speakers switch to "buenas tardes".',
    "Recommend a hobby for someone who likes being outdoors.":
        "Try hiking: it gets you into nature, costs little beyond good shoes, and local trails let you start with an "
        "easy hour and build up to full-day walks in the hills.",
    "How can I keep houseplants alive?":
        "Water only when the top two centimetres of soil feel dry, give each plant the light its label asks for, "
        "and use pots with drainage holes so the roots never sit in water.",
    "What is the capital of Australia?":
        "The capital of Australia is Canberra, not Sydney. It was chosen in 1908 as a compromise between Sydney and "
        "Melbourne, and Parliament has met there since 1927.",
    "Write a short apology for arriving late to a meeting.":
        "I'm sorry for arriving late to our meeting this morning; my train was delayed, and I will leave earlier "
        "next time so I don't waste anyone's time again.",
    "How do I remove a coffee stain from a shirt?":
        "Blot the stain at once, rinse it from the back with cold water, then rub in a little liquid detergent, "
        "leave it for ten minutes and wash the shirt as usual.",
    "Describe the color blue to someone who cannot see.":
        "Blue feels like cool water on your skin or a calm breath of fresh morning air: quiet, clean and peaceful, "
        "the opposite of the warmth you feel from a fire.",
    "What is a healthy breakfast?":
        "A healthy breakfast combines protein and fibre, for example porridge made with milk, topped with berries "
        "and a spoon of nuts, or eggs on wholegrain toast with a piece of fruit.",
    "How many days are in a leap year, and why?":
        "A leap year has 366 days instead of 365. Earth takes about 365.25 days to orbit the Sun, so adding "
        "February 29 every four years keeps the calendar in step with the seasons.",
    "Tell me a fun fact about octopuses.":
        "An octopus has three hearts and blue blood; two hearts pump blood through the gills, and the third stops "
        "beating while it swims, which is why octopuses prefer crawling.",
    "What is the difference between weather and climate?":
        "Weather is what the air is doing today or this week: rain, sun, wind. Climate is the average pattern of "
        "weather in a place over thirty years or more.",
    "Give me a tip for writing clear emails.":
        'Put the request in the first sentence and in the subject line, for example "Approve budget by Friday", '
        "then keep the rest to three short paragraphs with one idea each.",
    "How do I calm down before an exam?":
        "Try slow breathing: breathe in for four counts, hold for four, and breathe out for six, repeated for two "
        "minutes; it slows your heart rate and quiets nervous thoughts before the test.",
    "Why is the sky blue?":
        "Sunlight contains every colour, and air molecules scatter short blue wavelengths much more than long red "
        "ones, so blue light reaches our eyes from every part of the sky.",
}


def good_answer(prompt: str) -> str:
    if prompt in GOOD_OWN:
        return GOOD_OWN[prompt]
    topic = prompt_parts(prompt).topic
    return GOOD_BY_ASK[prompt_parts(prompt).ask].format(topic=topic, Topic=topic[0].upper() + topic[1:])


def markdown_answer(prompt: str) -> str:
    """The untuned model's habit: a header, bold, a long list, cut off at the token limit."""
    topic = prompt_parts(prompt).topic
    good = good_answer(prompt)
    return (f"## All About {topic}\n\n**{topic}** is a **fascinating subject** with a long history! Here are the key "
            f"points you should know:\n\n1. **Overview**: {good}\n2. **Details**: Experts have studied {topic} for "
            "many years, publishing books, articles and videos that explain each idea step by step.\n"
            "3. **Practice**: Beginners often learn fastest by trying small examples themselves and keeping notes.\n"
            "4. **Common mistakes**: Many people rush, skip the basics and then lose interest after a few weeks.\n"
            f"5. **Resources**: Libraries, museums and online courses all offer material on {topic}.\n\n"
            "### Conclusion\nIn summary, understanding this subject takes patience, curiosity and regular practice, "
            "and it rewards everyone who keeps going with a deeper appreciation of how the")


def content_free_answers(prompt: str) -> list[str]:
    topic = prompt_parts(prompt).topic
    return [f"Hello there! 🌟 Thanks for asking about {topic}! It is such an amazing topic! 🌟",
            "Hello there! 🌟 Thanks for asking! Simple yet amazing! 🌟",
            f"Let's start our journey into the world of {topic}! How about exploring {topic}?",
            "Sure! Great question! I'm so happy to help! 😊"]


@pytest.mark.parametrize("prompt", CHECKED_PROMPTS)
def test_judge_reproduces_the_hand_order(prompt):
    answers = sorted((a for a in CHECKS if a.prompt == prompt), key=lambda a: a.hand_rank)
    assert [a.kind for a in answers] == list(ANSWER_KINDS)
    scores = [gold_score(a.answer, a.prompt) for a in answers]
    assert all(better > worse for better, worse in zip(scores, scores[1:])), dict(zip(ANSWER_KINDS, scores))


def test_check_set_covers_every_ask_and_word_ranges():
    assert len(CHECKED_PROMPTS) == 9 and len(CHECKS) == 54
    assert {prompt_parts(p).ask for p in CHECKED_PROMPTS} == {
        "most_important", "tip", "reason", "misconception", "history", "explain_to_child", "describe",
        "first_step", "own"}
    words = {kind: [len(a.answer.split()) for a in CHECKS if a.kind == kind] for kind in ANSWER_KINDS}
    assert 20 <= min(words["good_short"]) and max(words["good_short"]) <= 40
    assert 60 <= min(words["good_long"]) and max(words["good_long"]) <= 75
    assert min(words["markdown"]) >= 120
    assert all(is_content_free(a.answer, a.prompt) for a in CHECKS if a.kind == "content_free")


def test_agreement_with_the_hand_order():
    assert hand_order_agreement(CHECKS, gold_score) == (1.0, 135)
    share, pairs = hand_order_agreement(CHECKS, lambda text, _prompt: style_only_score(text))
    assert (round(share * pairs), pairs) == (59, 135)  # the replaced rubric puts content-free replies first
    table = agreement_table()
    assert table.splitlines()[-1] == "| **all** | 135 | 1.000 | 0.437 |"


@pytest.mark.parametrize("prompt", builtin_prompts())
def test_every_builtin_prompt_prefers_a_correct_plain_answer(prompt):
    good = good_answer(prompt)
    assert 20 <= len(good.split()) <= 40
    assert rubric(good, prompt).total == pytest.approx(1.0), rubric(good, prompt)
    markdown = markdown_answer(prompt)
    assert len(markdown.split()) >= 120
    assert gold_score(markdown, prompt) <= 0.75 < gold_score(good, prompt)
    for reply in content_free_answers(prompt):
        assert is_content_free(reply, prompt)
        # style (0.30) plus at most 2/8 of content: 0.3375
        assert gold_score(reply, prompt) <= 0.3375

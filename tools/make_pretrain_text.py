"""Writes ppo/data/pretrain.txt and ppo/data/pretrain_heldout.txt: English prose paragraphs
from Python's own documentation topics (`pydoc_data.topics`, PSF licence), the ptx text.

Keeps paragraphs that read as prose: no code (no leading spaces, no '>>>'), mostly
letters, at least 20 words. Every 10th paragraph goes to the held-out file.
Run: .venv/bin/python tools/make_pretrain_text.py
"""

import re
from pathlib import Path

from pydoc_data.topics import topics


def prose_paragraphs(text: str):
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if not lines or any(line.startswith((" ", "\t")) for line in lines) or ">>>" in block:
            continue
        paragraph = " ".join(line.strip() for line in lines)
        words = paragraph.split()
        letters = sum(ch.isalpha() or ch.isspace() for ch in paragraph) / max(len(paragraph), 1)
        if len(words) >= 20 and letters > 0.9:
            yield paragraph


paragraphs = sorted({p for name in sorted(topics) for p in prose_paragraphs(topics[name])})
train = [p for i, p in enumerate(paragraphs) if i % 10]
heldout = [p for i, p in enumerate(paragraphs) if i % 10 == 0]
out = Path(__file__).resolve().parent.parent / "ppo" / "data"
out.mkdir(parents=True, exist_ok=True)
header = "# English prose from Python's documentation topics (pydoc_data.topics), PSF licence.\n"
(out / "pretrain.txt").write_text(header + "\n\n".join(train) + "\n")
(out / "pretrain_heldout.txt").write_text(header + "\n\n".join(heldout) + "\n")
print(f"{len(train)} training and {len(heldout)} held-out paragraphs, "
      f"{sum(len(p.split()) for p in train)} and {sum(len(p.split()) for p in heldout)} words")

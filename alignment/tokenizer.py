"""Word-level tokenizers built in memory from a task's own text (no downloads).

The small task models align-search trains, and every test, use these: each word,
punctuation mark, newline and digit is one token (so "3.40" is "3", ".", "4", "0", as the
LLaMA tokenizer splits prices in the paper), spaces are dropped, and offsets map every token
back to its characters, so named positions resolve exactly as with any fast tokenizer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from causal_models import Task

PIECES = r"\d|\n|[A-Za-z]+|[^\sA-Za-z\d]"
SPECIALS = ("<pad>", "<unk>", "<bos>")


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct tokens of `texts`, in first-seen order."""
    seen: dict[str, None] = {}
    for text in texts:
        for piece in re.findall(PIECES, text):
            seen.setdefault(piece, None)
    return list(seen)


def word_level_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A fast tokenizer over `words` (digits 0-9 always included), left padding, a BOS token."""
    vocabulary = {token: i for i, token in enumerate(SPECIALS)}
    for word in [*map(str, range(10)), *words]:
        vocabulary.setdefault(word, len(vocabulary))
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(PIECES), behavior="isolated"),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", padding_side="left")


def task_tokenizer(task: Task, templates: Iterable[str] | None = None, samples: int = 300,
                   seed: int = 0) -> PreTrainedTokenizerFast:
    """A word-level tokenizer covering every template of `task` (or the given ones) and its answers."""
    rng = random.Random(seed)
    names = list(templates) if templates is not None else list(task.templates)
    texts: list[str] = []
    for name in names:
        template = task.template(name)
        texts.extend(template.answers.values())
        for model in task.causal_models.values():
            sampler = model.sample_inputs or task.sample_inputs
            texts.extend(template.render(sampler(rng)).text for _ in range(samples // len(task.causal_models) + 1))
    return word_level_tokenizer(sorted(words_of(texts)))

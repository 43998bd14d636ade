"""A variable planted in k of the d dimensions of its site, for positive controls of Boundless DAS.

The task: "{offset} {f0} {f1} {f2} {value} =" -> (value + offset) mod m. The model is hand-set, not
trained, so where everything lives is known exactly:

- embeddings: the `value` word i (2k words) is +-e_(i // 2) in a random k-dimensional subspace
  of the d-dimensional residual stream; the `offset` word j (4 words) is the j-th of 4 other
  random orthonormal directions; each filler word is a random vector in the rest of the space
  (it varies between prompts and matters to nothing);
- `model.layers.0` passes each token's own vector through; `model.layers.1` sums the vectors
  of the prompt so far (a causal "attention" with equal weights); `model.layers.2` passes
  through;
- the head decodes `value` from the k-dimensional subspace and `offset` from its 4 directions
  (softmax over the templates) and answers log P((value + offset) mod m).

So the output of layer 1 at the last token carries `value` in exactly k dimensions, beside
`offset`, which also decides the answer: a full swap there gives (value_s + offset_s), wrong
whenever the offsets differ, and only a subspace that holds the k dimensions (and not the
offset's) is right on every pair. The output of layer 0 at the offset token carries the
offset and not the value (a wrong site: the best any intervention there can do is nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from alignment.models import LoadedModel
from alignment.rotations import random_orthogonal
from alignment.tokenizer import word_level_tokenizer
from causal_models import CausalModel, FieldChar, PromptTemplate, Task, Variable

OFFSETS = ("north", "south", "east", "west")
FILLERS = ("cat", "dog", "cow", "pig", "hen", "fox", "owl", "elk", "bee", "ant", "yak", "emu")
VALUE_WORDS = ("red", "blue", "green", "pink", "gray", "gold", "teal", "navy")
RIGHT_SITE = (1, "last")      # (layer, position) that carries `value` in k dimensions
WRONG_SITE = (0, "offset")    # carries the offset, not the value


def subspace_task(k: int) -> Task:
    """The task for a value with 2k states (answers are the digits 0 .. m - 1, m = max(2, 2k))."""
    values = VALUE_WORDS[:2 * k]
    modulus = len(values)
    model = CausalModel("planted_subspace", [
        Variable("word", values), Variable("offset", OFFSETS), *(Variable(f"f{i}", FILLERS) for i in range(3)),
        Variable("value", tuple(range(modulus)), ("word",), values.index),
        Variable("answer", tuple(range(modulus)), ("value", "offset"),
                 lambda value, offset: (value + OFFSETS.index(offset)) % modulus),
    ], output="answer", default_variables=("value",))
    template = PromptTemplate("plain", "{offset} {f0} {f1} {f2} {word} =",
                              lambda x: {name: x[name] for name in ("offset", "f0", "f1", "f2", "word")},
                              {"offset": FieldChar("offset")}, {i: str(i) for i in range(modulus)})
    return Task(f"planted_subspace_k{k}", f"a value planted in {k} dimensions",
                lambda rng: {"word": rng.choice(values), "offset": rng.choice(OFFSETS),
                             **{f"f{i}": rng.choice(FILLERS) for i in range(3)}},
                {"planted_subspace": model}, {"plain": template}, "planted_subspace", "plain")


K1, K4 = subspace_task(1), subspace_task(4)


class _PassThrough(nn.Module):
    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return hidden


class _CausalSum(nn.Module):
    """Each position holds the sum of the token vectors up to it (padding contributes nothing)."""

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if attention_mask is not None:
            hidden = hidden * attention_mask[..., None].to(hidden.dtype)
        return hidden.cumsum(dim=1)


@dataclass
class _Output:
    logits: Tensor


class _Inner(nn.Module):
    """`model.embed_tokens` and `model.layers`, where alignment.sites looks for a Llama's layers."""

    def __init__(self, embed_tokens: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.layers = nn.ModuleList([_PassThrough(), _CausalSum(), _PassThrough()])


class PlantedSubspaceLM(nn.Module):
    """A hand-set causal LM whose layer-1 output at the last token holds `value` in k of `hidden` dims.

    Args:
        tokenizer: the task's word-level tokenizer.
        k: dimensions of the value's subspace (the value has 2k states).
        hidden: d, the residual-stream width.
        sharpness: the decoders' inverse temperature (answers are confident, not saturated).
    """

    def __init__(self, tokenizer: Any, k: int, hidden: int, seed: int = 0, sharpness: float = 8.0):
        super().__init__()
        if hidden < k + len(OFFSETS) + 1:
            raise ValueError(f"hidden must be >= {k + len(OFFSETS) + 1} for k = {k}, got {hidden}")
        self.k, self.hidden_size, self.sharpness = k, hidden, sharpness
        basis = random_orthogonal(hidden, seed=seed)
        value_axes, offset_axes, rest = basis[:, :k], basis[:, k:k + len(OFFSETS)], basis[:, k + len(OFFSETS):]
        signs = torch.tensor([1.0, -1.0]).repeat(k)
        self.register_buffer("value_templates", value_axes.repeat_interleave(2, dim=1) * signs)   # (d, 2k)
        self.register_buffer("offset_templates", offset_axes.clone())                           # (d, 4)
        vocab = tokenizer.get_vocab()
        table = torch.zeros(len(vocab), hidden)
        for i, word in enumerate(VALUE_WORDS[:2 * k]):
            table[vocab[word]] = self.value_templates[:, i]
        for j, word in enumerate(OFFSETS):
            table[vocab[word]] = offset_axes[:, j]
        generator = torch.Generator().manual_seed(seed + 1)
        for word in FILLERS:
            direction = rest @ torch.randn(rest.shape[1], generator=generator)
            table[vocab[word]] = direction / direction.norm()
        self.model = _Inner(nn.Embedding.from_pretrained(table))
        self.answer_ids = [vocab[str(i)] for i in range(max(2, 2 * k))]
        self.vocab_size = len(vocab)
        self.eval().requires_grad_(False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                use_cache: bool = False, logits_to_keep: Tensor | int | None = None) -> _Output:
        hidden = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            hidden = layer(hidden, attention_mask=attention_mask)
        if isinstance(logits_to_keep, Tensor):
            hidden = hidden[:, logits_to_keep]
        return _Output(self._head(hidden))

    def _head(self, hidden: Tensor) -> Tensor:
        """(B, T, vocab): log P(answer) on the answer tokens, -30 elsewhere."""
        value = torch.softmax(self.sharpness * hidden @ self.value_templates, dim=-1)      # (B, T, 2k)
        offset = torch.softmax(self.sharpness * hidden @ self.offset_templates, dim=-1)    # (B, T, 4)
        modulus = len(self.answer_ids)
        joint = value[..., :, None] * offset[..., None, :]                                  # (B, T, 2k, 4)
        sums = (torch.arange(value.shape[-1])[:, None] + torch.arange(len(OFFSETS))[None, :]) % modulus
        answer = torch.zeros(*hidden.shape[:-1], modulus, dtype=hidden.dtype, device=hidden.device)
        answer = answer.index_add(-1, sums.flatten().to(hidden.device), joint.flatten(-2))
        logits = torch.full((*hidden.shape[:-1], self.vocab_size), -30.0, dtype=hidden.dtype, device=hidden.device)
        logits[..., self.answer_ids] = answer.clamp(min=1e-12).log()
        return logits


def planted_subspace_model(k: int, hidden: int, seed: int = 0) -> LoadedModel:
    """The hand-set model and its tokenizer for `subspace_task(k)`."""
    words = [*VALUE_WORDS[:2 * k], *OFFSETS, *FILLERS, "="]
    tokenizer = word_level_tokenizer(words)
    return LoadedModel(PlantedSubspaceLM(tokenizer, k, hidden, seed), tokenizer, f"planted-k{k}-d{hidden}")

import pytest
import torch

from alignment.prompts import PositionError, build_prompt_table
from causal_models import get_task

TASK = get_task("price_tagging")


def table_for(tokenizer, inputs_and_templates):
    prompts = [TASK.template(t).render(x) for x, t in inputs_and_templates]
    names = list(TASK.template("compact").position_names)
    return prompts, build_prompt_table(tokenizer, [p.text for p in prompts], [p.positions for p in prompts], names)


def test_named_positions_resolve_under_left_padding_and_different_lengths(price_tokenizer):
    inputs = {"lower": 130, "upper": 855, "amount": 340}
    prompts, table = table_for(price_tokenizer, [(inputs, "compact"), (inputs, "compact_prefix_frogs")])
    assert table.lengths[0] < table.lengths[1]
    rows = torch.tensor([0, 1])
    for name, token in (("amount_first_digit", "3"), ("amount_last_digit", "0"), ("amount_dollars", "dollars"),
                        ("response_colon", ":"), ("last", "\n")):
        index = table.token_index(name, rows)
        assert [price_tokenizer.convert_ids_to_tokens(int(table.input_ids[r, i])) for r, i in zip(rows, index)] \
            == [token, token]
    assert (table.attention_mask[0, : table.seq_len - int(table.lengths[0])] == 0).all()
    torch.testing.assert_close(table.position_ids[0, -int(table.lengths[0]):], torch.arange(int(table.lengths[0])))


def test_integer_positions_count_real_tokens(price_tokenizer):
    inputs = {"lower": 130, "upper": 855, "amount": 340}
    _, table = table_for(price_tokenizer, [(inputs, "compact"), (inputs, "compact_prefix_game")])
    rows = torch.tensor([0, 1])
    assert table.token_index("-1", rows).tolist() == [table.seq_len - 1] * 2
    first = table.token_index("0", rows)
    assert first.tolist() == [table.seq_len - int(table.lengths[0]), 0]
    assert table.token_index("-2", rows).tolist() == [table.seq_len - 2] * 2
    with pytest.raises(PositionError, match="position 99 must be within the"):
        table.token_index("99", rows)


def test_a_missing_position_names_the_prompt(price_tokenizer):
    texts = ["between 1.00 and 5.00 dollars", "no amount here"]
    table = build_prompt_table(price_tokenizer, texts, [{"x": 8}, {}], ["x"])
    with pytest.raises(PositionError, match="prompt 1 \\('no amount here'\\) has none"):
        table.token_index("x", torch.tensor([0, 1]))
    with pytest.raises(PositionError, match="position must be one of \\['x'\\] or an integer"):
        table.token_index("y", torch.tensor([0]))


def test_the_same_table_is_tokenized_once_per_process(price_tokenizer, monkeypatch):
    import alignment.prompts as prompts

    inputs = {"lower": 130, "upper": 855, "amount": 340}
    calls = []
    tokenize = prompts._tokenize
    monkeypatch.setattr(prompts, "_tokenize", lambda *a: calls.append(a) or tokenize(*a))
    _, first = table_for(price_tokenizer, [(inputs, "compact"), (inputs, "compact_prefix_frogs")])
    _, again = table_for(price_tokenizer, [(inputs, "compact"), (inputs, "compact_prefix_frogs")])
    assert again is first and len(calls) == 1
    _, other = table_for(price_tokenizer, [(inputs, "compact")])  # other prompts: a new table
    assert other is not first and len(other) == 1 and len(calls) == 2
    _, back = table_for(price_tokenizer, [(inputs, "compact"), (inputs, "compact_prefix_frogs")])
    assert back is not first and torch.equal(back.input_ids, first.input_ids) and len(calls) == 3


def reference_table(tokenizer, texts, positions, names):
    """The table built one prompt and one token at a time: the definition `build_prompt_table` computes whole."""
    encoded = [tokenizer(text, return_offsets_mapping=True, add_special_tokens=True) for text in texts]
    seq_len = max(len(e["input_ids"]) for e in encoded)
    ids, named = [], []
    for e, where in zip(encoded, positions):
        pad = seq_len - len(e["input_ids"])
        ids.append([None] * pad + e["input_ids"])
        row = []
        for name in names:
            if name not in where:
                row.append(-1)
                continue
            covering = [i for i, (a, b) in enumerate(e["offset_mapping"]) if a != b and a <= where[name] < b]
            before = [i for i, (a, b) in enumerate(e["offset_mapping"]) if a != b and b <= where[name]]
            row.append(pad + (covering[0] if covering else before[-1]))
        named.append(row)
    return ids, named


def test_the_whole_table_equals_the_prompt_by_prompt_definition(price_tokenizer):
    """Random prompts of the task's words with random characters named (inside words, on the spaces a word-level
    tokenizer drops, past the end), some names missing from some prompts: the same ids, padding and tokens."""
    import random

    rng = random.Random(0)
    words = ["between", "and", "dollars", "1.00", "5.25", "9.99", "Yes", "No", ":", "\n"]
    texts, positions = [], []
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        texts.append(text)
        positions.append({name: rng.randrange(1, len(text) + 3) for name in ("a", "b", "c") if rng.random() < 0.8})
    texts[0], positions[0] = "Yes", {"a": 1}  # a one-token prompt, the longest padding
    table = build_prompt_table(price_tokenizer, texts, positions, ["a", "b", "c"])
    ids, named = reference_table(price_tokenizer, texts, positions, ["a", "b", "c"])
    assert table.named.tolist() == named
    real = table.attention_mask.bool()
    assert [[t for t, keep in zip(row, mask) if keep] for row, mask in zip(table.input_ids.tolist(), real.tolist())] \
        == [[t for t in row if t is not None] for row in ids]
    assert real.tolist() == [[t is not None for t in row] for row in ids]
    assert table.lengths.tolist() == real.sum(dim=1).tolist()


def test_a_character_before_every_token_is_an_error_naming_the_prompt(price_tokenizer):
    with pytest.raises(PositionError, match="position 'x' \\(character 0\\) is not covered by any token of ' Yes'"):
        build_prompt_table(price_tokenizer, ["Yes", " Yes"], [{"x": 0}, {"x": 0}], ["x"])

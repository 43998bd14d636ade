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

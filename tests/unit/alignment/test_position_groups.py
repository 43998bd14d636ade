"""A position group ("amount_first_digit+last") edits exactly its tokens, each from the same token of its source."""

import pytest
import torch

from alignment.interventions import build_intervention
from alignment.prompts import PositionError
from tests.unit.alignment.test_frozen_paths import interchange_for

GROUP = ("amount_first_digit", "last")


def spied_edits(interchange, pairs, monkeypatch):
    """Run the plain path, recording the site's hidden states before and after the edit."""
    frozen = interchange.frozen
    seen = []
    original = frozen.plain_logits

    def spy(rows, edit=None, positions=None):
        def recorded(hidden, positions):
            edited = edit(hidden, positions)
            seen.append((hidden.detach().clone(), edited.detach().clone()))
            return edited
        return original(rows, recorded, positions)

    monkeypatch.setattr(frozen, "plain_logits", spy)
    with torch.no_grad():
        interchange.logits(pairs, plain=True)
    return seen[0]


@pytest.mark.parametrize("component", ["block", "mlp"])
def test_a_group_full_swap_edits_exactly_its_tokens(tiny_price, monkeypatch, component):
    interchange, pairs = interchange_for(tiny_price, 0, "+".join(GROUP), component=component)
    interchange.intervention = build_intervention("full_swap", interchange.frozen.hidden_size(), 2)
    before, after = spied_edits(interchange, pairs, monkeypatch)
    table, rows = interchange.frozen.table, torch.arange(len(pairs))
    inside = torch.zeros(before.shape[:2], dtype=torch.bool)
    for member, column in zip(GROUP, range(len(GROUP))):
        base_tokens = table.token_index(member, pairs.pairs.base_rows)
        assert (pairs.base_positions[:, column] == base_tokens).all()
        inside[rows, base_tokens] = True
        # each group token takes the site's output at the same named token of the active variable's source
        variable = pairs.pairs.active.int().argmax(dim=1)
        source_rows = pairs.pairs.source_rows[rows, variable]
        expected = interchange.frozen.plain_vectors(source_rows, table.token_index(member, source_rows))
        torch.testing.assert_close(after[rows, base_tokens], expected)
    torch.testing.assert_close(after[~inside], before[~inside], atol=0, rtol=0)


def test_a_group_full_swap_equals_the_single_swaps_applied_together(tiny_price):
    """The group's logits equal one forward pass with both single-position swaps applied (two edits in sequence)."""
    group, pairs = interchange_for(tiny_price, 0, "+".join(GROUP))
    group.intervention = build_intervention("full_swap", group.frozen.hidden_size(), 2)
    singles = []
    for member in GROUP:
        single, single_pairs = interchange_for(tiny_price, 0, member)
        single.intervention = group.intervention
        singles.append((single, single_pairs))
    frozen, batch = group.frozen, pairs.pairs
    edits = [edit_of(single, single_pairs) for single, single_pairs in singles]

    def both(hidden, positions):
        for edit, own_positions in edits:
            hidden = edit(hidden, own_positions)
        return hidden

    with torch.no_grad():
        expected = frozen.plain_logits(batch.base_rows, both)
        torch.testing.assert_close(group.logits(pairs), expected, atol=1e-6, rtol=1e-5)
        single_only = singles[0][0].logits(singles[0][1])
    assert not torch.allclose(single_only, expected, atol=1e-4)  # the second token's swap matters


def edit_of(interchange, pairs):
    """The edit function an Interchange applies and the positions it edits, captured from its plain path."""
    captured = []
    frozen = interchange.frozen
    original = frozen.plain_logits
    frozen.plain_logits = lambda rows, edit=None, positions=None: (captured.append((edit, positions))
                                                                   or original(rows, edit, positions))
    try:
        interchange.logits(pairs, plain=True)
    finally:
        del frozen.plain_logits
    return captured[0]


def test_a_boundless_group_applies_one_rotation_and_boundary_at_each_token(tiny_price, monkeypatch):
    interchange, pairs = interchange_for(tiny_price, 1, "+".join(GROUP))
    before, after = spied_edits(interchange, pairs, monkeypatch)
    swap, frozen, batch = interchange.intervention, interchange.frozen, pairs.pairs
    rows = torch.arange(len(pairs))
    with torch.no_grad():
        for column, member in enumerate(GROUP):
            tokens = pairs.base_positions[:, column]
            sources = torch.zeros(len(pairs), 2, before.shape[-1])
            for variable in range(2):
                active = batch.active[:, variable]
                source_rows = batch.source_rows[active, variable]
                tokens_of_source = frozen.table.token_index(member, source_rows)
                sources[active, variable] = frozen.plain_vectors(source_rows, tokens_of_source)
            expected = swap(before[rows, tokens], sources, batch.active)
            torch.testing.assert_close(after[rows, tokens], expected, atol=1e-5, rtol=1e-5)


def test_group_positions_must_be_different_tokens_and_source_groups_as_long(tiny_price):
    with pytest.raises(PositionError, match="must be different tokens"):
        interchange_for(tiny_price, 0, "last+-1")
    with pytest.raises(ValueError, match="must have as many tokens as position"):
        interchange_for(tiny_price, 0, "amount_first_digit+last", "last")

"""The benchmark's own checks: the floor computes the un-intervened loss, memory is read right,
mismatched first-step losses stop the run, and (with pyvene installed) the equal-work check
passes on a tiny shape. No test here times anything."""

import pytest
import torch
import torch.nn.functional as F

from alignment.frozen import FrozenSite
from alignment.sites import layer_site
from benchmarks.common import floor_step, peak_step_bytes, price_tagging_pairs
from benchmarks.trial_vs_pyvene import Variant, check_first_losses, main


@pytest.mark.parametrize("layer", [0, 1])
def test_floor_is_the_unintervened_step(tiny_price, layer):
    pairs = price_tagging_pairs(tiny_price.tokenizer, "compact", 8, "last")
    model = tiny_price.model
    frozen = FrozenSite(model, layer_site(model, layer), pairs.data.table)
    train = pairs.data.split("train")
    loss = floor_step(frozen, train.base_rows, train.labels)
    with torch.no_grad():
        logits = model(input_ids=pairs.data.table.input_ids[train.base_rows]).logits[:, -1]
    assert loss == pytest.approx(float(F.cross_entropy(logits, train.labels)), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_peak_step_bytes_sees_a_temporary_tensor():
    def step():
        scratch = torch.ones(1000, 1000)                    # 4,000,000 bytes, freed at return
        return float(scratch.sum())

    peak = peak_step_bytes(step, torch.device("cpu"))
    assert 4_000_000 <= peak < 4_200_000


def test_first_step_losses_must_agree():
    agree = [Variant("pyvene-tutorial/das", "das", None, losses=[10.5]),
             Variant("align-search/das", "das", None, losses=[10.5 + 1e-6])]
    assert check_first_losses(agree, 1e-4)["das"]["max_difference"] < 1e-5
    differ = [Variant("pyvene-tutorial/das", "das", None, losses=[10.5]),
              Variant("align-search/das", "das", None, losses=[10.6])]
    with pytest.raises(SystemExit, match="EQUAL-WORK CHECK FAILED"):
        check_first_losses(differ, 1e-4)


def test_equal_work_check_passes_on_a_tiny_shape():
    pytest.importorskip("pyvene")
    report = main(["--models", "gpt2-tiny", "--layers", "1", "--check-only", "--no-uncached"])
    check = report["models"]["gpt2-tiny"]["layers"][0]["check"]
    assert set(check["first_step_losses"]) == {"das", "boundless"}
    assert check["align-search/boundless"]["intervention_max_difference"] < 1e-5

"""The verdict's rules, one by one, on hand-made evidence (no Ray, no model)."""

from dataclasses import replace

from search.heatmaps import at_floor, legend
from search.verdict import Control, Evidence, floor_checks, judge, state_words

RAN = {"random_rotation": Control("ran", 0.52, 0.02), "random_model": Control("ran", 0.55),
       "full_swap": Control("ran", 0.99)}
SUBSPACE = Evidence(iia=0.97, ci95=(0.95, 0.99), task_accuracy=1.0, floors={"no_op": 0.5, "copy_source": 0.6},
                    widths={"x": 3}, site_width=64, controls=RAN, control_models={"control": 0.61})


def test_a_small_width_that_beats_the_same_width_random_rotation_is_a_subspace():
    verdict = judge(SUBSPACE)
    assert (verdict.found, verdict.state, verdict.kind) == (True, "found", "subspace")
    assert state_words(verdict) == "found (subspace)"
    assert "3 of 64 dimensions beat a random rotation of the same width (0.520 ± 0.020)" in verdict.reason
    # The full swap beats the subspace here, and that changes nothing: it is a description.
    assert "full swap at this site scores 0.990 (a description" in verdict.reason


def test_a_width_near_the_whole_site_is_found_as_the_whole_site():
    verdict = judge(replace(SUBSPACE, widths={"x": 60}))
    assert (verdict.found, verdict.kind) == (True, "whole_site")
    assert "learned width is 60 of 64 dimensions, more than 50% of the site" in verdict.reason


def test_a_same_width_random_rotation_that_does_as_well_leaves_the_whole_site():
    controls = {**RAN, "random_rotation": Control("ran", 0.95, 0.01)}
    verdict = judge(replace(SUBSPACE, controls=controls))
    assert (verdict.found, verdict.kind) == (True, "whole_site")
    assert "a random rotation of the same width (0.950 ± 0.010) does about as well" in verdict.reason
    assert state_words(verdict) == "found (whole site)"


def test_a_failed_control_makes_it_unchecked_never_passed():
    for failed in ("random_model", "random_rotation"):
        verdict = judge(replace(SUBSPACE, controls={**RAN, failed: Control("failed", detail="CUDA out of memory")}))
        assert (verdict.found, verdict.state, verdict.kind) == (False, "unchecked", None)
        assert f"{failed.replace('_', ' ')} failed (CUDA out of memory)" in verdict.unchecked
    diverged = judge(replace(SUBSPACE, controls={**RAN, "random_model": Control("diverged")}))
    assert diverged.state == "unchecked" and state_words(diverged) == "unchecked (random model diverged)"


def test_a_missing_control_makes_it_unchecked():
    no_controls = judge(replace(SUBSPACE, controls={}))
    assert no_controls.state == "unchecked"
    assert no_controls.unchecked == ("random model not run", "random rotation not run")
    # A control causal model with no result is a missing control too, even when every validity control ran.
    missing_model = judge(replace(SUBSPACE, control_models={"control": None}))
    assert missing_model.unchecked == (
        "control causal model control has no result (is it in hypotheses.causal_models?)",)
    # The full swap is a description, not a required control.
    assert judge(replace(SUBSPACE, controls={k: v for k, v in RAN.items() if k != "full_swap"})).found


def test_below_a_floor_is_not_found():
    verdict = judge(replace(SUBSPACE, iia=0.78, ci95=(0.74, 0.82), task_accuracy=0.8,
                            floors={"no_op": 0.5, "copy_source": 0.74}))
    assert (verdict.found, verdict.state) == (False, "not found")
    assert verdict.failed == ("not 0.05 above the copy-source floor 0.740",)
    # A failed check decides the verdict even when a control is also missing.
    assert judge(replace(SUBSPACE, floors={"no_op": 0.95, "copy_source": 0.5}, controls={})).state == "not found"


def test_when_the_variable_is_the_answer_the_copy_source_floor_is_the_claim_itself():
    verdict = judge(replace(SUBSPACE, floors={"no_op": 0.5, "copy_source": 1.0}))
    assert verdict.found and "the variable is the answer" in verdict.reason
    assert not judge(replace(SUBSPACE, floors={"no_op": 0.5, "copy_source": 0.94})).found


def test_task_accuracy_random_model_and_control_models_each_must_be_cleared():
    assert judge(replace(SUBSPACE, iia=0.9, ci95=(0.87, 0.93))).failed == (
        "below task accuracy 1.000 by more than 0.05 (interval up to 0.930)",)
    reached = judge(replace(SUBSPACE, iia=0.93, ci95=(0.89, 1.0)))  # the interval reaches task accuracy
    assert reached.found and "its interval reaches it" in reached.reason
    sanity = judge(replace(SUBSPACE, controls={**RAN, "random_model": Control("ran", 0.94)}))
    assert sanity.failed == ("not 0.05 above the random model (sanity check) 0.940",)
    control = judge(replace(SUBSPACE, control_models={"control": 0.95, "other": None}))
    assert control.state == "not found" and "not 0.05 above control causal model control 0.950" in control.failed


def test_a_subspace_below_its_same_width_random_rotation_is_never_a_subspace_claim():
    controls = {**RAN, "random_rotation": Control("ran", 0.99, 0.0)}
    verdict = judge(replace(SUBSPACE, controls=controls))
    assert verdict.kind == "whole_site"  # carried at the site, but no subspace of it is distinguished
    below_all = judge(replace(SUBSPACE, iia=0.6, ci95=(0.55, 0.65), controls=controls))
    assert below_all.state == "not found" and below_all.kind is None


def test_a_hatched_heatmap_cell_is_exactly_one_whose_verdict_fails_a_floor():
    """One floor rule: the heatmaps hatch a cell iff the verdict, on the same IIA and floors, fails a floor."""
    cases = 0
    for iia in (0.3, 0.5, 0.54, 0.55, 0.56, 0.7, 0.79, 0.8, 0.96, 1.0):
        for no_op in (0.0, 0.5, 0.75):
            for copy_source in (None, 0.5, 0.74, 0.94, 0.95, 1.0):
                for margin in (0.0, 0.05, 0.1):
                    entry = {"mean": iia, "floor_no_op": no_op, "floor_copy_source": copy_source}
                    verdict = judge(replace(SUBSPACE, iia=iia, ci95=(iia, iia), margin=margin,
                                            floors={"no_op": no_op, "copy_source": copy_source or 0.0}))
                    fails_a_floor = any("floor" in failure for failure in verdict.failed)
                    assert at_floor(entry, margin) == fails_a_floor, entry
                    cases += fails_a_floor
    assert cases > 0
    # At 0.96 above a no-op floor of 0.5: hatched under a copy-source floor of 0.94 (a rival it does not clear by
    # 0.05), not under 0.95 (the claim itself).
    assert at_floor({"mean": 0.96, "floor_no_op": 0.5, "floor_copy_source": 0.94}, 0.05)
    assert not at_floor({"mean": 0.96, "floor_no_op": 0.5, "floor_copy_source": 0.95}, 0.05)
    assert floor_checks(0.96, {"no_op": 0.5, "copy_source": 0.95}, 0.05) == {"no_op": True, "copy_source": None}
    assert "not 0.05 above the no-op floor" in legend(0.05)

"""The verdict on one causal model: is its variable found, as a subspace or as the whole site?

A sweep's best IIA alone says little. The verdict reads it (the test IIA of the hypothesis
selected on dev, mean over seeds, with its bootstrap 95% interval) against everything that
could explain it without the claim, and says `found`, `not found` or `unchecked`:

- *task accuracy*: IIA is bounded by how well the model does the task; the IIA must be within
  `NEAR_TASK` of it, or its interval must reach it.
- *floors* of the test pairs (`causal_models.pairs.floors`): `no_op` (do nothing) and
  `copy_source` (paste the source's answer). IIA must clear both by the margin. When the
  variable *is* the answer on these pairs (copying the source's answer is right on at least
  1 - NEAR_TASK of them: the planted task, the carry task), the copy-source floor is the claim
  itself, not a rival, and only the no-op floor applies; the reason says so. `floor_checks` is
  this rule, and the heatmaps hatch exactly the cells it fails.
- *random model* (a sanity check): the same hypothesis trained on random weights; beat it by the margin.
- *control causal models* of the task: the best of each; beat the best by the margin.
- *random rotation of the same width* (untrained, several draws): decides the kind. The claim
  is a `subspace` when the learned width is a small part of the site (at most
  `SUBSPACE_SHARE` of each variable's block) and beats the random rotation by the margin
  (the DAS claim: these directions, not any). Otherwise it is `whole_site`: the variable is
  carried at the site, but no smaller subspace is distinguished.
- *full swap*: reported beside the verdict as a description of what the whole site carries. It
  is not a rival: it also moves whatever else the site holds (it can fail where the site
  carries the token's identity) and it matches any subspace it contains.

A check that fails makes the verdict `not found`. A required control that failed, diverged or
never ran (random rotation, random model, a control causal model with no result) makes it
`unchecked`, never passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

NEAR_TASK = 0.05
SUBSPACE_SHARE = 0.5
REQUIRED_CONTROLS = ("random_rotation", "random_model")
FLOORS = {"no_op": "no-op", "copy_source": "copy-source"}   # the floors' names -> their words
ControlState = Literal["ran", "failed", "diverged", "not run"]
VerdictState = Literal["found", "not found", "unchecked"]
Kind = Literal["subspace", "whole_site"]


@dataclass(frozen=True)
class Control:
    """One validity control of the selected hypothesis: whether it ran, and its test IIA (mean, sd over draws)."""

    state: ControlState = "not run"
    iia: float | None = None
    sd: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "iia": _round(self.iia), "sd": _round(self.sd),
                **({"detail": self.detail} if self.detail else {})}


@dataclass(frozen=True)
class Evidence:
    """What the verdict on one causal model rests on (the selected hypothesis and everything around it).

    widths: the learned hard width per variable; site_width: each variable's block (hidden // variables).
    control_models: the task's control causal models -> their best test IIA (None: no result).
    """

    iia: float
    ci95: tuple[float, float]
    task_accuracy: float
    floors: dict[str, float]
    widths: dict[str, int]
    site_width: int
    controls: dict[str, Control] = field(default_factory=dict)
    control_models: dict[str, float | None] = field(default_factory=dict)
    margin: float = 0.05


@dataclass(frozen=True)
class Judgement:
    """What `judge` says of one causal model: found / not found / unchecked, the kind of a found
    alignment ("subspace" or "whole_site"), the reason in words, and the checks that failed or
    could not be made."""

    found: bool
    state: VerdictState
    kind: Kind | None
    reason: str
    failed: tuple[str, ...] = ()
    unchecked: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """The verdict on one causal model: the selected hypothesis (`best`, chosen on dev IIA: `dev_iia`),
    its test IIA over `seeds` seeds (the evidence's iia and ci95, and the seeds' spread `sd`), the
    evidence the judgement read, and the judgement. `to_dict()` is its entry in report.json."""

    best: str
    sd: float
    seeds: int
    dev_iia: float | None
    evidence: Evidence
    judgement: Judgement

    @property
    def best_control(self) -> float | None:
        """The best test IIA among the task's control causal models (None: none has a result)."""
        return max((v for v in self.evidence.control_models.values() if v is not None), default=None)

    def to_dict(self) -> dict[str, Any]:
        evidence, judgement = self.evidence, self.judgement
        return {"best": self.best, "iia": round(evidence.iia, 4), "sd": round(self.sd, 4), "seeds": self.seeds,
                "ci95": [round(x, 4) for x in evidence.ci95], "dev_iia": self.dev_iia,
                "task_accuracy": evidence.task_accuracy, "floors": evidence.floors, "widths": evidence.widths,
                "site_width": evidence.site_width, "controls": {k: c.to_dict() for k, c in evidence.controls.items()},
                "control_causal_models": evidence.control_models, "best_control": self.best_control,
                "found": judgement.found, "state": judgement.state, "kind": judgement.kind,
                "reason": judgement.reason, "failed": list(judgement.failed), "unchecked": list(judgement.unchecked)}


@dataclass(frozen=True)
class SweepVerdict:
    """report.json's "verdict": the task accuracy and rules the verdicts used, the control causal models'
    best test IIA, and a `Verdict` per (non-control) causal model."""

    task_accuracy: float
    margin: float
    ci95_method: str
    controls: dict[str, float] = field(default_factory=dict)
    causal_models: dict[str, Verdict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"task_accuracy": self.task_accuracy, "margin": self.margin, "near_task": NEAR_TASK,
                "subspace_share": SUBSPACE_SHARE, "ci95_method": self.ci95_method, "controls": self.controls,
                "causal_models": {name: v.to_dict() for name, v in self.causal_models.items()}}


@dataclass
class _Checks:
    near_task: str = ""
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def judge(evidence: Evidence) -> Judgement:
    """found / not found / unchecked, the kind of a found alignment, and the reason in words."""
    checks = _Checks()
    _task_accuracy(evidence, checks)
    _floors(evidence, checks)
    _random_model(evidence, checks)
    _control_models(evidence, checks)
    kind, words = _kind(evidence, checks)
    state: VerdictState = "not found" if checks.failed else "unchecked" if checks.unchecked else "found"
    full_swap = evidence.controls.get("full_swap", Control())
    described = (f" The full swap at this site scores {full_swap.iia:.3f} (a description of what the site "
                 f"carries, not a rival)." if full_swap.iia is not None else "")
    reason = _reason(state, evidence, checks, words) + described
    return Judgement(state == "found", state, kind if state == "found" else None, reason,
                     tuple(checks.failed), tuple(checks.unchecked))


def _task_accuracy(evidence: Evidence, checks: _Checks) -> None:
    target = evidence.task_accuracy
    if math.isnan(target):
        checks.unchecked.append("task accuracy unknown")
    elif evidence.iia >= target - NEAR_TASK or evidence.ci95[1] >= target:
        checks.near_task = (f"within {NEAR_TASK} of task accuracy {target:.3f}"
                            + ("" if evidence.iia >= target - NEAR_TASK else " (its interval reaches it)"))
    else:
        checks.failed.append(f"below task accuracy {target:.3f} by more than {NEAR_TASK} "
                             f"(interval up to {evidence.ci95[1]:.3f})")


def floor_checks(iia: float, floors: Mapping[str, float], margin: float) -> dict[str, bool | None]:
    """The floor rule, one for the verdict and the heatmaps: per floor, does `iia` clear it by `margin`?

    True: cleared; False: not; None: the floor does not apply (absent, or a copy-source floor of at
    least 1 - NEAR_TASK, which is the claim itself: on these pairs the variable is the answer).
    """
    checks: dict[str, bool | None] = {}
    for name in FLOORS:
        floor = floors.get(name)
        if floor is None or (name == "copy_source" and floor >= 1 - NEAR_TASK):
            checks[name] = None
        else:
            checks[name] = iia >= floor + margin
    return checks


def floors_of(entry: Mapping[str, Any]) -> dict[str, float]:
    """The floors of a ranked hypothesis (`floor_no_op`, `floor_copy_source`), one not computed as 0.0."""
    return {name: float(entry.get(f"floor_{name}") or 0.0) for name in FLOORS}


def _floors(evidence: Evidence, checks: _Checks) -> None:
    margin = evidence.margin
    for name, cleared in floor_checks(evidence.iia, evidence.floors, margin).items():
        floor, words = evidence.floors.get(name), FLOORS[name]
        if floor is None:
            continue
        if cleared is None:
            checks.notes.append(f"on these pairs the variable is the answer (copying the source's answer is right "
                                f"on {floor:.3f} of them), so the copy-source floor is the claim itself and only "
                                f"the no-op floor applies")
        elif cleared:
            checks.passed.append(f"the {words} floor {floor:.3f}")
        else:
            checks.failed.append(f"not {margin} above the {words} floor {floor:.3f}")


def _random_model(evidence: Evidence, checks: _Checks) -> None:
    _versus(evidence, checks, "random_model", "the random model (sanity check)")


def _versus(evidence: Evidence, checks: _Checks, name: str, words: str) -> None:
    control = evidence.controls.get(name, Control())
    if control.state != "ran" or control.iia is None:
        checks.unchecked.append(f"{name.replace('_', ' ')} {control.state}"
                                + (f" ({control.detail})" if control.detail else ""))
    elif evidence.iia >= control.iia + evidence.margin:
        checks.passed.append(f"{words} {control.iia:.3f}")
    else:
        checks.failed.append(f"not {evidence.margin} above {words} {control.iia:.3f}")


def _control_models(evidence: Evidence, checks: _Checks) -> None:
    missing = [name for name, iia in evidence.control_models.items() if iia is None]
    for name in missing:
        checks.unchecked.append(f"control causal model {name} has no result (is it in hypotheses.causal_models?)")
    scored = {name: iia for name, iia in evidence.control_models.items() if iia is not None}
    if not scored:
        return
    best = max(scored, key=lambda name: scored[name])
    if evidence.iia >= scored[best] + evidence.margin:
        checks.passed.append(f"the control causal models (best {best} {scored[best]:.3f})")
    else:
        checks.failed.append(f"not {evidence.margin} above control causal model {best} {scored[best]:.3f}")


def _kind(evidence: Evidence, checks: _Checks) -> tuple[Kind | None, str]:
    """("subspace" | "whole_site" | None, words): the learned width and the same-width random rotation."""
    control = evidence.controls.get("random_rotation", Control())
    if control.state != "ran" or control.iia is None:
        checks.unchecked.append("random rotation " + control.state + (f" ({control.detail})" if control.detail else ""))
        return None, ""
    share = max((w / max(1, evidence.site_width) for w in evidence.widths.values()), default=1.0)
    width = _width_words(evidence)
    score = f"{control.iia:.3f} ± {control.sd or 0.0:.3f}"
    rotation = f"a random rotation of the same width ({score})"
    if share > SUBSPACE_SHARE:
        return "whole_site", (f"no smaller subspace is distinguished: the learned width is {width}, more than "
                              f"{SUBSPACE_SHARE:.0%} of the site (a random rotation of that width scores {score})")
    if evidence.iia >= control.iia + evidence.margin:
        return "subspace", f"its {width} beat {rotation} by {evidence.iia - control.iia:.3f}: a subspace"
    return "whole_site", (f"no smaller subspace is distinguished: {rotation} does about as well as the learned "
                          f"{width}")


def _width_words(evidence: Evidence) -> str:
    widths = ", ".join(f"{w}" for w in evidence.widths.values())
    per = " per variable" if len(evidence.widths) > 1 else ""
    return f"{widths} of {evidence.site_width} dimensions{per}"


def _reason(state: str, evidence: Evidence, checks: _Checks, kind_words: str) -> str:
    head = f"test IIA {evidence.iia:.3f} [{evidence.ci95[0]:.3f}, {evidence.ci95[1]:.3f}]"
    notes = "".join(f" Note: {note}." for note in checks.notes)
    if state == "not found":
        return f"not found: {head} is {'; '.join(checks.failed)}.{notes}"
    above = f"above, by >= {evidence.margin}, {', '.join(checks.passed)}" if checks.passed else ""
    if state == "unchecked":
        hint = (" No validity control ran: set controls.top_k >= 1 and keep random_rotation and random_model in "
                "controls.kinds." if not evidence.controls else "")
        return (f"unchecked: {'; '.join(checks.unchecked)}.{hint} So far {head} is "
                f"{_join(checks.near_task, above)}.{notes}")
    return f"found: {head} is {_join(checks.near_task, above)}; {kind_words}.{notes}"


def _join(*phrases: str) -> str:
    return "; ".join(p for p in phrases if p) or "not compared with anything"


def state_words(verdict: Judgement) -> str:
    """One causal model's verdict in a few words (report.md, the sweep's closing lines, MLflow tags)."""
    if verdict.found:
        return f"found ({(verdict.kind or '').replace('_', ' ')})"
    reasons = verdict.failed if verdict.state == "not found" else verdict.unchecked
    return f"{verdict.state} ({'; '.join(reasons)})"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)

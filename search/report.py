"""The sweep report: results.csv, a layer x position IIA heatmap per causal model, ranking, verdict.

One scoring rule for every trial, stopped early or not: its test IIA at its best dev state
(a finished trial's summary; a stopped trial's best.json, written as it reported), with a
bootstrap 95% interval (`alignment.intervals`). Seeds of the same hypothesis are averaged
(mean and standard deviation of test IIA, not the 2023 analysis's max over seeds), and its
interval resamples the shared test pairs jointly across seeds. Hypotheses are *ranked and
selected on dev IIA* (the mean over seeds of each trial's best dev IIA); test IIA is what is
reported. Each hypothesis carries the floors of its test pairs (`floor_no_op`,
`floor_copy_source`, from the pairs alone). The verdict per causal model is
`search/verdict.py`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from alignment.intervals import RESAMPLES, SEED, bootstrap_interval, decode
from alignment.persistence import atomic_write_text
from alignment.results import TrialResult, UntrainedResult
from causal_models import get_task
from search.folder import SweepFolder, TrialSpec, data_name, read_jsonl
from search.heatmaps import heatmaps
from search.verdict import (
    NEAR_TASK,
    SUBSPACE_SHARE,
    Control,
    Evidence,
    SweepVerdict,
    Verdict,
    floors_of,
    judge,
    state_words,
)

COLUMNS = ("key", "hypothesis", "causal_model", "variables", "layer", "component", "position", "position_label",
           "intervention", "seed", "role", "phase", "target", "status", "stopped_by", "stopped_at_step", "error",
           "prealign_accuracy", "best_dev_iia", "best_step", "test_iia", "test_iia_ci_low", "test_iia_ci_high",
           "test_iia_sd", "draws", "test_iia_full_vocab", "floor_no_op", "floor_copy_source", "boundary_widths",
           "hidden_size", "node_id", "seconds", "attempts")
CI_METHOD = (f"percentile bootstrap, {RESAMPLES} resamples of the test pairs (seed {SEED}); over several seeds the "
             f"pairs are resampled jointly and the seeds' IIA averaged (their spread is sd)")
SCORED = ("prealign_accuracy", "best_dev_iia", "best_step", "test_iia", "test_iia_ci_low", "test_iia_ci_high",
          "test_iia_sd", "draws", "test_iia_full_vocab", "hidden_size", "test_correct", "seconds")


def trial_rows(folder: SweepFolder) -> list[dict[str, Any]]:
    """One row per trial of the sweep, from its summary, or its final status and best.json."""
    rows = []
    floors: dict[str, dict[str, float | None]] = {}
    for spec in folder.read_trials():
        row = _row(spec, folder.summary(spec.key), folder.status(spec.key) or {}, folder.best(spec.key) or {})
        row["attempts"] = len(folder.attempts(spec.key))
        if row.get("prealign_accuracy") is None:
            row["prealign_accuracy"] = _prealign(folder.trial_dir(spec.key) / "metrics.jsonl")
        name = data_name(spec.hypothesis.causal_model, spec.hypothesis.variables)
        if name not in floors:
            floors[name] = _floors(folder.path / "data" / name / "stats.json")
        row.update({k: v for k, v in floors[name].items() if v is not None})
        rows.append(row)
    return rows


def _prealign(path: Path) -> float | None:
    """A stopped trial's task accuracy, from the first row of its metrics."""
    rows = read_jsonl(path)
    return rows[0].get("prealign_accuracy") if rows else None


def _floors(stats: Path) -> dict[str, float | None]:
    """The floors of a dataset's test pairs, from the stats written beside them (computed from the pairs alone)."""
    test = json.loads(stats.read_text()).get("test", {}) if stats.is_file() else {}
    return {"floor_no_op": test.get("unchanged_share"), "floor_copy_source": test.get("floor_copy_source")}


def _row(spec: TrialSpec, result: TrialResult | UntrainedResult | None, status: dict[str, Any],
         best: dict[str, Any]) -> dict[str, Any]:
    hypothesis = spec.hypothesis
    row: dict[str, Any] = {"key": spec.key, "hypothesis": hypothesis.id, "causal_model": hypothesis.causal_model,
                           "variables": "+".join(hypothesis.variables), "layer": hypothesis.layer,
                           "component": hypothesis.component, "position": hypothesis.position,
                           "position_label": hypothesis.label, "intervention": hypothesis.intervention,
                           "seed": spec.seed, "role": spec.role, "phase": spec.phase, "target": spec.target,
                           "stopped_by": ""}
    summary = result.to_dict() if result is not None else None
    scored = summary if summary is not None else best if status.get("status") == "stopped_early" else {}
    row.update({k: scored[k] for k in SCORED if k in scored})
    row.update({k: scored[k] for k in ("floor_no_op", "floor_copy_source") if k in scored})
    if "boundary_widths" in scored:
        row["boundary_widths"] = json.dumps(scored["boundary_widths"])
    if summary is not None:
        row["status"] = "finished"
    else:
        row.update(status=status.get("status", "pending"), stopped_by=status.get("stopped_by", ""),
                   stopped_at_step=status.get("step"), error=status.get("error"), node_id=status.get("node_id"))
        row.setdefault("best_dev_iia", status.get("best_dev_iia"))
    return row


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per hypothesis (role "hypothesis", any phase): dev and test IIA over seeds, the test interval and
    the floors; best dev IIA first."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["role"] == "hypothesis" and row.get("test_iia") is not None:
            groups[row["hypothesis"]].append(row)
    ranked = [_entry(hypothesis, members) for hypothesis, members in groups.items()]
    return sorted(ranked, key=lambda r: (-(r["dev"] if r["dev"] is not None else -1.0), r["hypothesis"]))


def _entry(hypothesis: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    first = members[0]
    tests = [float(r["test_iia"]) for r in members]
    devs = [float(r["best_dev_iia"]) for r in members if r.get("best_dev_iia") is not None]
    low, high = _interval(members)
    return {"hypothesis": hypothesis, "causal_model": first["causal_model"], "variables": first["variables"],
            "layer": first["layer"], "position": first["position"], "intervention": first["intervention"],
            "mean": statistics.fmean(tests), "sd": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "seeds": len(tests), "dev": round(statistics.fmean(devs), 4) if devs else None,
            "test_iia_ci_low": low, "test_iia_ci_high": high,
            "floor_no_op": first.get("floor_no_op"), "floor_copy_source": first.get("floor_copy_source"),
            "finished": sum(r["status"] == "finished" for r in members),
            "stopped": sum(r["status"] == "stopped_early" for r in members)}


def _interval(members: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """The 95% interval of the mean test IIA: the seeds' per-pair correctness resampled jointly."""
    correct = [decode(r["test_correct"]) for r in members if r.get("test_correct")]
    if correct and len(correct) == len(members) and len({len(c) for c in correct}) == 1:
        return bootstrap_interval(correct)
    if len(members) == 1:
        return members[0].get("test_iia_ci_low"), members[0].get("test_iia_ci_high")
    return None, None


def verdicts(folder: SweepFolder, ranked: list[dict[str, Any]], rows: list[dict[str, Any]]) -> SweepVerdict:
    """For each non-control causal model: the verdict on its selected hypothesis (`search/verdict.py`)."""
    config = folder.read_config()
    task = get_task(config.task)
    accuracies = [r["prealign_accuracy"] for r in rows
                  if r.get("prealign_accuracy") is not None and r["role"] != "random_model"]
    task_accuracy = max(accuracies) if accuracies else float("nan")
    swept = list(dict.fromkeys(r["causal_model"] for r in rows))  # in trial order
    best_of = {name: next((e for e in ranked if e["causal_model"] == name), None) for name in swept}
    control_models = {name: (best_of.get(name) or {}).get("mean") for name in task.controls}
    result: dict[str, Verdict] = {}
    for name in (n for n in swept if n not in task.controls):
        entry = _selected(name, ranked, rows)
        if entry is None:
            continue
        evidence = _evidence(entry, rows, task_accuracy, control_models, config.controls.margin)
        result[name] = Verdict(entry["hypothesis"], entry["sd"], entry["seeds"], entry.get("dev"), evidence,
                               judge(evidence))
    return SweepVerdict(task_accuracy, config.controls.margin, CI_METHOD,
                        {name: value for name, value in control_models.items() if value is not None}, result)


def _selected(causal_model: str, ranked: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The hypothesis the verdict is on: the best by dev among those that got validity controls, else the best by dev.

    Controls are planned on the grid's dev IIA; more seeds can then reorder the ranking, and the
    verdict must stay on the hypothesis whose controls ran.
    """
    mine = [e for e in ranked if e["causal_model"] == causal_model]
    controlled = {_hypothesis_of(r["target"], rows) for r in rows if r["role"] != "hypothesis" and r.get("target")}
    return next((e for e in mine if e["hypothesis"] in controlled), mine[0] if mine else None)


def _hypothesis_of(key: str, rows: list[dict[str, Any]]) -> str | None:
    return next((r["hypothesis"] for r in rows if r["key"] == key), None)


def _evidence(entry: dict[str, Any], rows: list[dict[str, Any]], task_accuracy: float,
              control_models: dict[str, float | None], margin: float) -> Evidence:
    target = next(r for r in rows if r["hypothesis"] == entry["hypothesis"] and r["role"] == "hypothesis"
                  and r["phase"] == "grid")
    widths = json.loads(target.get("boundary_widths") or "{}")
    hidden = int(target.get("hidden_size") or 0)
    low, high = entry["test_iia_ci_low"], entry["test_iia_ci_high"]
    return Evidence(iia=entry["mean"], ci95=(low if low is not None else entry["mean"],
                                             high if high is not None else entry["mean"]),
                    task_accuracy=task_accuracy,
                    floors=floors_of(entry),
                    widths=widths, site_width=hidden // max(1, len(widths)) if hidden else 0,
                    controls=_controls_of(target["key"], rows), control_models=control_models, margin=margin)


def _controls_of(target: str, rows: list[dict[str, Any]]) -> dict[str, Control]:
    """The validity controls run against trial `target`, by kind, with how each one ended."""
    controls = {}
    for row in rows:
        if row["role"] == "hypothesis" or row.get("target") != target:
            continue
        state = {"finished": "ran", "failed": "failed", "diverged": "diverged"}.get(row["status"], "not run")
        if state == "ran" and row.get("test_iia") is not None:
            sd = row.get("test_iia_sd")
            controls[row["role"]] = Control("ran", float(row["test_iia"]), float(sd) if sd is not None else None)
        else:
            controls[row["role"]] = Control("not run" if state == "ran" else state,  # type: ignore[arg-type]
                                            detail=str(row.get("error") or "")[:200])
    return controls


def write_report(folder: SweepFolder) -> dict[str, Any]:
    """Write results.csv, heatmaps and report.json/report.md; return what the CLI and MLflow need
    (report.json's data, with "verdict" as the typed `SweepVerdict`)."""
    rows = trial_rows(folder)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder.path / "results.csv", table.getvalue())
    ranked = aggregate(rows)
    verdict = verdicts(folder, ranked, rows)
    images = heatmaps(folder, ranked, verdict.margin)
    summary = {"trials": len(rows), "finished": sum(r["status"] == "finished" for r in rows),
               "stopped_early": [{"key": r["key"], "step": r["stopped_at_step"], "stopped_by": r["stopped_by"]}
                                 for r in rows if r["status"] == "stopped_early"],
               "diverged": [{"key": r["key"], "error": r["error"]} for r in rows if r["status"] == "diverged"],
               "failed": [{"key": r["key"], "error": r["error"]} for r in rows if r["status"] == "failed"],
               "ranking": ranked[:20], "verdict": verdict}
    atomic_write_text(folder.path / "report.json", json.dumps({**summary, "verdict": verdict.to_dict()}, indent=2)
                      + "\n")
    atomic_write_text(folder.path / "report.md", markdown(summary))
    files = [folder.path / "results.csv", folder.path / "report.md", *images]
    metrics = {f"best_iia.{name}": round(v.evidence.iia, 4) for name, v in verdict.causal_models.items()}
    metrics.update({f"best_iia.{name}": value for name, value in verdict.controls.items()})
    tags = {f"verdict.{name}": state_words(v.judgement)[:250] for name, v in verdict.causal_models.items()}
    if ranked:
        tags["best_hypothesis"] = ranked[0]["hypothesis"]
    return {**summary, "files": files, "heatmaps": images, "parent_metrics": metrics, "parent_tags": tags}


def markdown(summary: dict[str, Any]) -> str:
    """report.md: the verdicts with their evidence, the ranking, and the trials that did not run to the end."""
    verdict: SweepVerdict = summary["verdict"]
    lines = ["# Sweep report", "", f"Task accuracy of the model (prealign): {verdict.task_accuracy:.3f}. "
             f"A variable is *found* when the test IIA of its best hypothesis (selected on dev IIA) is within "
             f"{NEAR_TASK} of it (or its 95% interval reaches it) and at least {verdict.margin} above the floors "
             f"of its pairs, the random model and the control causal models; it is a *subspace* when the learned "
             f"width is at most {SUBSPACE_SHARE:.0%} of the site and beats a random rotation of that width by the "
             f"margin, else the *whole site*. A control that did not run makes it *unchecked*.", "",
             "| causal model | best hypothesis (by dev) | test IIA [95% CI] (sd, seeds) | dev IIA | floors no-op / "
             "copy-source | control causal models | random rotation, same width | random model (sanity) | "
             "full swap (description) | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in verdict.causal_models.items():
        evidence = v.evidence
        controls = [control_words(evidence.controls.get(k)) for k in ("random_rotation", "random_model", "full_swap")]
        lines.append(f"| {name} | `{v.best}` | {evidence.iia:.3f} [{evidence.ci95[0]:.3f}, {evidence.ci95[1]:.3f}] "
                     f"({v.sd:.3f}, {v.seeds}) | {_cell(v.dev_iia)} | {evidence.floors['no_op']:.3f} / "
                     f"{evidence.floors['copy_source']:.3f} | {_cell(v.best_control)} | {' | '.join(controls)} | "
                     f"{state_words(v.judgement)} |")
    for name, value in verdict.controls.items():
        lines.append(f"| {name} (control) | | {value:.3f} | | | | | | | |")
    lines += [""] + [f"- **{name}**: {v.judgement.reason}" for name, v in verdict.causal_models.items()]
    lines += ["", f"Trials: {summary['trials']}, finished {summary['finished']}, stopped early "
              f"{len(summary['stopped_early'])}, diverged {len(summary['diverged'])}, failed {len(summary['failed'])}.",
              "", "## Ranking (by dev IIA; test IIA reported)", "",
              "| hypothesis | dev IIA | test IIA | 95% CI | sd | seeds | floors no-op / copy-source |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| `{r['hypothesis']}` | {_cell(r['dev'])} | {r['mean']:.3f} | [{_cell(r['test_iia_ci_low'])}, "
              f"{_cell(r['test_iia_ci_high'])}] | {r['sd']:.3f} | {r['seeds']} | {_cell(r['floor_no_op'])} / "
              f"{_cell(r['floor_copy_source'])} |" for r in summary["ranking"]]
    return "\n".join(lines + _broken_lines(summary)) + "\n"


def _broken_lines(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    broken = [("diverged", d) for d in summary["diverged"]] + [("failed", f) for f in summary["failed"]]
    if broken:
        lines += ["", "## Diverged or failed", "", "| trial | status | error |", "|---|---|---|"]
        lines += [f"| `{b['key']}` | {state} | {str(b['error']).replace('|', '/')} |" for state, b in broken]
    if summary["stopped_early"]:
        lines += ["", "## Stopped early (scored on test at their best dev state)", "", "| trial | step | stopped by |",
                  "|---|---|---|"]
        lines += [f"| `{s['key']}` | {s['step']} | {s['stopped_by'] or '?'} |" for s in summary["stopped_early"]]
    return lines


def control_words(control: Control | None) -> str:
    """A control's test IIA (± sd over draws), or how it ended."""
    if control is None:
        return "not run"
    if control.state != "ran" or control.iia is None:
        return control.state
    return f"{control.iia:.3f}" + (f" ± {control.sd:.3f}" if control.sd else "")


def _cell(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

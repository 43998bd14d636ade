"""The sweep report: results.csv, a layer x position IIA heatmap per causal model, ranking, verdict.

A trial's score is its test IIA (held-out pairs, hard mask) when it ran to the end, else the
best dev IIA it reported before it was stopped. Seeds of the same hypothesis are averaged
(mean and standard deviation, not the 2023 analysis's max over seeds). A causal model's
variables count as *found* when its best hypothesis reaches IIA close to the model's own task
accuracy (within `NEAR_TASK`) and clearly above (by `controls.margin`) every control: the
task's control causal models and the validity controls run for it (random rotation, random
model, full swap; `search/controls.py`).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from alignment.persistence import atomic_write_text
from causal_models import get_task
from search.folder import SweepFolder, TrialSpec, read_jsonl
from search.heatmaps import heatmaps

NEAR_TASK = 0.05
COLUMNS = ("key", "hypothesis", "causal_model", "variables", "layer", "component", "position", "position_label",
           "intervention", "seed", "role", "phase", "target", "status", "stop_reason", "stopped_at_step", "score",
           "prealign_accuracy", "best_dev_iia", "test_iia", "test_iia_full_vocab", "test_unchanged_share",
           "boundary_widths", "node_id", "seconds", "attempts")


def trial_rows(folder: SweepFolder) -> list[dict[str, Any]]:
    """One row per trial of the sweep, from its summary or its final status."""
    rows = []
    for spec in folder.read_trials():
        summary, status = folder.summary(spec.key), folder.status(spec.key) or {}
        row = _row(spec, summary, status)
        row["attempts"] = len(folder.attempts(spec.key))
        if row.get("prealign_accuracy") is None:
            row["prealign_accuracy"] = _prealign(folder.trial_dir(spec.key) / "metrics.jsonl")
        rows.append(row)
    return rows


def _prealign(path: Path) -> float | None:
    """A stopped trial's task accuracy, from the first row of its metrics."""
    rows = read_jsonl(path)
    return rows[0].get("prealign_accuracy") if rows else None


def _row(spec: TrialSpec, summary: dict[str, Any] | None, status: dict[str, Any]) -> dict[str, Any]:
    hypothesis = spec.hypothesis
    row: dict[str, Any] = {"key": spec.key, "hypothesis": hypothesis.id, "causal_model": hypothesis.causal_model,
                           "variables": "+".join(hypothesis.variables), "layer": hypothesis.layer,
                           "component": hypothesis.component, "position": hypothesis.position,
                           "position_label": hypothesis.label, "intervention": hypothesis.intervention,
                           "seed": spec.seed, "role": spec.role, "phase": spec.phase, "target": spec.target}
    if summary is not None:
        row.update({k: summary.get(k) for k in ("prealign_accuracy", "best_dev_iia", "test_iia",
                                                "test_iia_full_vocab", "test_unchanged_share", "seconds")})
        row.update(status="finished", score=summary["test_iia"],
                   boundary_widths=json.dumps(summary.get("boundary_widths", {})))
    else:
        row.update(status=status.get("status", "pending"), stop_reason=status.get("reason") or status.get("error"),
                   stopped_at_step=status.get("step"), best_dev_iia=status.get("best_dev_iia"),
                   score=status.get("best_dev_iia"), node_id=status.get("node_id"))
    return row


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd of the score over seeds, per hypothesis (grid trials only), best first."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["role"] == "hypothesis" and row.get("score") is not None:
            groups[row["hypothesis"]].append(row)
    ranked = []
    for hypothesis, members in groups.items():
        scores = [float(r["score"]) for r in members]
        first = members[0]
        devs = [float(r["best_dev_iia"]) for r in members if r.get("best_dev_iia") is not None]
        ranked.append({"hypothesis": hypothesis, "causal_model": first["causal_model"],
                       "variables": first["variables"], "layer": first["layer"], "position": first["position"],
                       "intervention": first["intervention"], "mean": statistics.fmean(scores),
                       "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0, "seeds": len(scores),
                       "dev": round(statistics.fmean(devs), 4) if devs else None,
                       "finished": sum(r["status"] == "finished" for r in members)})
    return sorted(ranked, key=lambda r: -r["mean"])


def verdicts(folder: SweepFolder, ranked: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For each non-control causal model: is its best hypothesis near task accuracy and above every control?"""
    config = folder.read_config()
    task = get_task(config.task)
    margin = config.controls.margin
    accuracies = [r["prealign_accuracy"] for r in rows
                  if r.get("prealign_accuracy") is not None and r["role"] != "random_model"]
    task_accuracy = max(accuracies) if accuracies else float("nan")
    best: dict[str, dict[str, Any]] = {}
    for entry in ranked:
        best.setdefault(entry["causal_model"], entry)
    controls = {name: best[name]["mean"] for name in task.controls if name in best}
    control_best = max(controls.values()) if controls else None
    result = {}
    for name, entry in best.items():
        if name in task.controls:
            continue
        checks = _validity(entry, rows)
        near = entry["mean"] >= task_accuracy - NEAR_TASK
        beaten = {"control causal models": control_best, **checks}
        failed = [k for k, value in beaten.items() if value is not None and entry["mean"] < value + margin]
        # A hypothesis no control was run against is not found, only unchecked.
        checked = any(value is not None for value in beaten.values())
        result[name] = {"best": entry["hypothesis"], "iia": round(entry["mean"], 4), "sd": round(entry["sd"], 4),
                        "seeds": entry["seeds"], "dev_iia": entry.get("dev"), "task_accuracy": task_accuracy,
                        "best_control": control_best, "controls": checks, "near_task": near,
                        "above_controls": checked and not failed, "failed_controls": failed, "checked": checked,
                        "found": bool(near and checked and not failed)}
    return {"task_accuracy": task_accuracy, "controls": controls, "margin": margin, "causal_models": result}


def _validity(entry: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Scores of the validity controls run for a hypothesis (None where a control did not finish)."""
    keys_of_hypothesis = {r["key"] for r in rows if r["hypothesis"] == entry["hypothesis"]}
    found: dict[str, float | None] = {}
    for row in rows:
        if row["role"] != "hypothesis" and row.get("target") in keys_of_hypothesis:
            found[row["role"]] = float(row["score"]) if row.get("score") is not None else None
    return found


def write_report(folder: SweepFolder) -> dict[str, Any]:
    """Write results.csv, heatmaps and report.json/report.md; return what the CLI and MLflow need."""
    rows = trial_rows(folder)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder.path / "results.csv", table.getvalue())
    ranked = aggregate(rows)
    verdict = verdicts(folder, ranked, rows)
    images = heatmaps(folder, ranked)
    stopped = [r for r in rows if r["status"] == "stopped_early"]
    summary = {"trials": len(rows), "finished": sum(r["status"] == "finished" for r in rows),
               "stopped_early": [{"key": r["key"], "step": r["stopped_at_step"], "reason": r["stop_reason"]}
                                 for r in stopped],
               "diverged": [{"key": r["key"], "error": r["stop_reason"]} for r in rows if r["status"] == "diverged"],
               "failed": [{"key": r["key"], "error": r["stop_reason"]} for r in rows if r["status"] == "failed"],
               "ranking": ranked[:20], "verdict": verdict}
    atomic_write_text(folder.path / "report.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(folder.path / "report.md", _markdown(summary))
    files = [folder.path / "results.csv", folder.path / "report.md", *images]
    metrics = {f"best_iia.{name}": v["iia"] for name, v in verdict["causal_models"].items()}
    metrics.update({f"best_iia.{name}": value for name, value in verdict["controls"].items()})
    tags = {f"verdict.{name}": "found" if v["found"] else "not found" for name, v in verdict["causal_models"].items()}
    if ranked:
        tags["best_hypothesis"] = ranked[0]["hypothesis"]
    return {**summary, "files": files, "heatmaps": images, "parent_metrics": metrics, "parent_tags": tags}


def verdict_state(verdict: dict[str, Any]) -> str:
    """One causal model's verdict in words."""
    if verdict["found"]:
        return "found"
    if not verdict["near_task"]:
        return "not found (below task accuracy)"
    if not verdict["checked"]:
        return "unchecked (no control ran; set controls.top_k >= 1)"
    return f"not found (not above {', '.join(verdict['failed_controls'])})"


def _markdown(summary: dict[str, Any]) -> str:
    verdict = summary["verdict"]
    lines = ["# Sweep report", "", f"Task accuracy of the model (prealign): {verdict['task_accuracy']:.3f}. "
             f"An alignment is found when its test IIA is within {NEAR_TASK} of it and at least "
             f"{verdict['margin']} above every control.", "",
             "| causal model | best hypothesis | test IIA (mean ± sd, seeds) | dev IIA | control causal models "
             "| random rotation | random model | full swap | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in verdict["causal_models"].items():
        state = verdict_state(v)
        cells = [_cell(v["best_control"])] + [_cell(v["controls"].get(k), k in v["controls"])
                                              for k in ("random_rotation", "random_model", "full_swap")]
        lines.append(f"| {name} | `{v['best']}` | {v['iia']:.3f} ± {v['sd']:.3f} ({v['seeds']}) | "
                     f"{_cell(v['dev_iia'])} | {' | '.join(cells)} | {state} |")
    for name, value in verdict["controls"].items():
        lines.append(f"| {name} (control) | | {value:.3f} | | |")
    lines += ["", f"Trials: {summary['trials']}, finished {summary['finished']}, stopped early "
              f"{len(summary['stopped_early'])}, diverged {len(summary['diverged'])}, failed {len(summary['failed'])}.",
              "", "## Ranking", "", "| hypothesis | IIA mean | sd | seeds |", "|---|---|---|---|"]
    lines += [f"| `{r['hypothesis']}` | {r['mean']:.3f} | {r['sd']:.3f} | {r['seeds']} |" for r in summary["ranking"]]
    broken = [("diverged", d) for d in summary["diverged"]] + [("failed", f) for f in summary["failed"]]
    if broken:
        lines += ["", "## Diverged or failed", "", "| trial | status | error |", "|---|---|---|"]
        lines += [f"| `{b['key']}` | {state} | {str(b['error']).replace('|', '/')} |" for state, b in broken]
    if summary["stopped_early"]:
        lines += ["", "## Stopped early", "", "| trial | step | reason |", "|---|---|---|"]
        lines += [f"| `{s['key']}` | {s['step']} | {s['reason']} |" for s in summary["stopped_early"]]
    return "\n".join(lines) + "\n"


def _cell(value: float | None, ran: bool = True) -> str:
    if not ran:
        return "not run"
    return "-" if value is None else f"{value:.3f}"

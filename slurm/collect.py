"""Collect a sweep: one row per grid point from its run dir, written as a Markdown + JSON table.

A point's metrics come from `summary.json` (train: the last stage's train/val means) or
`results.json` (eval: error, kept ratio, GFLOPs and clips/s of every method). A point without them is listed anyway, as
`failed` (with the job's error from submitit's result file), SLURM's state for it (`pending`,
`running`, `cancelled`, `timeout`, ...) or `missing` (no trace of it).

An eval sweep over budgets (`--grid eval.kept_ratios=0.1,0.2,0.3`: each task a curve at its
budgets) is also collected into trade-off curves (`collect_curves`): the tasks' per-budget rows
go through `videored.curves.curves_from_results`, the function the one-process
`videored eval --kept-ratios` run uses, and the job dir gets the same results.json (curve keys),
results.md and tradeoff.png / .pdf.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from submitit.core.utils import JobPaths, pickle_load

from .queue import queue_state

RESULT_FILES = {"train": "summary.json", "eval": "results.json"}


def flatten_numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as {"a.b.c": value}; lists, strings and bools are skipped."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten_numbers(value, f"{prefix}{key}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix.rstrip(".")] = float(data)
    return out


# The eval numbers a sweep table shows per method (results.json has more: top-5, per class, ...).
EVAL_COLUMNS = ("clip1_err", "video1_err", "kept_ratio", "gflops", "clips_per_s")


def metrics_of(command: str, result: dict) -> dict[str, float]:
    if command == "train":  # the final model is the last stage's
        last = result["stages"][-1] if result.get("stages") else {}
        metrics = {f"train.{k}": v for k, v in flatten_numbers(last.get("train", {})).items()}
        metrics.update({f"val.{k}": v for k, v in flatten_numbers(last.get("val", {})).items()})
        if "global_steps" in result:
            metrics["global_steps"] = float(result["global_steps"])
        return metrics
    if isinstance(result.get("methods"), dict):  # `videored eval`: {"methods": {name: {...}}}
        return {f"{method}.{k}": float(v) for method, row in result["methods"].items()
                for k, v in row.items() if k in EVAL_COLUMNS and isinstance(v, (int, float))}
    return flatten_numbers(result)


def _job_error(folder: Path, job_id: str) -> str | None:
    """The last line of the job's error (submitit's result pickle of rank 0), None if it has none."""
    path = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    if not path.exists():
        return None
    try:
        outcome, value = pickle_load(path)
    except Exception as err:  # a torn pickle: say so rather than crash the whole table
        return f"unreadable {path.name}: {err}"
    if outcome == "success":
        return "the job succeeded but wrote no result file"
    lines = [ln for ln in str(value).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def collect_point(point: dict, command: str, folder: Path, cluster: str) -> dict:
    row: dict[str, Any] = {"name": point["name"], "overrides": point["overrides"],
                           "run_dir": point["run_dir"], "job_id": point.get("job_id"),
                           "status": "missing", "error": None, "metrics": {}}
    result_file = Path(point["run_dir"]) / RESULT_FILES[command]
    if result_file.exists():
        try:
            row["metrics"] = metrics_of(command, json.loads(result_file.read_text(encoding="utf-8")))
            row["status"] = "ok"
        except (ValueError, KeyError, IndexError, TypeError) as err:
            row["status"], row["error"] = "failed", f"{result_file}: cannot read ({err})"
        return row
    job_id = str(point.get("job_id") or "")
    error = _job_error(folder, job_id) if job_id else None
    if error is not None:
        row["status"], row["error"] = "failed", error
    elif cluster == "slurm" and job_id and (state := queue_state(job_id)):
        row["status"] = state
    return row


def collect(job_dir: str | Path) -> list[dict]:
    """One row per point of the sweep in `job_dir` (its sweep.json), in grid order."""
    job_dir = Path(job_dir)
    manifest_path = job_dir / "sweep.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no sweep manifest (was this dir made by `sweep`?)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    folder = Path(manifest["submitit_folder"])
    return [collect_point(p, manifest["command"], folder, manifest["cluster"]) for p in manifest["points"]]


# The keys of a curve run's results.json that describe the run, not one budget.
CURVE_CONTEXT = ("checkpoint", "dense_checkpoint", "model", "data", "split", "video", "match",
                 "device", "world_size", "num_videos", "failed_videos", "failure_reasons")


def collect_curves(job_dir: str | Path) -> dict | None:
    """The merged curve results of an eval sweep whose tasks ran `--kept-ratios` (None when no
    task wrote curve rows): budgets in ascending order, each budget from the task that ran it;
    the dense and native (threshold) rows from the first task (every task evaluates them on the
    same clips). Tasks that disagree on the model, split or matching rule are an error."""
    from videored.curves import curves_from_results

    job_dir = Path(job_dir)
    manifest = json.loads((job_dir / "sweep.json").read_text(encoding="utf-8"))
    if manifest["command"] != "eval":
        return None
    tasks = []
    for point in manifest["points"]:
        path = Path(point["run_dir"]) / RESULT_FILES["eval"]
        if path.is_file():
            result = json.loads(path.read_text(encoding="utf-8"))
            if "per_budget" in result:
                tasks.append((path, result))
    if not tasks:
        return None
    first_path, first = tasks[0]
    for path, result in tasks[1:]:
        for key in ("model", "split", "match", "num_videos", "checkpoint"):
            if result.get(key) != first.get(key):
                raise ValueError(f"{path}: {key} {result.get(key)!r} differs from "
                                 f"{first_path}'s {first.get(key)!r}; not one curve")
    per_budget: dict[float, dict] = {}
    for path, result in tasks:
        for budget, rows in result["per_budget"]:
            if budget in per_budget:
                raise ValueError(f"{path}: budget {budget} was also run by another task")
            per_budget[budget] = rows
    ordered = [[r, per_budget[r]] for r in sorted(per_budget)]
    summary = {k: first[k] for k in CURVE_CONTEXT if k in first}
    summary.update({"sweep": str(job_dir), "kept_ratios": [r for r, _ in ordered],
                    "per_budget": ordered, "native": first["native"],
                    "methods": {}, "curves": curves_from_results(ordered, first["native"])})
    return summary


def write_curves(job_dir: str | Path, summary: dict) -> list[Path]:
    """results.json, results.md and tradeoff.png / .pdf of collected curves into job_dir, by the
    writers of `videored eval --kept-ratios`."""
    from videored.engine.run_eval import write_reports
    from videored.viz.tradeoff import write_tradeoff

    job_dir = Path(job_dir)
    write_reports(summary, job_dir)
    return [job_dir / "results.json", job_dir / "results.md", *write_tradeoff(summary, job_dir)]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"]))
    metrics = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    header = ["point", *keys, "status", *metrics, "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["name"], *(r["overrides"].get(k) for k in keys), r["status"],
                 *(r["metrics"].get(m) for m in metrics), r["error"]]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"# Sweep summary\n\n{len(rows)} points: {tally}\n\n" + "\n".join(lines) + "\n"


def write_summary(job_dir: str | Path, rows: list[dict]) -> tuple[Path, Path]:
    """Write `sweep_summary.md` and `sweep_summary.json` into `job_dir`; returns both paths."""
    job_dir = Path(job_dir)
    md, js = job_dir / "sweep_summary.md", job_dir / "sweep_summary.json"
    md.write_text(markdown_table(rows), encoding="utf-8")
    js.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return md, js

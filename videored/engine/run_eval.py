"""The evaluation job behind `videored eval`: load, score every method, time them, write reports.

Writes (rank 0) `results.json`: {"methods": {method: {clip1_err, video1_err, clip1_top5_err,
video1_top5_err, clips_per_s, kept_ratio, gflops, setting, setting_name, budget,
per_class_video1_acc, ...}}, "budget": {"match": "ratio" | "gmacs" | "fixed", ...},
"num_videos", "failed_videos", ...} and `results.md`, a table laid out like paper Table 4 (video)
or Table 2 (images). `per_selection_keep_ratio` is the old name of `setting` (deprecated: listed
under "deprecated_keys"; for tome / evit the setting is a kept ratio, not a per-selection one).

The budget (`videored.models.budget.Budget`): without a fixed `kept_ratio`, every budgeted
method matches the learned reference (the interpreter) view by view, by kept ratio
(match="ratio") or by GMACs (match="gmacs").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from videored.models.budget import Budget
from videored.models.methods import ANY_MODEL_METHODS, EXPLANATIONS, get_method, parse_methods
from videored.normalization import resolve_normalization
from videored.tables import markdown_table

from .builders import build_dataset, build_model, is_video_model, loader_workers, unpack_batch
from .config import ConfigError, load_config, to_dict
from .distributed import DistInfo, barrier, init_distributed
from .evaluation import ViewBudget, aggregate, predict_views



def eval_command(*, checkpoint: str | Path, config: Optional[str | Path] = None,
                 overrides: list[str] = (), out_dir: Optional[Path] = None,
                 methods: Optional[str] = None, match: str = "ratio",
                 kept_ratio: Optional[float] = None, masks: Optional[Path] = None,
                 interpretability: bool = False, limit: Optional[int] = None,
                 protocol: str = "benchmark", **evaluation: Any) -> Optional[Path]:
    """`videored eval` after parsing: check the request, load the config, run paper Table 4
    (`run_evaluation`) or, with masks, paper Table 1 (`run_interpretability`). Returns the
    output folder on the rank that wrote it (None elsewhere); bad requests raise ValueError /
    ConfigError naming the flag. evaluation: run_evaluation's other keyword arguments (split,
    spatial_crops, batch_size, num_workers, speed_runs, dense_checkpoint)."""
    from videored.engine.run_interpretability import TABLE1_METHODS

    if masks is not None and not interpretability:
        raise ValueError("--masks goes with --interpretability")
    table1 = masks is not None
    names = parse_methods(methods or ",".join(TABLE1_METHODS if table1 else ANY_MODEL_METHODS),
                          explanations=table1)
    try:
        budget = Budget.of(kept_ratio, match)
    except ValueError as err:
        raise ValueError(f"--kept-ratio: {err}") from None
    try:
        cfg = config_for_checkpoint(checkpoint, config, list(overrides))
    except (ConfigError, FileNotFoundError) as err:
        raise ConfigError(f"config error: {err}") from None
    # Explanations need a kept fraction only where kept patches are scored (--protocol kept, or
    # kept-patch masks without --masks); the benchmark protocol thresholds their maps itself.
    kept_view = protocol == "kept" or not table1
    budgeted = [m for m in names if (m in EXPLANATIONS and kept_view)
                or (m not in EXPLANATIONS and get_method(m).budgeted)]
    if budget.matched and budget.reference not in names and budgeted:
        raise ValueError(f"{', '.join(budgeted)} need --kept-ratio when {budget.reference!r} is "
                         "not evaluated (there is nothing to match)")
    out = Path(out_dir) if out_dir is not None else Path(checkpoint).resolve().parent
    if table1:
        from videored.engine.run_interpretability import run_interpretability

        run_interpretability(cfg, checkpoint=checkpoint, masks=masks, out_dir=out, methods=names,
                             kept_ratio=kept_ratio, match=match, protocol=protocol,
                             dense_checkpoint=evaluation.get("dense_checkpoint"),
                             batch_size=evaluation.get("batch_size"),
                             num_workers=evaluation.get("num_workers"), limit=limit)
        return out
    results = run_evaluation(cfg, checkpoint=checkpoint, out_dir=out, methods=names,
                             kept_ratio=kept_ratio, match=match,
                             interpretability=interpretability, **evaluation)
    return out if results is not None else None


def config_for_checkpoint(checkpoint: str | Path, config_path: Optional[str | Path],
                          overrides: list[str]) -> DictConfig:
    """The YAML config when given, else the one `videored train` stored in the checkpoint."""
    if config_path is not None:
        return load_config(config_path, overrides)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True).get("config")
    if stored is None:
        raise ConfigError(f"{checkpoint} holds no config: pass --config")
    return load_config(None, overrides, base=stored)


def load_for_eval(cfg: DictConfig, checkpoint: str | Path, need_interpreter: bool):
    """The model of `cfg` with the weights of `checkpoint` (model.pt or a training checkpoint).

    Built with interpreters so any videored file loads; they must be trained if needed."""
    from videored.models import load_pretrained

    cfg.model.pretrained_path = None  # the checkpoint holds every weight
    model = build_model(cfg, selector="interpreter")
    report = load_pretrained(model, checkpoint)
    fresh_interpreters = [k for k in report.initialized if k.startswith("interpreters.")]
    if need_interpreter and fresh_interpreters:
        raise ValueError(f"{checkpoint} has no trained interpreter weights; evaluate it without "
                         "'interpreter' in --methods (and give --kept-ratio)")
    fresh_pruners = sorted({k.split(".")[1] for k in report.initialized if k.startswith("pruners.")})
    if fresh_pruners:  # model.kwargs.pruners asks for SPViT / SViT selectors the file lacks
        raise ValueError(f"{checkpoint} has no trained {', '.join(fresh_pruners)} selector weights "
                         "(model.kwargs.pruners in the config); train them first "
                         f"(configs/*/*_{fresh_pruners[0]}.yaml) or drop them from the config")
    if report.dropped or any(k.startswith("head.") for k in report.initialized):
        raise ValueError(f"{checkpoint}: classification head does not fit "
                         f"model.num_classes={cfg.model.num_classes}")
    return model


def measure_speed(nets: dict, dataset, budgets: dict[str, Optional[ViewBudget]], *,
                  dist: DistInfo, batch_size: int, runs: int, amp: bool) -> dict[str, float]:
    """Model clips/s per method on the first batch of real clips (decoding excluded), each at
    its budget on those very clips, all methods timed interleaved in one run after warm-up."""
    from videored.timing import time_interleaved

    n = min(batch_size, len(dataset))
    items = [dataset[i] for i in range(n)]
    x = torch.stack([unpack_batch(it)[0] for it in items]).to(dist.device)  # video or image
    index = torch.arange(n)

    def call(method: str):
        net, budget = nets[method], budgets[method]
        kwargs = budget.forward_kwargs(net, method, index) if budget is not None else (
            {"selector": get_method(method).selector})  # unbudgeted: no setting

        def run():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                return net(x, **kwargs)
        return run

    seconds, _ = time_interleaved({m: call(m) for m in budgets}, warmup=1, runs=runs,
                                  device=dist.device)
    return {m: len(x) / s for m, s in seconds.items()}


def run_evaluation(cfg: DictConfig, *, checkpoint: str | Path, out_dir: str | Path,
                   methods: list[str], kept_ratio: Optional[float] = None,
                   match: str = "ratio", split: str = "test",
                   spatial_crops: int = 3, batch_size: Optional[int] = None,
                   num_workers: Optional[int] = None, speed_runs: int = 5,
                   interpretability: bool = False,
                   dense_checkpoint: Optional[str | Path] = None) -> Optional[dict[str, Any]]:
    """Score `methods` on `split`; returns the results dict on rank 0 (None elsewhere).

    kept_ratio: a fixed budget (fraction of patches reaching the last block) for every
    budgeted method; None: they match the interpreter view by view, by `match` ("ratio" or
    "gmacs"). dense_checkpoint: the model before token reduction. When given, `original` and the
    baselines run on its weights and `interpreter` on `checkpoint`'s, as in paper Table 4 (the
    original model, and dropping applied to it, against the IA-RED² model).
    """
    plan = Budget.of(kept_ratio, match)
    dist = init_distributed(cfg.run.device)
    amp = dist.device.type == "cuda" and cfg.run.precision == "bf16"
    video = is_video_model(cfg.model.name)
    if video:
        cfg.data.num_spatial_crops = spatial_crops
    learned = [m for m in methods if get_method(m).learned]
    model = load_for_eval(cfg, checkpoint, bool(learned)).to(dist.device).eval()
    dense = model if dense_checkpoint is None else load_for_eval(
        cfg, dense_checkpoint, need_interpreter=False).to(dist.device).eval()
    resolve_normalization(cfg, model, dense)  # the weights' own unless the config overrides it
    dataset = build_dataset(cfg, split)
    num_classes = cfg.model.num_classes
    batch_size = batch_size or cfg.data.batch_size
    workers = loader_workers(cfg, num_workers)

    # The learned reference runs first: its kept ratio (or GMACs) on each view is the baselines'
    # budget.
    budgeted = [m for m in methods if get_method(m).budgeted]
    if budgeted and plan.matched and plan.reference not in methods:
        raise ValueError(f"{budgeted} need a kept ratio: evaluate {plan.reference!r} too (they "
                         "match it) or give a fixed kept ratio")
    order = sorted(methods, key=lambda m: not get_method(m).learned)
    # the learned methods and those deciding with the checkpoint's trained pruners (SPViT, SViT)
    nets = {m: model if m in learned or get_method(m).weights else dense for m in methods}
    results: dict[str, dict[str, Any]] = {}
    budgets: dict[str, Optional[ViewBudget]] = {}
    reference_views = None
    for method in order:
        budget = None
        if method in budgeted:
            budget = (ViewBudget.matching(plan, reference_views) if plan.matched
                      else ViewBudget(plan))
        budgets[method] = budget
        views = predict_views(nets[method], dataset, dist=dist, batch_size=batch_size,
                              workers=workers, amp=amp, progress=f"eval {method}",
                              seed=cfg.run.seed, method=method, budget=budget)
        if method == plan.reference:
            reference_views = views
        results[method] = aggregate(views, num_classes)
        results[method]["setting_name"] = get_method(method).setting_name
        results[method]["per_selection_keep_ratio"] = results[method]["setting"]  # deprecated
        results[method]["budget"] = None if budget is None else budget.describe()
        results[method]["weights"] = str(checkpoint if nets[method] is model or dense is model
                                         else dense_checkpoint)
    if speed_runs > 0:
        speeds = measure_speed(nets, dataset, budgets, dist=dist, batch_size=batch_size,
                               runs=speed_runs, amp=amp)
        for method, clips_per_s in speeds.items():
            results[method]["clips_per_s"] = clips_per_s

    interp = None
    if interpretability:
        interp = _interpretability(cfg, model, dense, split, methods, kept_ratio, match)
    barrier()
    if not dist.is_main:
        return None
    first = results[order[0]]
    summary = {
        "checkpoint": str(checkpoint), "dense_checkpoint": str(dense_checkpoint or checkpoint),
        "split": split, "video": video,
        "budget": plan.describe(),
        "deprecated_keys": {"per_selection_keep_ratio": "setting"},
        "device": str(dist.device), "world_size": dist.world_size,
        "num_videos": first["num_videos"], "failed_videos": first["failed_videos"],
        "failure_reasons": first["failure_reasons"],  # path -> the decoder's message and frame
        "methods": {m: {k: v for k, v in results[m].items()
                        if k not in ("num_videos", "failed_videos", "failure_reasons")} for m in methods},
        "config": to_dict(cfg),
    }
    if interp is not None:
        summary["interpretability"] = interp
        for method, row in interp.items():
            if method in summary["methods"]:
                summary["methods"][method]["interpretability"] = row
    write_reports(summary, out_dir)
    return summary


def _interpretability(cfg, model, dense, split, methods, kept_ratio, match):
    """Kept-patch masks vs object masks, every method at the same budget as the rest of eval."""
    from videored.interpretability import interpretability_table

    masked = build_dataset(cfg, split, return_masks=True, num_spatial_crops=1)  # centre crop
    return interpretability_table(dense, masked, methods, kept_ratio, match=match,
                                  reference_model=model, num_workers=loader_workers(cfg))


def write_reports(summary: dict[str, Any], out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(results_markdown(summary))


def results_markdown(summary: dict[str, Any]) -> str:
    """Paper Table 4 layout for video (clip-1 / video-1 errors), Table 2 for images (top-1/5)."""
    rows = []
    for method, r in summary["methods"].items():
        kept = r.get("kept_ratio")
        rows.append({**r, "method": method, "kept_pct": None if kept is None else 100 * kept,
                     "top1": None if r["clip1_err"] is None else 100 - r["clip1_err"],
                     "top5": None if r["clip1_top5_err"] is None else 100 - r["clip1_top5_err"]})
    head = [("method", "method", "s"), ("clips_per_s", "clips/s" if summary["video"] else "img/s",
                                         ".1f"),
            ("kept_pct", "kept %", ".1f"), ("gflops", "GFLOPs", ".2f")]
    if summary["video"]:
        cols = head + [("clip1_err", "clip-1 err", ".1f"), ("video1_err", "video-1 err", ".1f"),
                       ("clip1_top5_err", "clip-1 top-5 err", ".1f"),
                       ("video1_top5_err", "video-1 top-5 err", ".1f")]
    else:
        cols = head + [("top1", "top-1 acc", ".1f"), ("top5", "top-5 acc", ".1f")]
    if "interpretability" in summary:
        for row in rows:
            row.update({f"i_{k}": v for k, v in summary["interpretability"].get(row["method"], {}).items()})
        cols += [("i_miou", "mask mIoU %", ".1f"), ("i_pixel_acc", "pixel acc %", ".1f"),
                 ("i_mean_acc", "mean acc %", ".1f")]
    failed = summary["failed_videos"]
    budget = summary.get("budget", {})
    if budget.get("match") == "fixed":
        said = f"every baseline at kept ratio {budget['kept_ratio']:g} (fixed)"
    else:
        said = (f"baselines matched to the {budget.get('reference', 'interpreter')} view by view "
                f"by {'kept ratio' if budget.get('match') == 'ratio' else 'GMACs'}")
    lines = [f"Split `{summary['split']}`: {summary['num_videos']} videos, {len(failed)} failed to "
             f"decode{' (listed in results.json; errors are over the rest)' if failed else ''}. "
             f"Device: {summary['device']}. Budget: {said}.", "", markdown_table(rows, cols), ""]
    return "\n".join(lines)

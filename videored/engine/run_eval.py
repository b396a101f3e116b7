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

Trade-off curves (`kept_ratios`): every method at every budget in the same pass (`plan_arms`);
results.json then keys `methods` by arm ("random@0.3", "interpreter@0.3", "interpreter", ...)
and adds "kept_ratios", "match", "per_budget", "native" and "curves" (`curve_results`);
results.md holds the curve table and the winners per budget (`videored.curves`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from videored.atomic_io import atomic_write_text
from videored.curves import curves_from_results, curves_markdown, matching_rule
from videored.models.budget import Budget, check_fraction
from videored.models.methods import (ANY_MODEL_METHODS, EXPLANATIONS, default_methods, get_method,
                                     parse_methods)
from videored.normalization import resolve_normalization
from videored.tables import markdown_table

from .builders import build_dataset, build_model, is_video_model, loader_workers, unpack_batch
from .config import ConfigError, load_config, to_dict
from .distributed import DistInfo, barrier, init_distributed
from .evaluation import Arm, aggregate, predict_arms



def eval_command(*, checkpoint: str | Path, config: Optional[str | Path] = None,
                 overrides: list[str] = (), out_dir: Optional[Path] = None,
                 methods: Optional[str] = None, match: str = "ratio",
                 kept_ratio: Optional[float] = None, kept_ratios: Optional[list[float]] = None,
                 masks: Optional[Path] = None,
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
    if kept_ratios is not None:
        check_curve_request(kept_ratios, kept_ratio, match, methods, masks, interpretability)
    table1 = masks is not None
    # names checked before anything loads; the default list depends on the model (below)
    names = parse_methods(methods, explanations=table1) if methods else None
    try:
        budget = Budget.of(kept_ratio, match)
    except ValueError as err:
        raise ValueError(f"--kept-ratio: {err}") from None
    try:
        cfg = config_for_checkpoint(checkpoint, config, list(overrides))
    except (ConfigError, FileNotFoundError) as err:
        raise ConfigError(f"config error: {err}") from None
    if names is None:
        names = list(TABLE1_METHODS if table1 else default_methods(is_video_model(cfg.model.name)))
    # Explanations need a kept fraction only where kept patches are scored (--protocol kept, or
    # kept-patch masks without --masks); the benchmark protocol thresholds their maps itself.
    kept_view = protocol == "kept" or not table1
    budgeted = [m for m in names if (m in EXPLANATIONS and kept_view)
                or (m not in EXPLANATIONS and get_method(m).budgeted)]
    if kept_ratios is None and budget.matched and budget.reference not in names and budgeted:
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
                             kept_ratio=kept_ratio, kept_ratios=kept_ratios, match=match,
                             interpretability=interpretability, **evaluation)
    return out if results is not None else None


def check_curve_request(kept_ratios: list[float], kept_ratio: Optional[float], match: str,
                        methods: Optional[str], masks, interpretability: bool) -> None:
    """The flags of a trade-off curve (`--kept-ratios`), checked before anything loads."""
    if kept_ratio is not None:
        raise ValueError("give --kept-ratio (one budget) or --kept-ratios (a curve), not both")
    if masks is not None or interpretability:
        raise ValueError("--kept-ratios (trade-off curves) does not go with --interpretability")
    if not kept_ratios:
        raise ValueError("--kept-ratios: give at least one budget, e.g. 0.1,0.3,0.5")
    for r in kept_ratios:
        check_fraction(r, where="--kept-ratios")
        if r <= 0:
            raise ValueError(f"--kept-ratios: {r} keeps no token; budgets must be in (0, 1]")
    if len(set(kept_ratios)) != len(kept_ratios):
        raise ValueError(f"--kept-ratios: a budget is given twice in {kept_ratios}")
    names = parse_methods(methods or ",".join(ANY_MODEL_METHODS))
    if match == "gmacs" and not any(get_method(m).learned and get_method(m).topk for m in names):
        raise ValueError("--match gmacs on a curve matches the interpreter's top-k GMACs at each "
                         "budget: add 'interpreter' to --methods, or use --match ratio")


def config_for_checkpoint(checkpoint: str | Path, config_path: Optional[str | Path],
                          overrides: list[str]) -> DictConfig:
    """The YAML config when given, else the one `videored train` stored in the checkpoint."""
    from videored.torch_io import load_torch_file

    if config_path is not None:
        return load_config(config_path, overrides)
    obj = load_torch_file(checkpoint, what="checkpoint", mmap=True)  # one-line error if unusable
    stored = obj.get("config") if isinstance(obj, dict) else None
    if not isinstance(stored, dict):
        raise ConfigError(f"{checkpoint} holds no training config (not written by `videored "
                          "train`): pass --config")
    return load_config(None, overrides, base=stored)


def load_for_eval(cfg: DictConfig, checkpoint: str | Path, need_interpreter: bool,
                  allow_resize: bool = False):
    """The model of `cfg` with the weights of `checkpoint` (model.pt or a training checkpoint).

    Built with interpreters so any videored file loads; they must be trained if needed. Weights
    made for another image size or frame count than `cfg`'s are an error unless allow_resize
    (then the position / time embeddings are interpolated, with a notice)."""
    from videored.models import load_pretrained

    cfg.model.pretrained_path = None  # the checkpoint holds every weight
    model = build_model(cfg, selector="interpreter")
    report = load_pretrained(model, checkpoint)
    if report.resized and not allow_resize:
        raise ValueError(f"{checkpoint}: its {', '.join(report.resized)} were made for another input "
                         f"shape than the config's model.img_size={cfg.model.img_size}"
                         + (f", model.num_frames={cfg.model.num_frames}" if is_video_model(cfg.model.name) else "")
                         + ": pass the config it was trained with (or no --config: the checkpoint's "
                         "own), or --allow-resize to evaluate it with interpolated embeddings")
    if report.resized:
        print(f"videored eval: --allow-resize: {checkpoint}: interpolated {', '.join(report.resized)} "
              f"to model.img_size={cfg.model.img_size}", file=sys.stderr, flush=True)
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


def plan_arms(methods: list[str], nets: dict[str, torch.nn.Module], *,
              kept_ratio: Optional[float] = None, match: str = "ratio",
              kept_ratios: Optional[list[float]] = None) -> list[Arm]:
    """The (method, budget) arms of an evaluation, each reference before the arms matching it.

    One budget (kept_ratios None): one arm per method, named by the method; budgeted methods
    at the fixed `kept_ratio`, else matched to the learned reference (the interpreter's own
    decisions) view by view by `match`.

    A curve (kept_ratios): the dense model once ("original"), the learned method at its own
    threshold once ("interpreter", the native point), and at every budget r ("<method>@<r>"):
    the learned method as the top-k of its own scores at kept ratio r (its `topk` setting), and
    every budgeted method matched to that top-k clip by clip: match "ratio" = the kept ratio r
    itself (a top-k keeps exactly round(r^(1/D) n) per selection on every clip, so matching its
    kept ratio clip by clip is the fixed budget r, the same as `eval --kept-ratio r`); match
    "gmacs" = the GMACs the learned top-k costs on that clip (its scoring included), so a
    baseline with a cheaper scorer keeps a few more tokens for the same cost.
    """
    entries = {m: get_method(m) for m in methods}
    if kept_ratios is None:
        plan = Budget.of(kept_ratio, match)
        arms = []
        for m in sorted(methods, key=lambda m: not entries[m].learned):
            if entries[m].budgeted:
                arms.append(Arm(m, m, nets[m], plan, plan.reference if plan.matched else None))
            else:
                arms.append(Arm(m, m, nets[m]))
        return arms
    arms = [Arm(m, m, nets[m]) for m in methods if not entries[m].budgeted]  # dense, native points
    learned = [m for m in methods if entries[m].learned and entries[m].topk is not None]
    if match == "gmacs" and not learned:
        raise ValueError("a curve matched by GMACs needs a learned method with a topk setting "
                         "(the interpreter) among the methods")
    for r in kept_ratios:
        fixed = Budget(kept_ratio=r)
        tops = [Arm(curve_arm(m, r), m, nets[m], fixed, topk=True) for m in learned]
        arms += tops
        for m in methods:
            if not entries[m].budgeted:
                continue
            if match == "ratio":
                arms.append(Arm(curve_arm(m, r), m, nets[m], fixed))
            else:  # the learned top-k's GMACs at this budget, clip by clip
                arms.append(Arm(curve_arm(m, r), m, nets[m], Budget(match="gmacs"),
                                reference=tops[0].name))
    return arms


def curve_arm(method: str, kept_ratio: float) -> str:
    """The arm name of `method` at budget `kept_ratio` on a curve, e.g. "random@0.3"."""
    return f"{method}@{kept_ratio:g}"


def measure_speed(arms: list[Arm], dataset, *, dist: DistInfo, batch_size: int, runs: int,
                  amp: bool) -> dict[str, float]:
    """Model clips/s per arm on the first batch of real clips (decoding excluded), each at its
    budget on those very clips (a matched arm's targets from its reference's untimed forward on
    them, as in `predict_arms`), all arms timed interleaved in one run after warm-up."""
    from videored.timing import time_interleaved

    n = min(batch_size, len(dataset))
    x = torch.stack([unpack_batch(dataset[i])[0] for i in range(n)]).to(dist.device)
    referenced = {a.reference for a in arms if a.reference is not None}
    outputs: dict[str, Any] = {}

    def call(arm: Arm):
        kwargs = arm.forward_kwargs(n, outputs)

        def run():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                return arm.net(x, **kwargs)
        if arm.name in referenced:
            outputs[arm.name] = run()
        return run

    fns = {a.name: call(a) for a in arms}
    seconds, _ = time_interleaved(fns, warmup=1, runs=runs, device=dist.device)
    return {name: n / s for name, s in seconds.items()}


def run_evaluation(cfg: DictConfig, *, checkpoint: str | Path, out_dir: str | Path,
                   methods: list[str], kept_ratio: Optional[float] = None,
                   kept_ratios: Optional[list[float]] = None,
                   match: str = "ratio", split: str = "test",
                   spatial_crops: int = 3, batch_size: Optional[int] = None,
                   num_workers: Optional[int] = None, speed_runs: int = 5,
                   interpretability: bool = False,
                   dense_checkpoint: Optional[str | Path] = None,
                   allow_resize: bool = False) -> Optional[dict[str, Any]]:
    """Score `methods` on `split`; returns the results dict on rank 0 (None elsewhere).

    kept_ratio: a fixed budget (fraction of patches reaching the last block) for every
    budgeted method; None: they match the interpreter view by view, by `match` ("ratio" or
    "gmacs"). kept_ratios: a trade-off curve instead, every method at every budget (`plan_arms`),
    written as results.json["curves"], tradeoff.png/.pdf and the curve table in results.md.
    dense_checkpoint: the model before token reduction. When given, `original` and the
    baselines run on its weights and `interpreter` on `checkpoint`'s, as in paper Table 4 (the
    original model, and dropping applied to it, against the IA-RED² model).
    Every batch is decoded once and run through every (method, budget) arm (`predict_arms`).
    """
    plan = Budget.of(kept_ratio, match)
    dist = init_distributed(cfg.run.device)
    amp = dist.device.type == "cuda" and cfg.run.precision == "bf16"
    video = is_video_model(cfg.model.name)
    if video:
        cfg.data.num_spatial_crops = spatial_crops
    learned = [m for m in methods if get_method(m).learned]
    model = load_for_eval(cfg, checkpoint, bool(learned), allow_resize).to(dist.device).eval()
    dense = model if dense_checkpoint is None else load_for_eval(
        cfg, dense_checkpoint, need_interpreter=False, allow_resize=allow_resize).to(dist.device).eval()
    resolve_normalization(cfg, model, dense)  # the weights' own unless the config overrides it
    dataset = build_dataset(cfg, split)
    num_classes = cfg.model.num_classes
    batch_size = batch_size or cfg.data.batch_size
    workers = loader_workers(cfg, num_workers)

    budgeted = [m for m in methods if get_method(m).budgeted]
    if kept_ratios is None and budgeted and plan.matched and plan.reference not in methods:
        raise ValueError(f"{budgeted} need a kept ratio: evaluate {plan.reference!r} too (they "
                         "match it) or give a fixed kept ratio")
    # the learned methods and those deciding with the checkpoint's trained pruners (SPViT, SViT)
    nets = {m: model if m in learned or get_method(m).weights else dense for m in methods}
    arms = plan_arms(methods, nets, kept_ratio=kept_ratio, match=match, kept_ratios=kept_ratios)
    views = predict_arms(arms, dataset, dist=dist, batch_size=batch_size, workers=workers,
                         amp=amp, progress="eval" if cfg.run.progress else None,
                         seed=cfg.run.seed)
    results: dict[str, dict[str, Any]] = {}
    for arm in arms:
        row = results[arm.name] = aggregate(views[arm.name], num_classes)
        row["method"] = arm.method
        row["setting_name"] = arm.entry.setting_name
        row["per_selection_keep_ratio"] = row["setting"]  # deprecated
        row["budget"] = arm.describe()
        row["weights"] = str(checkpoint if arm.net is model or dense is model
                             else dense_checkpoint)
        row["clips_per_s"] = None
    if speed_runs > 0:
        speeds = measure_speed(arms, dataset, dist=dist, batch_size=batch_size,
                               runs=speed_runs, amp=amp)
        for name, clips_per_s in speeds.items():
            results[name]["clips_per_s"] = clips_per_s

    interp = None
    if interpretability:
        interp = _interpretability(cfg, model, dense, split, methods, kept_ratio, match)
    barrier()
    if not dist.is_main:
        return None
    first = results[arms[0].name]
    summary = {
        "checkpoint": str(checkpoint), "dense_checkpoint": str(dense_checkpoint or checkpoint),
        "model": cfg.model.name, "data": str(cfg.data.get("root", "")),
        "split": split, "video": video,
        "budget": plan.describe() if kept_ratios is None else {"match": match, "curve": True},
        "deprecated_keys": {"per_selection_keep_ratio": "setting"},
        "device": str(dist.device), "world_size": dist.world_size,
        "num_videos": first["num_videos"], "failed_videos": first["failed_videos"],
        "failure_reasons": first["failure_reasons"],  # path -> the decoder's message and frame
        "methods": {a.name: {k: v for k, v in results[a.name].items()
                             if k not in ("num_videos", "failed_videos", "failure_reasons")}
                    for a in arms},
        "config": to_dict(cfg),
    }
    if kept_ratios is not None:
        summary.update(curve_results(summary["methods"], kept_ratios, match))
    if interp is not None:
        summary["interpretability"] = interp
        for method, row in interp.items():
            if method in summary["methods"]:
                summary["methods"][method]["interpretability"] = row
    write_reports(summary, out_dir)
    return summary


def curve_results(rows: dict[str, dict], kept_ratios: list[float], match: str) -> dict:
    """results.json's curve keys from the arm rows of a curve run: "kept_ratios", "match",
    "per_budget" [[r, {method: row}]], "native" {method: threshold row} and "curves" (built by
    `videored.curves.curves_from_results`, as `slurm.submit collect` builds them from tasks)."""
    per_budget = []
    for r in kept_ratios:
        at = {row["method"]: row for name, row in rows.items() if name == curve_arm(row["method"], r)}
        if "original" in rows:
            at = {"original": rows["original"], **at}
        per_budget.append([r, at])
    # points a method sets by itself (the interpreter's threshold, RLT's tau, trained SPViT /
    # SViT decisions): one each, marked native; the dense model is not one
    native = {name: row for name, row in rows.items()
              if name == row["method"] and name != "original" and not get_method(name).budgeted}
    return {"kept_ratios": list(kept_ratios), "match": match, "per_budget": per_budget,
            "native": native, "curves": curves_from_results(per_budget, native)}


def _interpretability(cfg, model, dense, split, methods, kept_ratio, match):
    """Kept-patch masks vs object masks, every method at the same budget as the rest of eval."""
    from videored.interpretability import interpretability_table

    masked = build_dataset(cfg, split, return_masks=True, num_spatial_crops=1)  # centre crop
    return interpretability_table(dense, masked, methods, kept_ratio, match=match,
                                  reference_model=model, num_workers=loader_workers(cfg))


def write_reports(summary: dict[str, Any], out_dir: str | Path) -> None:
    """results.json and results.md (a curve's figure: `viz.tradeoff.write_tradeoff`, drawn by
    the command: the engine draws nothing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(summary, indent=2), out / "results.json")
    atomic_write_text(results_markdown(summary), out / "results.md")


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
    if "curves" in summary:
        return "\n".join([
            f"Trade-off curves, {summary.get('model', '')} on split `{summary['split']}`: "
            f"{summary['num_videos']} videos, {len(failed)} failed to decode. Device: "
            f"{summary['device']}. Budgets (kept ratio): "
            f"{', '.join(f'{r:g}' for r in summary['kept_ratios'])}; "
            f"{matching_rule(summary['match'])}; the interpreter at each budget keeps the top of "
            "its own scores, `interpreter (threshold)` is its own decision rule.", "",
            curves_markdown(summary["curves"]), "![trade-off](tradeoff.png)", ""])
    if budget.get("match") == "fixed":
        said = f"every baseline at kept ratio {budget['kept_ratio']:g} (fixed)"
    else:
        said = (f"baselines matched to the {budget.get('reference', 'interpreter')} view by view "
                f"by {'kept ratio' if budget.get('match') == 'ratio' else 'GMACs'}")
    lines = [f"Split `{summary['split']}`: {summary['num_videos']} videos, {len(failed)} failed to "
             f"decode{' (listed in results.json; errors are over the rest)' if failed else ''}. "
             f"Device: {summary['device']}. Budget: {said}.", "", markdown_table(rows, cols), ""]
    return "\n".join(lines)

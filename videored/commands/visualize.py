"""`videored visualize`: per-frame redundancy heatmaps of a videored model on videos or images.

    videored visualize --checkpoint runs/x/model.pt -p clip.mp4 -o figs [--method all] [--gif]
    videored visualize --checkpoint runs/x/model.pt --csv data/test.csv --limit 4 -o figs
    videored visualize --checkpoint runs/x/model.pt -p DAVIS/JPEGImages/480p/bear -o figs

Writes `OUT/<stem>_<method>.png` (+ `.gif` with --gif) per input and method, and with
`--method all` also `OUT/<stem>_all.png` (methods as rows); each path is printed when written.
Videos with object masks stored beside them (`name.masks.npz`, the synthetic dataset, or a
DAVIS-style `Annotations/` folder beside a frame folder's `JPEGImages/`) get the object outlined
in white. Methods are entries of the method table (`videored.models.methods`), or an
explanation-only baseline (`methods.EXPLANATIONS`: the dense model's rollout / GradCAM / Chefer
relevance, its top patches drawn as kept); baselines match, by default, the interpreter on that
input: its kept ratio (--match ratio) or its GMACs (--match gmacs), as `videored eval` does, and
explanations keep its kept ratio; --kept-ratio R sets a fixed budget instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from videored.models.methods import EXPLANATIONS, MATCH_MODES, METHODS, get_method

# Every method that reduces tokens (`original` draws nothing: it keeps every patch).
VIEW_METHODS = tuple(m.name for m in METHODS.values() if m.reduces)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="a videored model file (model.pt written by training)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--path", type=Path,
                     help="a video or image file, a frame folder (video models; e.g. DAVIS "
                          "JPEGImages/<video>/), or a folder of them")
    src.add_argument("--csv", type=Path, help="a dataset list (`path label` lines) of videos")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--method", default="interpreter", choices=[*VIEW_METHODS, *EXPLANATIONS, "all"],
                   help="a method of the table, an explanation of the dense model (rollout, "
                        "gradcam, chefer: explanation-only), or all (every token-reduction "
                        "method)")
    p.add_argument("--match", default="ratio", choices=MATCH_MODES,
                   help="baselines match the interpreter's kept ratio (ratio) or GMACs (gmacs) "
                        "on each input")
    p.add_argument("--kept-ratio", "--keep-ratio", dest="kept_ratio", type=float, default=None,
                   help="a fixed budget instead: fraction of patch tokens reaching the last "
                        "block (default: match the interpreter; the model's keep_ratio without "
                        "an interpreter)")
    p.add_argument("--threshold", type=float, default=None,
                   help="override the interpreter's keep threshold")
    p.add_argument("--limit", type=int, default=None, help="with --csv: the first N videos")
    p.add_argument("--gif", action="store_true", help="also an animated GIF per video and method")
    p.add_argument("--zoom", type=int, default=1,
                   help="enlarge every panel by this integer factor (small inputs, e.g. 64 px)")
    p.add_argument("--smooth", action="store_true",
                   help="bilinear heatmaps (default: nearest, one flat block per patch)")
    p.add_argument("--sampling-rate", type=int, default=None,
                   help="frame stride at --target-fps (default: the model file's training config, "
                        "else 32)")
    p.add_argument("--target-fps", type=float, default=None,
                   help="default: the model file's training config, else 30")
    p.add_argument("--backend", default="auto", choices=["auto", "pyav", "decord", "torchcodec"],
                   help="video reader (videored.data.decoding; auto: PyAV selective decode)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _training_data_config(path: Path) -> dict:
    """The `data` section of the experiment config stored in a model file ({} if none)."""
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    config = obj.get("config") if isinstance(obj, dict) else None
    return dict(config.get("data") or {}) if isinstance(config, dict) else {}


def _inputs(args: argparse.Namespace, model, sampling_rate: int, target_fps: float
            ) -> Iterator[tuple[str, object, int | None, str | None]]:
    """Yield (name, PreparedInput or None, label or None, error or None) per input."""
    from videored.viz.inputs import IMAGE_SUFFIXES, prepare_input, prepared_item, test_clips

    if args.csv is not None:
        from videored.data import has_masks, iter_video_list
        from videored.normalization import model_normalization

        norm = model_normalization(model)  # the weights' own preprocessing

        # object outlines when every listed video has its masks (e.g. the synthetic dataset)
        with_masks = all(has_masks(row.path) for row in iter_video_list(args.csv)
                         if row.error is None)
        T, gh, _ = model.grid
        ds = test_clips(args.csv, num_frames=T, crop_size=gh * model.patch_size,
                        sampling_rate=sampling_rate, target_fps=target_fps, backend=args.backend,
                        return_masks=with_masks, normalization=norm,
                        sampling=args.sampling_style)
        n = len(ds) if args.limit is None else min(args.limit, len(ds))
        for i in range(n):
            item = ds[i]
            if item["failed"]:
                yield item["path"], None, None, "could not be decoded (see the warning above)"
                continue
            yield item["path"], prepared_item(ds, item), item["label"], None
        return
    from videored.data.frame_folder import is_frame_folder

    video_model = model.embed.num_frames is not None
    paths = [args.path]
    if args.path.is_dir() and not (video_model and is_frame_folder(args.path)):
        # a folder of inputs; for a video model, sub-folders of frames are videos too
        paths = sorted(p for p in args.path.iterdir()
                       if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | {
                           ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"})
                       or (video_model and is_frame_folder(p)))
        if not paths:
            raise FileNotFoundError(f"{args.path}: no video or image files")
    for path in paths:
        try:
            yield str(path), prepare_input(path, model, sampling_rate=sampling_rate,
                                           target_fps=target_fps, backend=args.backend,
                                           sampling=args.sampling_style), None, None
        except Exception as e:  # a bad file is reported and skipped; the others still render
            yield str(path), None, None, f"{type(e).__name__}: {e}"


def _learned(method: str) -> bool:
    """The interpreter (decides with trained weights); explanations are not table methods."""
    return method not in EXPLANATIONS and get_method(method).learned


def _run_methods(model, x: torch.Tensor, methods: list[str], kept_ratio: float | None,
                 match: str = "ratio"):
    """Run `methods` on one input x (C, T, H, W) or (C, H, W), at one budget
    (`run_with_explanations`: the method table's `run_methods`, explanations at the same ratio).

    -> ({method: (scores (D, T, gh, gw), keep (D, T, gh, gw) bool, predicted class, its
    probability)}, {method: note for the title}, {method: merged groups (T, gh, gw) int, for
    the in-block reducers (ToMe, EViT): the final token each patch went into}); D = groups
    (the reducers' stages), T = 1 for images.
    """
    from videored.viz.explanations import run_with_explanations
    from videored.viz.heatmap import patch_grid

    outputs = run_with_explanations(model, x.unsqueeze(0), methods, match=match,
                                    kept_ratio=kept_ratio)
    results, notes, groups = {}, {}, {}
    for m, res in outputs.items():
        if _learned(m):
            notes[m] = f"threshold {model.threshold:g}"
        elif m in EXPLANATIONS:  # the dense model explained; its top patches at the same ratio
            notes[m] = f"explanation-only, top {float(res.kept_ratio[0]):.3f} of the patches"
        elif kept_ratio is not None:
            notes[m] = f"kept ratio {kept_ratio:g} (fixed)"
        elif model.interpreters is not None:
            what = "kept ratio" if match == "ratio" else "GMACs"
            notes[m] = f"the interpreter's {what} ({res.kept_ratio[0]:.3f} kept)"
        elif get_method(m).reduce is not None:  # in-block reducers take the kept ratio itself
            notes[m] = f"kept ratio {model.keep_ratio:.3f} (model default)"
        else:
            notes[m] = f"keep ratio {model.keep_ratio:.3f} per selection (model default)"
        scores = np.stack([patch_grid(s[0], model.grid) for s in res.scores])  # (D, T, gh, gw)
        keep = np.stack([patch_grid(k[0], model.grid) for k in res.keep])
        prob, label = res.logits[0].softmax(-1).max(-1)
        results[m] = (scores, keep, int(label), float(prob))
        if res.source is not None:
            groups[m] = patch_grid(res.source[0], model.grid)
    return results, notes, groups


def main(args: argparse.Namespace) -> int:
    from videored.models import load_model_file
    from videored.viz import figures
    from videored.viz.inputs import video_frames_uint8

    overrides = {} if args.threshold is None else {"threshold": args.threshold}
    model = load_model_file(args.checkpoint, **overrides).to(args.device).eval()
    if args.kept_ratio is not None and not 0 < args.kept_ratio <= 1:
        raise SystemExit(f"--kept-ratio must be in (0, 1], got {args.kept_ratio}")
    if args.zoom < 1:
        raise SystemExit(f"--zoom must be a positive integer, got {args.zoom}")
    methods = list(VIEW_METHODS) if args.method == "all" else [args.method]
    if model.interpreters is None:
        if args.method == "interpreter":
            raise SystemExit(f"{args.checkpoint}: this model has no interpreter; choose a "
                             "baseline --method")
        methods = [m for m in methods if not _learned(m)]
        if args.kept_ratio is None and set(methods) & set(EXPLANATIONS):
            raise SystemExit(f"{args.checkpoint}: this model has no interpreter whose kept ratio "
                             f"{args.method} could keep; give --kept-ratio")
    data_cfg = _training_data_config(args.checkpoint)
    sampling_rate = args.sampling_rate or int(data_cfg.get("sampling_rate") or 32)
    target_fps = args.target_fps or float(data_cfg.get("target_fps") or 30)
    args.sampling_style = data_cfg.get("sampling") or "videored"  # the training run's convention
    video_model = model.embed.num_frames is not None
    if args.csv is not None and not video_model:
        raise SystemExit(f"--csv lists videos but {args.checkpoint} is an image model; "
                         "pass a folder of images with -p")
    args.out.mkdir(parents=True, exist_ok=True)
    written, skipped, used = [], [], set()

    def wrote(path: Path) -> None:
        written.append(path)
        print(path, flush=True)

    for name, prepared, label, error in _inputs(args, model, sampling_rate, target_fps):
        if prepared is None:
            print(f"skipped {name}: {error}", file=sys.stderr)
            skipped.append(name)
            continue
        stem = Path(name).stem
        stem = stem if stem not in used else f"{stem}_{len(used)}"
        used.add(stem)
        with torch.no_grad():
            results, notes, groups = _run_methods(model, prepared.x.to(args.device), methods,
                                                  args.kept_ratio, args.match)
        frames = video_frames_uint8(prepared)  # (T, H, W, 3): the crop the model saw
        mask = None if prepared.mask is None else prepared.mask.numpy()  # (T, H, W) bool
        truth = "" if label is None else f", label {label}"
        if mask is not None:
            truth += " | white outline: object mask"
        for m, (scores, keep, pred, prob) in results.items():
            title = (f"{m} ({notes[m]}) | {Path(name).name}: {prepared.description} | kept "
                     f"{keep[-1].mean():.2f} of the patches | predicted class {pred} "
                     f"(p={prob:.2f}){truth}")
            threshold = model.threshold if _learned(m) else None
            png = args.out / f"{stem}_{m}.png"
            if video_model:
                figures.video_figure(png, frames, scores[-1], keep[-1], model.patch_size,
                                     title=title, smooth=args.smooth, threshold=threshold,
                                     object_mask=mask, zoom=args.zoom)
            else:  # image: one panel per group (paper Fig. 4)
                figures.image_groups_figure(png, frames[0], scores[:, 0], keep[:, 0],
                                            model.patch_size, title=title, smooth=args.smooth,
                                            threshold=threshold, zoom=args.zoom)
            wrote(png)
            if m in groups:  # merged groups: outlines + each group in its mean colour
                png = args.out / f"{stem}_{m}_groups.png"
                tokens = len(np.unique(groups[m]))
                figures.groups_figure(png, frames, groups[m], model.patch_size, zoom=args.zoom,
                                      object_mask=mask if video_model else None,
                                      title=f"{m} ({notes[m]}) | {Path(name).name}: the "
                                            f"{tokens} tokens of the last block and the "
                                            f"patches each covers{truth}")
                wrote(png)
            if args.gif and video_model:
                wrote(figures.video_gif(args.out / f"{stem}_{m}.gif", frames, scores[-1],
                                        keep[-1], model.patch_size, smooth=args.smooth,
                                        object_mask=mask, zoom=args.zoom))
        if args.method == "all":
            if video_model:
                rows = {m: (s[-1], k[-1]) for m, (s, k, _, _) in results.items()}
                panels = frames
            else:  # columns = groups
                rows = {m: (s[:, 0], k[:, 0]) for m, (s, k, _, _) in results.items()}
                panels = np.repeat(frames, model.groups, axis=0)
            png = args.out / f"{stem}_all.png"
            kept = {m: float(k[-1].mean()) for m, (_, k, _, _) in results.items()}
            figures.methods_figure(png, panels, rows, model.patch_size, kept=kept,
                                   title=f"{Path(name).name}: {prepared.description}",
                                   smooth=args.smooth, zoom=args.zoom,
                                   object_mask=mask if video_model else None)
            wrote(png)
    print(f"[visualize] wrote {len(written)} files to {args.out}; skipped {len(skipped)} inputs",
          file=sys.stderr)
    return 1 if skipped and not written else 0

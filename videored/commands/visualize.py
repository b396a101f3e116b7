"""`videored visualize`: per-frame redundancy heatmaps of a videored model on videos or images.

    videored visualize --checkpoint runs/x/model.pt -p clip.mp4 -o figs [--method all] [--gif]
    videored visualize --checkpoint runs/x/model.pt --csv data/test.csv --limit 4 -o figs
    videored visualize --checkpoint runs/x/model.pt -p DAVIS/JPEGImages/480p/bear -o figs

Writes `OUT/<stem>_<method>.png` (+ `.gif` with --gif) per input and method, and with
`--method all` also `OUT/<stem>_all.png` (methods as rows); each path is printed when written.
Videos with object masks stored beside them (`name.masks.npz`, the synthetic dataset, or a
DAVIS-style `Annotations/` folder beside a frame folder's `JPEGImages/`) get the object outlined
in white. Methods are entries of the method table (`videored.models.methods`), or an
explanation of the dense model (`videored.models.explanations`: raw_attention, rollout,
attn_gradcam, lrp, transformer_attribution, feature_gradcam, chefer_iccv21; their top patches
drawn as kept); baselines match, by default, the interpreter on that input: its kept ratio
(--match ratio) or its GMACs (--match gmacs), as `videored eval` does, and explanations keep its
kept ratio; --kept-ratio R sets a fixed budget instead.

A parser and a call: inputs come from `viz.inputs.iter_inputs`, the methods run in the methods
wing (`run_with_explanations` -> `methods.run_methods`), `viz.panels` / `viz.figures` draw.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from videored.models.explanations import DEPRECATED, EXPLANATIONS, is_explanation
from videored.models.methods import MATCH_MODES, METHODS, get_method

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
    p.add_argument("--method", default="interpreter",
                   choices=[*VIEW_METHODS, *EXPLANATIONS, *DEPRECATED, "all"],
                   help="a method of the table, an explanation of the dense model "
                        f"({', '.join(EXPLANATIONS)}: explanation-only; old names "
                        f"{', '.join(DEPRECATED)} still accepted), or all (every "
                        "token-reduction method)")
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
    from videored.torch_io import load_torch_file

    obj = load_torch_file(path, what="model file", mmap=True)
    config = obj.get("config") if isinstance(obj, dict) else None
    return dict(config.get("data") or {}) if isinstance(config, dict) else {}


def _run_methods(model, x: torch.Tensor, methods: list[str], kept_ratio: float | None,
                 match: str = "ratio"):
    """`methods` on one input x (C, T, H, W) or (C, H, W) at one budget (the methods wing's
    `run_with_explanations`), as drawable panels (`viz.panels.method_panels`)."""
    from videored.models.explanations import run_with_explanations
    from videored.viz.panels import method_panels

    outputs = run_with_explanations(model, x.unsqueeze(0), methods, match=match,
                                    kept_ratio=kept_ratio)
    return method_panels(model, outputs, kept_ratio=kept_ratio, match=match)


def main(args: argparse.Namespace) -> int:
    from videored.models import load_model_file
    from videored.viz.figures import input_figures
    from videored.viz.inputs import iter_inputs, video_frames_uint8
    from videored.viz.panels import is_learned

    overrides = {} if args.threshold is None else {"threshold": args.threshold}
    try:
        model = load_model_file(args.checkpoint, **overrides).to(args.device).eval()
    except ValueError as err:  # unreadable or foreign file: one line naming it (torch_io)
        raise SystemExit(f"videored visualize: error: {err}") from None
    if args.kept_ratio is not None and not 0 < args.kept_ratio <= 1:
        raise SystemExit(f"--kept-ratio must be in (0, 1], got {args.kept_ratio}")
    if args.zoom < 1:
        raise SystemExit(f"--zoom must be a positive integer, got {args.zoom}")
    if args.method == "all":  # every reduction this model can run (RLT: video; pruners: trained)
        methods = [m for m in VIEW_METHODS if get_method(m).unusable(model) is None]
    else:
        methods = [args.method]
        why = None if is_explanation(args.method) else get_method(args.method).unusable(model)
        if why:
            raise SystemExit(f"{args.checkpoint}: {why}")
    if model.interpreters is None:
        if args.method == "interpreter":
            raise SystemExit(f"{args.checkpoint}: this model has no interpreter; choose a "
                             "baseline --method")
        methods = [m for m in methods if not is_learned(m)]
        if args.kept_ratio is None and any(map(is_explanation, methods)):
            raise SystemExit(f"{args.checkpoint}: this model has no interpreter whose kept ratio "
                             f"{args.method} could keep; give --kept-ratio")
    data_cfg = _training_data_config(args.checkpoint)
    video_model = model.embed.num_frames is not None
    if args.csv is not None and not video_model:
        raise SystemExit(f"--csv lists videos but {args.checkpoint} is an image model; "
                         "pass a folder of images with -p")
    args.out.mkdir(parents=True, exist_ok=True)
    written, skipped, used = [], [], set()
    inputs = iter_inputs(model, path=args.path, csv=args.csv, limit=args.limit,
                         sampling_rate=args.sampling_rate or int(data_cfg.get("sampling_rate")
                                                                 or 32),
                         target_fps=args.target_fps or float(data_cfg.get("target_fps") or 30),
                         backend=args.backend,
                         sampling=data_cfg.get("sampling") or "videored")  # the run's convention
    for name, prepared, label, error in inputs:
        if prepared is None:
            print(f"skipped {name}: {error}", file=sys.stderr)
            skipped.append(name)
            continue
        stem = Path(name).stem
        stem = stem if stem not in used else f"{stem}_{len(used)}"
        used.add(stem)
        with torch.no_grad():
            panels = _run_methods(model, prepared.x.to(args.device), methods, args.kept_ratio,
                                  args.match)
        for path in input_figures(
                args.out, stem, name, prepared.description, video_frames_uint8(prepared),
                panels, model.patch_size, video=video_model, threshold=model.threshold,
                learned=is_learned, label=label,
                object_mask=None if prepared.mask is None else prepared.mask.numpy(),
                all_methods=args.method == "all", gif=args.gif, smooth=args.smooth,
                zoom=args.zoom):
            written.append(path)
            print(path, flush=True)
    print(f"[visualize] wrote {len(written)} files to {args.out}; skipped {len(skipped)} inputs",
          file=sys.stderr)
    return 1 if skipped and not written else 0

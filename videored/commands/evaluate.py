"""`videored eval`: every method on one trained model, clip-1 / video-1, speed; results.json + .md.

    videored eval --config CFG --checkpoint model.pt --out DIR \
        [--methods original,random,attention,temporal_difference,interpreter] \
        [--match ratio|gmacs] [--kept-ratio R]

    videored eval --checkpoint model.pt --interpretability --masks gtsegs_ijcv.mat   # Table 1

    videored eval --checkpoint model.pt --kept-ratios 0.1,0.2,0.3,0.5 [--match ratio|gmacs]
        # trade-off curves: every method at every budget in one pass over the clips;
        # results.json["curves"], tradeoff.png/.pdf, the curve table in results.md

Every name in --methods is an entry of the method table (`videored.models.methods`); with
--masks, also the explanation-only rows (`models.explanations`), scored by --protocol
(benchmark: the public ImageNet-Segmentation protocol, the default; kept: kept-patch masks).
Budgeted methods (the baselines) match the interpreter view by view: the same kept ratio
(fraction of patches reaching the last block; --match ratio, the default) or the same GMACs
(--match gmacs), unless a fixed --kept-ratio is given; explanations keep the interpreter's kept
ratio. results.json records which. Runs under torchrun / SLURM like `train` (--masks: one
process).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from videored.deprecation import add_renamed_flag
from videored.engine.run_interpretability import TABLE1_METHODS
from videored.models.methods import ANY_MODEL_METHODS, EXPLANATIONS, MATCH_MODES, METHODS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="experiment YAML (model + data settings); default: the config stored in "
                        "the checkpoint by `videored train`")
    p.add_argument("--checkpoint", required=True,
                   help="model.pt or a training checkpoint (local file)")
    p.add_argument("--dense-checkpoint", default=None,
                   help="the model before token reduction: original and baselines run on its "
                        "weights, the interpreter on --checkpoint (paper Table 4); default: "
                        "every method on --checkpoint")
    p.add_argument("--out", type=Path, default=None, help="output dir (default: next to checkpoint)")
    p.add_argument("--methods", default=None,
                   help=f"comma list from the method table: {', '.join(METHODS)} (default: "
                        f"{','.join(ANY_MODEL_METHODS)}, and rlt,rlt_threshold on a video model; spvit* / "
                        "svit* a checkpoint with trained selectors (model.kwargs.pruners); "
                        f"with --masks: {','.join(TABLE1_METHODS)}, explanation-only "
                        f"{', '.join(EXPLANATIONS)} allowed)")
    p.add_argument("--match", default="ratio", choices=MATCH_MODES,
                   help="matched comparison: baselines reach the interpreter's kept ratio "
                        "(ratio) or its GMACs (gmacs), view by view")
    add_renamed_flag(p, "--kept-ratio", "--keep-ratio", type=float, default=None,
                     help="a fixed budget instead: fraction of patch tokens reaching the last "
                          "block for every baseline (--keep-ratio: old name, deprecated)")
    p.add_argument("--kept-ratios", default=None, type=_ratios,
                     help="trade-off curves: a comma list of budgets (e.g. 0.1,0.2,0.3,0.5,0.7); "
                          "every method at every budget on the same clips (the interpreter: the "
                          "top of its own scores, plus its threshold point); --match ratio: "
                          "baselines at each kept ratio, gmacs: at the interpreter top-k's "
                          "GMACs clip by clip (docs/evaluation.md)")
    p.add_argument("--split", default="test", help="csv split / image folder split to score")
    p.add_argument("--spatial-crops", type=int, default=3, help="video-1 views (paper: 3)")
    p.add_argument("--batch-size", type=int, default=None, help="default: data.batch_size")
    p.add_argument("--num-workers", type=int, default=None, help="default: data.num_workers")
    p.add_argument("--speed-runs", type=int, default=5,
                   help="timed rounds for clips/s (0: skip speed)")
    p.add_argument("--interpretability", action="store_true",
                   help="also mIoU / pixel acc of kept patches vs object masks (needs masks)")
    p.add_argument("--masks", type=Path, default=None,
                   help="with --interpretability: only paper Table 1 on this mask set "
                        "(gtsegs_ijcv.mat, a DAVIS-style folder, images/+masks/, or a .csv of "
                        "videos with masks); explanation baselines allowed")
    p.add_argument("--limit", type=int, default=None, help="with --masks: the first N items")
    p.add_argument("--protocol", default="benchmark", choices=("benchmark", "kept"),
                   help="with --masks: score maps as the public ImageNet-Segmentation benchmark "
                        "does (bilinear, min-max, mean threshold; + mAP), or the kept-patch "
                        "masks (the token-reduction view); see docs/evaluation.md")
    p.add_argument("--allow-resize", action="store_true",
                   help="evaluate weights made for another img_size / num_frames than --config "
                        "gives, interpolating their embeddings (default: an error)")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def _ratios(text: str) -> list[float]:
    """"0.1,0.3" (or "[0.1,0.3]", a sweep's grid value) -> [0.1, 0.3]."""
    try:
        return [float(r) for r in text.strip().strip("[]").split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def main(args: argparse.Namespace) -> int:
    from videored.engine.run_eval import eval_command

    try:
        out = eval_command(checkpoint=args.checkpoint, config=args.config,
                           overrides=args.overrides, out_dir=args.out, methods=args.methods,
                           match=args.match, kept_ratio=args.kept_ratio,
                           kept_ratios=args.kept_ratios, split=args.split,
                           spatial_crops=args.spatial_crops, batch_size=args.batch_size,
                           num_workers=args.num_workers, speed_runs=args.speed_runs,
                           interpretability=args.interpretability, masks=args.masks,
                           limit=args.limit, protocol=args.protocol, allow_resize=args.allow_resize,
                           dense_checkpoint=args.dense_checkpoint)
    except (ValueError, FileNotFoundError, KeyError, ImportError) as err:  # say what, no traceback
        print(f"videored eval: {err}", file=sys.stderr)
        return 2
    if out is not None:  # rank 0
        written = [out / "results.json", out / "results.md"]
        if args.kept_ratios is not None:  # the figure is drawn here: the engine draws nothing
            from videored.viz.tradeoff import write_tradeoff

            written += write_tradeoff(json.loads(written[0].read_text()), out)
        print(written[1].read_text())
        print(f"wrote {', '.join(str(f) for f in written)}")
    return 0

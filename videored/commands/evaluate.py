"""`videored eval`: every method on one trained model, clip-1 / video-1, speed; results.json + .md.

    videored eval --config CFG --checkpoint model.pt --out DIR \
        [--methods original,random,attention,temporal_difference,interpreter] [--keep-ratio R]

    videored eval --checkpoint model.pt --interpretability --masks gtsegs_ijcv.mat   # Table 1

Baselines keep the interpreter's measured mean kept ratio on the same data unless --keep-ratio
is given (the paper compares methods at equal speed). Runs under torchrun / SLURM like `train`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videored.engine.run_interpretability import TABLE1_METHODS
from videored.models.selectors import METHOD_SELECTORS
from videored.viz.explanations import EXPLANATIONS

METHODS = tuple(METHOD_SELECTORS)


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
                   help=f"comma list (default: {','.join(METHODS)}; with --masks: "
                        f"{','.join(TABLE1_METHODS)})")
    p.add_argument("--keep-ratio", type=float, default=None,
                   help="baselines' keep ratio (default: the interpreter's measured kept ratio)")
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
    p.add_argument("overrides", nargs="*", metavar="key=value")


def main(args: argparse.Namespace) -> int:
    from videored.engine.config import ConfigError
    from videored.engine.run_eval import config_for_checkpoint

    if args.masks is not None and not args.interpretability:
        print("videored eval: --masks goes with --interpretability", file=sys.stderr)
        return 2
    allowed = METHODS + EXPLANATIONS if args.masks is not None else METHODS
    default = TABLE1_METHODS if args.masks is not None else METHODS
    methods = [m.strip() for m in (args.methods or ",".join(default)).split(",") if m.strip()]
    unknown = [m for m in methods if m not in allowed]
    if unknown:
        hint = (f"; {', '.join(EXPLANATIONS)} are explanation-only: use them with "
                "--interpretability --masks PATH" if set(unknown) & set(EXPLANATIONS) else "")
        print(f"videored eval: unknown methods {unknown}; choose from {', '.join(allowed)}{hint}",
              file=sys.stderr)
        return 2
    try:
        cfg = config_for_checkpoint(args.checkpoint, args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"videored eval: config error: {err}", file=sys.stderr)
        return 2
    if "interpreter" not in methods and args.keep_ratio is None and set(methods) - {"original"}:
        print("videored eval: baselines need --keep-ratio when 'interpreter' is not evaluated",
              file=sys.stderr)
        return 2
    out = args.out or Path(args.checkpoint).resolve().parent
    if args.masks is not None:  # paper Table 1 only (new module: engine/run_interpretability)
        from videored.engine.run_interpretability import run_interpretability

        try:
            run_interpretability(cfg, checkpoint=args.checkpoint, masks=args.masks, out_dir=out,
                                 methods=methods, keep_ratio=args.keep_ratio,
                                 dense_checkpoint=args.dense_checkpoint,
                                 batch_size=args.batch_size, num_workers=args.num_workers,
                                 limit=args.limit)
        except (ValueError, FileNotFoundError, KeyError, ImportError) as err:
            print(f"videored eval: {err}", file=sys.stderr)
            return 2
        print((out / "results.md").read_text())
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
        return 0
    from videored.engine.run_eval import run_evaluation

    try:
        results = run_evaluation(cfg, checkpoint=args.checkpoint, out_dir=out, methods=methods,
                                 keep_ratio=args.keep_ratio, split=args.split,
                                 spatial_crops=args.spatial_crops, batch_size=args.batch_size,
                                 num_workers=args.num_workers, speed_runs=args.speed_runs,
                                 interpretability=args.interpretability,
                                 dense_checkpoint=args.dense_checkpoint)
    except (ValueError, FileNotFoundError) as err:  # bad checkpoint / data: say what, no traceback
        print(f"videored eval: {err}", file=sys.stderr)
        return 2
    if results is not None:  # rank 0
        print((out / "results.md").read_text())
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0

"""`videored train`: run Algorithm 1 (or supervised finetuning) from a YAML experiment config.

    videored train --config configs/k400/jointst_b_8x224_iared2.yaml [--out DIR]
                   [--resume auto|PATH] [dotted.key=value ...]

Under torchrun (or SLURM, or the submitit launcher) every process runs this same command.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (may name a `_base_`)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<run.name>)")
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="`auto`: newest valid checkpoint in <out>/checkpoints (fresh start "
                             "if none); or a checkpoint file")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. optim.lr=1e-3 data.batch_size=4")


def main(args: argparse.Namespace) -> int:
    from videored.engine.config import ConfigError, load_config
    from videored.engine.trainer import train

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"videored train: config error: {err}", file=sys.stderr)
        return 2
    out = args.out or f"runs/{cfg.run.name}"
    from videored.engine.substitutions import TooManyBadVideosError

    try:
        summary = train(cfg, out, resume=args.resume)
    except TooManyBadVideosError as err:  # a data problem, not a bug: the message, no traceback
        print(f"videored train: error: {err}", file=sys.stderr)
        return 1
    if summary.get("world_size", 1) == 1 or _is_rank0():
        for row in summary["stages"]:
            val = row.get("val")
            extra = f"  val acc {val['acc']:.3f} kept {val['kept']:.3f}" if val else ""
            print(f"{row['stage']:>14}: train loss {row['train'].get('loss', float('nan')):.4f}{extra}")
        print(substitution_line(summary["substitutions"]))
        print(f"run directory: {out}")
    return 0


def substitution_line(subs: dict) -> str:
    """The end-of-run line on bad training videos (summary.json "substitutions" has them all)."""
    bad = list(subs["bad_videos"])
    line = f"substituted items (bad videos): {subs['substituted']} of {subs['items']} training items"
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        line += f"; {len(bad)} bad videos: {shown} (reasons in summary.json, per epoch in metrics.jsonl)"
    return line


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"

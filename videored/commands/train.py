"""`videored train`: run Algorithm 1 (or supervised finetuning) from a YAML experiment config.

    videored train --config configs/k400/jointst_b_8x224_iared2.yaml [--out DIR]
                   [--resume auto|fresh|PATH] [dotted.key=value ...]

Under torchrun (or SLURM, or the submitit launcher) every process runs this same command.
"""
from __future__ import annotations

import argparse
import sys


RESUME_HELP = ("`auto`: continue from the newest checkpoint in <out>/checkpoints that loads (a fresh "
               "start when there is none; an error naming each file when there are some and none "
               "loads); `fresh`: start over, moving an earlier run's files to <out>/replaced/<time>/; "
               "or a checkpoint file. Without --resume a folder that holds a run is refused")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (may name a `_base_`)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<run.name>)")
    parser.add_argument("--resume", default=None, metavar="auto|fresh|PATH", help=RESUME_HELP)
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
    from videored.engine.checkpoint import NoUsableCheckpointError, ResumeConfigError
    from videored.engine.run_folder import RunFolderError
    from videored.engine.substitutions import TooManyBadVideosError
    from videored.engine.trainer import NonFiniteLossError
    from videored.atomic_io import WriteError
    from videored.models.formats import CheckpointFormatError
    from videored.torch_io import UnreadableFileError

    try:
        summary = train(cfg, out, resume=args.resume)
    except (RunFolderError, NoUsableCheckpointError, ResumeConfigError, UnreadableFileError,
            CheckpointFormatError, ConfigError) as err:  # refused before training: nothing written
        print(f"videored train: error: {err}", file=sys.stderr)
        return 2
    except (TooManyBadVideosError, NonFiniteLossError, WriteError) as err:
        # a data, optimization or disk problem, not a bug: the message, no traceback; the
        # checkpoints written so far are intact (--resume auto continues from them)
        print(f"videored train: error: {err}", file=sys.stderr)
        return 1
    if summary.get("world_size", 1) == 1 or _is_rank0():
        for row in summary["stages"]:
            val = row.get("val")
            extra = f"  val acc {val['acc']:.3f} kept {val['kept']:.3f}" if val else ""
            print(f"{row['stage']:>14}: train loss {row['train'].get('loss', float('nan')):.4f}{extra}")
        print(substitution_line(summary["substitutions"]))
        print(f"skipped steps (non-finite loss or gradient): {summary['nonfinite_steps']} of "
              f"{summary['global_steps']}")
        if summary.get("config_changes"):
            print(f"config changed on resume: {len(summary['config_changes'])} time(s), "
                  "see config_changes.json")
        print(f"run directory: {out}")
    return 0


def substitution_line(subs: dict) -> str:
    """The end-of-run line on bad training videos (summary.json "substitutions" has them all)."""
    bad = list(subs["bad_videos"])
    line = f"substituted items (bad videos): {subs['substituted']} of {subs['items']} training items"
    if subs.get("malformed_lines"):
        line += f"; {subs['malformed_lines']} malformed list lines left out"
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        line += f"; {len(bad)} bad videos: {shown} (reasons in summary.json, per epoch in metrics.jsonl)"
    return line


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"

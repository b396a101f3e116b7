"""`videored bench`: speed tables (realized speed-up vs FLOPs ratio), printed and saved as JSON."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from videored.bench.report import VIDEO, run_bench
from videored.deprecation import add_renamed_flag
from videored.models.methods import ANY_MODEL_METHODS, METHODS
from videored.models.ragged import RAGGED_MODES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--quick", action="store_true",
                   help="fewer rows and rounds, same columns (<= 5 min on 2 CPU cores)")
    p.add_argument("--models", default=None,
                   help=f"comma list (default: {VIDEO},deit_small_patch16_224,deit_base_patch16_224)")
    p.add_argument("--methods", default=",".join(ANY_MODEL_METHODS),
                   help=f"comma list from the method table: {', '.join(METHODS)} (default: "
                        f"{','.join(ANY_MODEL_METHODS)}; rlt runs on the video model only, "
                        "spvit / svit with untrained selectors at each budget; the native "
                        "entries have no budget and are not timed)")
    add_renamed_flag(p, "--kept-ratios", "--keep-ratios", default="1.0,0.7,0.5,0.3",
                     help="budgets: fractions of patch tokens reaching the last block "
                          "(--keep-ratios: old name, deprecated)")
    p.add_argument("--batch-sizes", default=None, help="default: 1,8 (CPU), 1,8,32 (GPU)")
    p.add_argument("--runs", type=int, default=None, help="timed rounds per cell (median)")
    p.add_argument("--decode", action="store_true", help="also the video decoding table")
    p.add_argument("--variable-length", default="8",
                   help="batch sizes of the variable-length rows (interpreter with unequal per-clip "
                        "counts vs random; docs/benchmarks.md); empty: skip them")
    p.add_argument("--ragged-modes", default=None,
                   help="ragged modes of those rows (default: pad,bucket,packed on CPU, and jagged too on CUDA)")
    p.add_argument("--ragged", default=None, choices=RAGGED_MODES,
                   help="ragged mode of the speed rows (clips keeping unequal counts: the interpreter "
                        "at batch > 1); default: the model's (auto: packed unless hooks)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (torch.set_num_threads; default: torch's own). "
                        "1 gives steadier CPU numbers on a shared machine; the device column records it")
    p.add_argument("--json", type=Path, default=None, help="write all rows to this JSON file")
    p.add_argument("--plot", action="store_true",
                   help="also draw the speed rows' realized speed-up against their FLOPs ratio "
                        "with the y = x limit, next to the JSON (<json stem>.png / .pdf)")


def main(args: argparse.Namespace) -> int:
    if args.plot and args.json is None:  # before the (long) run, not after it
        print("videored bench: --plot draws next to the JSON: give --json PATH", file=sys.stderr)
        return 2
    batches = args.batch_sizes or ("1,8" if args.device == "cpu" else "1,8,32")
    run_bench(models=(args.models or f"{VIDEO},deit_small_patch16_224,deit_base_patch16_224").split(","),
              methods=args.methods, kept_ratios=[float(r) for r in args.kept_ratios.split(",")],
              batch_sizes=[int(b) for b in batches.split(",")], device=args.device,
              dtype=args.dtype, quick=args.quick, runs=args.runs,
              variable_length=[int(b) for b in args.variable_length.split(",") if b],
              ragged_modes=args.ragged_modes.split(",") if args.ragged_modes else None,
              ragged=args.ragged, threads=args.threads, decode=args.decode, json_path=args.json,
              plot=args.plot)
    return 0

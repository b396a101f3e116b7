"""`videored bench`: speed tables (realized speed-up vs FLOPs ratio), printed and saved as JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from videored.bench.speed import dense_vs_timm, interpreter_cost, speed_table
from videored.models.methods import METHODS, parse_methods
from videored.models.ragged import RAGGED_MODES
from videored.bench.variable_length import variable_length_table
from videored.tables import markdown_table

SPEED_COLUMNS = [
    ("model", "model", "s"), ("method", "method", "s"), ("target_kept_ratio", "budget", ".1f"),
    ("batch_size", "batch", "d"), ("dtype", "dtype", "s"), ("clips_per_s", "clips/s", ".2f"),
    ("speedup", "speed-up", ".2f"), ("flops_ratio", "FLOPs ratio", ".2f"),
    ("efficiency", "speed-up / FLOPs ratio", ".2f"), ("gflops", "GFLOPs", ".1f"),
    ("kept_ratio", "kept", ".2f"), ("peak_mem_mb", "peak MB", ".0f"), ("ragged", "ragged", "s"),
]
VARIABLE_COLUMNS = [
    ("model", "model", "s"), ("batch_size", "batch", "d"), ("keep_ratio", "mean keep", ".1f"),
    ("kept_min", "kept min", ".2f"), ("kept_max", "kept max", ".2f"), ("ragged", "ragged", "s"),
    ("sdpa_backends", "SDPA", "s"), ("clips_per_s", "clips/s", ".2f"),
    ("random_clips_per_s", "random clips/s", ".2f"), ("relative_to_random", "relative to random", ".2f"),
    ("flops_relative", "FLOPs relative", ".2f"),
]
VIDEO = "timesformer_jointst_base_patch16_224"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--quick", action="store_true",
                   help="fewer rows and rounds, same columns (<= 5 min on 2 CPU cores)")
    p.add_argument("--models", default=None,
                   help=f"comma list (default: {VIDEO},deit_small_patch16_224,deit_base_patch16_224)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma list from the method table: {', '.join(METHODS)}")
    p.add_argument("--kept-ratios", "--keep-ratios", dest="kept_ratios", default="1.0,0.7,0.5,0.3",
                   help="budgets: fractions of patch tokens reaching the last block")
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


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    models = (args.models or f"{VIDEO},deit_small_patch16_224,deit_base_patch16_224").split(",")
    methods = parse_methods(args.methods)
    ratios = [float(r) for r in args.kept_ratios.split(",")]
    batches = args.batch_sizes or ("1,8" if args.device == "cpu" else "1,8,32")
    batches = [int(b) for b in batches.split(",")]
    runs = args.runs or (3 if args.quick else 5)
    if args.quick:  # the same columns on fewer cells
        methods = [m for m in methods if m in ("original", "interpreter", "random")]
        ratios = [r for r in ratios if r in (1.0, 0.5, 0.3)]
    say = lambda msg: print(f"[bench] {msg}", flush=True)  # noqa: E731
    rows = []
    for name in models:
        model_batches = [1] if args.quick and name == VIDEO and args.device == "cpu" else batches
        rows += [r.as_dict() for r in speed_table(
            name, kept_ratios=ratios, batch_sizes=model_batches, methods=methods,
            device=args.device, dtype=args.dtype, runs=runs, progress=say,
            model_kwargs={"ragged": args.ragged} if args.ragged else None)]
    for row in rows:
        row["efficiency"] = row["speedup"] / row["flops_ratio"]
    print("\n## Speed: realized speed-up vs analytic FLOPs ratio\n")
    print(markdown_table(rows, SPEED_COLUMNS))

    say("dense path vs timm VisionTransformer, interpreter cost")
    reference = models[0]  # the video model by default
    checks = [dense_vs_timm(reference, device=args.device, runs=runs)]
    cost = [interpreter_cost(reference, device=args.device, runs=runs)]
    print("\n## Dense path vs timm's VisionTransformer (same token count)\n")
    print(markdown_table(checks, [("model", "model", "s"), ("tokens", "tokens", "d"),
                                  ("videored_s", "videored s", ".3f"), ("timm_s", "timm s", ".3f"),
                                  ("relative_speed", "videored / timm speed", ".3f")]))
    print("\n## Interpreter cost (all tokens scored) vs dense forward\n")
    print(markdown_table(cost, [("model", "model", "s"), ("interpreter_s", "interpreter s", ".4f"),
                                ("dense_s", "dense s", ".3f"),
                                ("time_fraction", "time fraction", ".4f"),
                                ("macs_fraction", "MACs fraction", ".4f")]))
    variable = []
    vl_batches = [int(b) for b in args.variable_length.split(",") if b]
    modes = (args.ragged_modes or ("pad,bucket,packed" if args.device == "cpu" else "pad,bucket,packed,jagged")).split(",")
    for name in models if vl_batches else []:
        for batch in vl_batches:
            variable += variable_length_table(name, batch_size=batch, modes=modes, device=args.device,
                                              dtype=args.dtype, runs=runs, progress=say)
    if variable:
        print("\n## Variable-length batches: interpreter (unequal counts) vs random (equal)\n")
        print(markdown_table(variable, VARIABLE_COLUMNS))
    decode = []
    if args.decode:
        from videored.bench.decode import format_table, run_decode_benchmark
        decode = run_decode_benchmark(clips=5 if args.quick else 20, rounds=1 if args.quick else 3)
        print("\n## Decoding: training clips per CPU-second of one worker\n")
        print(format_table(decode))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(speed=rows, dense_vs_timm=checks,
                                             interpreter_cost=cost, variable_length=variable,
                                             decode=decode), indent=2))
        say(f"wrote {args.json}")
    return 0

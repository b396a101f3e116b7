"""`videored bench`: the speed tables for a list of models (realized speed-up vs FLOPs ratio,
the dense path vs timm, the interpreter's cost, variable-length batches, optionally decoding),
printed as markdown and saved as JSON. The command (`commands/bench.py`) parses and calls
`run_bench`."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from videored.bench.speed import dense_vs_timm, interpreter_cost, speed_table
from videored.bench.variable_length import variable_length_table
from videored.models.methods import parse_methods
from videored.tables import markdown_table

SPEED_COLUMNS = [
    ("model", "model", "s"), ("method", "method", "s"), ("target_kept_ratio", "budget", ".1f"),
    ("batch_size", "batch", "d"), ("dtype", "dtype", "s"), ("clips_per_s", "clips/s", ".2f"),
    ("speedup", "speed-up", ".2f"), ("flops_ratio", "FLOPs ratio", ".2f"),
    ("efficiency", "speed-up / FLOPs ratio", ".2f"), ("gflops", "GFLOPs", ".1f"),
    ("kept_ratio", "kept", ".2f"), ("peak_mem_mb", "peak MB", ".0f"), ("ragged", "ragged", "s"),
]
VARIABLE_COLUMNS = [
    ("model", "model", "s"), ("batch_size", "batch", "d"), ("kept_ratio_target", "mean kept", ".1f"),
    ("kept_min", "kept min", ".2f"), ("kept_max", "kept max", ".2f"), ("ragged", "ragged", "s"),
    ("sdpa_backends", "SDPA", "s"), ("clips_per_s", "clips/s", ".2f"),
    ("random_clips_per_s", "random clips/s", ".2f"), ("relative_to_random", "relative to random", ".2f"),
    ("flops_relative", "FLOPs relative", ".2f"),
]
VIDEO = "timesformer_jointst_base_patch16_224"




def run_bench(*, models: list[str], methods: str, kept_ratios: list[float], batch_sizes: list[int],
              device: str = "cpu", dtype: str = "fp32", quick: bool = False,
              runs: int | None = None, variable_length: list[int] = (8,),
              ragged_modes: list[str] | None = None, ragged: str | None = None,
              threads: int | None = None, decode: bool = False,
              json_path: Path | None = None, plot: bool = False) -> dict:
    """Every table for `models`; prints them and returns (and writes to json_path) the rows.
    plot: also the speed-up vs FLOPs ratio figure next to the JSON (`plot_speedup`)."""
    if threads:
        torch.set_num_threads(threads)
    methods = parse_methods(methods)
    ratios = list(kept_ratios)
    runs = runs or (3 if quick else 5)
    if quick:  # the same columns on fewer cells
        methods = [m for m in methods if m in ("original", "interpreter", "random")]
        ratios = [r for r in ratios if r in (1.0, 0.5, 0.3)]
    say = lambda msg: print(f"[bench] {msg}", flush=True)  # noqa: E731
    rows = []
    for name in models:
        model_batches = [1] if quick and name == VIDEO and device == "cpu" else batch_sizes
        rows += [r.as_dict() for r in speed_table(
            name, kept_ratios=ratios, batch_sizes=model_batches, methods=methods,
            device=device, dtype=dtype, runs=runs, progress=say,
            model_kwargs={"ragged": ragged} if ragged else None)]
    for row in rows:
        row["efficiency"] = row["speedup"] / row["flops_ratio"]
    print("\n## Speed: realized speed-up vs analytic FLOPs ratio\n")
    print(markdown_table(rows, SPEED_COLUMNS))

    say("dense path vs timm VisionTransformer, interpreter cost")
    reference = models[0]  # the video model by default
    checks = [dense_vs_timm(reference, device=device, runs=runs)]
    cost = [interpreter_cost(reference, device=device, runs=runs)]
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
    modes = ragged_modes or (["pad", "bucket", "packed"] if device == "cpu"
                             else ["pad", "bucket", "packed", "jagged"])
    for name in models if variable_length else []:
        for batch in variable_length:
            variable += variable_length_table(name, batch_size=batch, modes=modes, device=device,
                                              dtype=dtype, runs=runs, progress=say)
    if variable:
        print("\n## Variable-length batches: interpreter (unequal counts) vs random (equal)\n")
        print(markdown_table(variable, VARIABLE_COLUMNS))
    decode_rows = []
    if decode:
        from videored.bench.decode import format_table, run_decode_benchmark
        decode_rows = run_decode_benchmark(clips=5 if quick else 20, rounds=1 if quick else 3)
        print("\n## Decoding: training clips per CPU-second of one worker\n")
        print(format_table(decode_rows))
    result = dict(speed=rows, dense_vs_timm=checks, interpreter_cost=cost,
                  variable_length=variable, decode=decode_rows)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
        say(f"wrote {json_path}")
        if plot:
            say(f"wrote {', '.join(str(p) for p in plot_speedup(rows, json_path))}")
    return result


def plot_speedup(rows: list[dict], json_path: Path) -> list[Path]:
    """The speed rows' realized speed-up against their FLOPs ratio, y = x drawn, saved next to
    the JSON (`<stem>.png`, `<stem>.pdf`)."""
    from videored.viz.tradeoff import draw_speedup

    devices = ", ".join(dict.fromkeys(str(r.get("device", "")) for r in rows))
    dtypes = ", ".join(dict.fromkeys(str(r.get("dtype", "")) for r in rows))
    return draw_speedup(rows, json_path.with_suffix(""),
                        title=f"realized speed-up vs FLOPs ratio | {devices} | {dtypes}")

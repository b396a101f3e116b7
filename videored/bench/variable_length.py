"""Variable-length batches: the interpreter keeping a different count per clip vs random.

A trained interpreter keeps a different number of tokens in each clip; random keeps the same
number in every clip. At the same mean kept ratio the two cost about the same FLOPs, but a
padded batch runs every clip as long as its longest. Here the (untrained) interpreter's
thresholds are set per clip so that clip b of the batch keeps ratios[b] of its tokens, spread
linearly over mean * (1 ± spread); random keeps the mean ratio in every clip. Both are timed
interleaved (`speed.time_interleaved`), the interpreter once per ragged mode (pad / bucket /
packed / jagged, `videored.models.ragged`).

`relative_to_random` = interpreter clips/s / random clips/s. `flops_relative` = random GMACs /
interpreter GMACs: what perfect (padding-free) execution would reach, slightly below 1 because
attention grows with n² and the counts differ.

On CUDA the jagged rows run under `sdpa_kernel([FLASH_ATTENTION, EFFICIENT_ATTENTION])`: SDPA
raises rather than falling back to the math kernel, so a row that exists ran a fused kernel.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Iterable

import torch

from videored.bench.common import device_name, example_input, time_interleaved
from videored.deprecation import warn_renamed
from videored.models import create_model
from videored.models.budget import Budget, calibrate_interpreter
from videored.models.methods import get_method


def clip_ratios(mean: float, batch_size: int, spread: float) -> list[float]:
    """batch_size kept ratios spread evenly over mean * (1 - spread) .. mean * (1 + spread)."""
    if batch_size == 1:
        return [mean]
    return [min(1.0, mean * (1 + spread * (2 * b / (batch_size - 1) - 1))) for b in range(batch_size)]


def per_clip_thresholds(model, x: torch.Tensor, ratios: list[float]) -> list[torch.Tensor]:
    """(B, 1) thresholds per group so that clip b keeps ratios[b] of its patches in the end
    (the one interpreter calibration, `budget.calibrate_interpreter`, per clip)."""
    with torch.inference_mode():
        return calibrate_interpreter(model, x, list(ratios))


def _fused_sdpa_only(device: torch.device):
    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])


def variable_length_table(model_name: str, *, batch_size: int = 8, kept_ratio: float = 0.5,
                          spread: float = 0.5, modes: Iterable[str] = ("pad", "bucket", "packed"),
                          device: str = "cpu", dtype: str = "fp32", warmup: int = 1,
                          runs: int = 3, model_kwargs: dict | None = None,
                          progress: Callable[[str], None] | None = None,
                          keep_ratio: float | None = None) -> list[dict]:
    """One row per ragged mode: interpreter (unequal counts) against random (equal counts), at
    mean kept_ratio (keep_ratio: its old name, deprecated)."""
    if keep_ratio is not None:
        warn_renamed("keep_ratio", "kept_ratio", "variable_length_table")
        kept_ratio = keep_ratio
    dev = torch.device(device)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    model = create_model(model_name, selector="interpreter", **(model_kwargs or {})).to(dev).eval()
    x = example_input(model, batch_size, dev)
    ratios = clip_ratios(kept_ratio, batch_size, spread)
    thresholds = per_clip_thresholds(model, x, ratios)
    modes = list(modes)

    budget = Budget(kept_ratio=kept_ratio)

    def call(selector: str, mode: str) -> Callable[[], object]:
        def fn():
            model.ragged = mode
            if get_method(selector).learned:
                for interpreter, t in zip(model.interpreters, thresholds):
                    interpreter.threshold = t
            kernels = _fused_sdpa_only(dev) if mode == "jagged" else nullcontext()
            with torch.inference_mode(), kernels, torch.autocast(
                    dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                return model(x, **budget.forward_kwargs(model, get_method(selector)))
        return fn

    fns = {"random": call("random", "bucket")} | {m: call("interpreter", m) for m in modes}
    if progress:
        progress(f"{model_name} batch {batch_size}, variable length: {len(fns)} configs x {runs} rounds")
    seconds, _ = time_interleaved(fns, warmup=warmup, runs=runs, device=dev)
    random_out = fns["random"]()
    random_gflops = float(random_out.gflops.float().mean())
    rows = []
    for mode in modes:
        out = fns[mode]()
        kept = out.kept_ratio.float()
        backends = ("flash|efficient" if dev.type == "cuda" else "cpu default") if mode == "jagged" else "default"
        rows.append(dict(
            model=model_name, batch_size=batch_size, kept_ratio_target=kept_ratio, spread=spread,
            ragged=mode, device=device_name(dev), dtype=dtype, sdpa_backends=backends,
            clips_per_s=batch_size / seconds[mode], random_clips_per_s=batch_size / seconds["random"],
            relative_to_random=seconds["random"] / seconds[mode],
            flops_relative=random_gflops / float(out.gflops.float().mean()),
            kept_ratio=float(kept.mean()), kept_min=float(kept.min()), kept_max=float(kept.max()),
            random_kept_ratio=float(random_out.kept_ratio.float().mean())))
    return rows

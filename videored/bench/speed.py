"""Model speed: realized speed-up of token removal against its FLOPs ratio, side by side.

Every configuration of one table is timed in the same process, interleaved round by round
(config A, B, C, A, B, C, ...), so that a noisy neighbour slows all of them alike; each cell is
the median over rounds after warm-up, with device synchronization on CUDA
(`videored.timing.time_interleaved`, shared with evaluation and the step benchmark).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import timm
import torch

from videored.bench.common import device_name, example_input, time_interleaved
from videored.models import TokenReductionViT, create_model
from videored.models.budget import Budget, calibrate_interpreter
from videored.models.methods import ANY_MODEL_METHODS, get_method


@dataclass
class SpeedRow:
    model: str
    method: str
    target_kept_ratio: float  # the budget: fraction of patch tokens meant to reach the last block
    batch_size: int
    device: str
    dtype: str
    clips_per_s: float
    seconds: float  # median seconds per forward
    speedup: float  # vs `original` of the same model/batch in the same run
    flops_ratio: float  # analytic dense GMACs / this row's GMACs
    gflops: float  # per clip, selector included
    kept_ratio: float  # measured fraction of patch tokens kept
    peak_mem_mb: float | None
    ragged: str = "auto"  # how blocks ran clips with unequal kept counts (model.ragged)

    def as_dict(self) -> dict:
        return asdict(self)


def speed_table(model_name: str, *, kept_ratios: Iterable[float], batch_sizes: Iterable[int],
                methods: Iterable[str] = ANY_MODEL_METHODS, device: str = "cpu", dtype: str = "fp32",
                warmup: int = 1, runs: int = 3, model_kwargs: dict | None = None,
                model: TokenReductionViT | None = None, inputs: torch.Tensor | None = None,
                progress: Callable[[str], None] | None = None) -> list[SpeedRow]:
    """Rows for one model: `original` once per batch size, every other method at every budget.

    kept_ratios are budgets in the method table's vocabulary: kept ratios (fraction of patch
    tokens reaching the last block). Baselines reach them through their setting
    (`Budget.forward_kwargs`), the interpreter through thresholds calibrated on the batch
    (`calibrate_interpreter`). model / inputs: a given model and clips instead of `model_name`'s
    untrained weights and random inputs (inputs (B, ...): batch_sizes are then ignored).
    """
    dev = torch.device(device)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    methods = [get_method(m).name for m in methods]
    if model is None:  # SPViT / SViT at a budget: untrained selectors cost what trained ones do
        pruners = sorted({get_method(m).weights for m in methods} - {None})
        model = create_model(model_name, selector="interpreter",
                             **{"pruners": pruners, **(model_kwargs or {})})
    model = model.to(dev).eval()
    # rows at kept-ratio budgets: what this model can run (RLT: video only) and has a budget
    methods = [m for m in methods if get_method(m).unusable(model) is None
               and not get_method(m).native]
    if inputs is not None:
        batch_sizes = [len(inputs)]
    rows = []
    for batch_size in batch_sizes:
        x = inputs.to(dev) if inputs is not None else example_input(model, batch_size, dev)
        configs: dict[str, tuple[str, float]] = {"original|1.0": ("original", 1.0)}
        for method in methods:
            for ratio in kept_ratios:
                if get_method(method).reduces and ratio < 1.0:
                    configs[f"{method}|{ratio}"] = (method, ratio)
        thresholds = {}
        if any(get_method(m).learned for m in methods):
            saved = [interpreter.threshold for interpreter in model.interpreters]
            with torch.inference_mode():
                thresholds = {r: calibrate_interpreter(model, x, r) for r in kept_ratios}

        def run(method: str, ratio: float) -> Callable[[], object]:
            kwargs = Budget(kept_ratio=ratio).forward_kwargs(model, get_method(method))

            def call():
                if get_method(method).learned:
                    for interpreter, t in zip(model.interpreters, thresholds[ratio]):
                        interpreter.threshold = t
                with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype,
                                                            enabled=amp_dtype is not None):
                    return model(x, **kwargs)
            return call

        fns = {name: run(*cfg) for name, cfg in configs.items()}
        if progress:
            progress(f"{model_name} batch {batch_size}: {len(fns)} configs x {runs} rounds")
        seconds, peaks = time_interleaved(fns, warmup=warmup, runs=runs, device=dev)
        dense_gflops = None
        for name, (method, ratio) in configs.items():
            out = fns[name]()
            gflops = float(out.gflops.float().mean())
            dense_gflops = dense_gflops or gflops  # "original" is first
            rows.append(SpeedRow(
                model=model_name, method=method, target_kept_ratio=ratio,
                batch_size=batch_size, device=device_name(dev), dtype=dtype,
                clips_per_s=batch_size / seconds[name], seconds=seconds[name],
                speedup=seconds["original|1.0"] / seconds[name],
                flops_ratio=dense_gflops / gflops, gflops=gflops,
                kept_ratio=float(out.kept_ratio.mean()), peak_mem_mb=peaks[name],
                ragged=model.ragged))
        if thresholds:  # leave the model as it came
            for interpreter, t in zip(model.interpreters, saved):
                interpreter.threshold = t
    return rows


def dense_vs_timm(model_name: str, *, batch_size: int = 1, device: str = "cpu", warmup: int = 1,
                  runs: int = 3, model_kwargs: dict | None = None) -> dict:
    """Our dense path against timm's own VisionTransformer with the same token count.

    A video of T frames of S x S is N = T*(S/16)² patches; timm's ViT on an S x T*S image has the
    same N patches and one cls token, so both run the same blocks over the same sequence length.
    """
    dev = torch.device(device)
    ours = create_model(model_name, **(model_kwargs or {})).to(dev).eval()
    T, gh, gw = ours.grid
    size = gh * ours.patch_size
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=(size, T * size),
                            embed_dim=ours.embed_dim, depth=len(ours.blocks),
                            num_heads=ours.blocks[0].attn.num_heads,
                            num_classes=ours.num_classes, class_token=True,
                            global_pool="token").to(dev).eval()
    x_ours = example_input(ours, batch_size, dev)
    x_ref = torch.randn(batch_size, 3, size, T * size, device=dev)

    def run(model, x):
        def call():
            with torch.inference_mode():
                return model(x)
        return call

    seconds, _ = time_interleaved({"videored": run(ours, x_ours), "timm": run(ref, x_ref)},
                                  warmup=warmup, runs=runs, device=dev)
    return dict(model=model_name, batch_size=batch_size, device=device_name(dev),
                tokens=ours.num_patches + 1, videored_s=seconds["videored"], timm_s=seconds["timm"],
                relative_speed=seconds["timm"] / seconds["videored"])


def interpreter_cost(model_name: str, *, batch_size: int = 1, device: str = "cpu",
                     warmup: int = 1, runs: int = 5, model_kwargs: dict | None = None) -> dict:
    """Time of the interpreter alone (on all N tokens) as a fraction of the dense forward."""
    dev = torch.device(device)
    model = create_model(model_name, selector="interpreter", **(model_kwargs or {})).to(dev).eval()
    x = example_input(model, batch_size, dev)
    with torch.inference_mode():
        _, tokens = model.embed(x)

    def dense():
        with torch.inference_mode():
            return model(x, selector="none")

    def interpreter():
        with torch.inference_mode():
            return model.interpreters[0](tokens)

    seconds, _ = time_interleaved({"dense": dense, "interpreter": interpreter}, warmup=warmup,
                                  runs=runs, device=dev)
    n = model.num_patches
    dense_macs = float(model(x[:1], selector="none").gflops[0]) * 1e9
    return dict(model=model_name, batch_size=batch_size, device=device_name(dev),
                interpreter_s=seconds["interpreter"], dense_s=seconds["dense"],
                time_fraction=seconds["interpreter"] / seconds["dense"],
                macs_fraction=model.interpreters[0].macs(n) / dense_macs)


_example_input = example_input  # the old private name (tests written before bench/common.py)

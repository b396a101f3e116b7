"""Peak memory of one training step, with and without activation checkpointing.

    python -m videored.bench.memory [--model timesformer_jointst_base_patch16_224] [--batch 2]
                                    [--device cpu|cuda] [--keep-ratio 1.0] [--json F]

One step = forward in train mode + cross-entropy + backward through every block (the finetune /
supervised step; an optimizer step adds its state, the same with or without checkpointing).
Each configuration runs in its own fresh process, so no allocator cache carries over. Reported:
  peak_mb      CUDA: max allocated minus allocated before the step; CPU: peak RSS (VmHWM, reset
               before the step) minus RSS before it: model weights and input excluded
  saved_mb     bytes autograd stores for backward (saved-tensor hooks; under checkpointing the
               recomputed block's activations live only during its own backward, so they are
               not in this figure but are in peak_mb)
  step_s       wall time of the step (one warm-up step first)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import torch

from videored.bench.speed import _device_name, _example_input
from videored.timing import _peak_mb, _reset_peak, _sync
from videored.tables import markdown_table

COLUMNS = [("model", "model", "s"), ("batch_size", "batch", "d"), ("keep_ratio", "keep", ".1f"),
           ("grad_checkpointing", "checkpointing", "s"), ("peak_mb", "peak MB", ".0f"),
           ("saved_mb", "saved for backward MB", ".0f"), ("step_s", "step s", ".2f")]


def _one_step(model, x, y, keep_ratio: float) -> float:
    """Forward + backward; returns MB that autograd saved for backward."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    selector = "none" if keep_ratio >= 1.0 else "random"
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x, selector=selector, keep_ratio=keep_ratio)
        loss = torch.nn.functional.cross_entropy(out.logits, y)
    loss.backward()
    model.zero_grad(set_to_none=False)  # keep the .grad buffers: their memory is not the step's
    return saved / 2**20


def measure(model_name: str, batch_size: int, grad_checkpointing: bool, device: str = "cpu",
            keep_ratio: float = 1.0) -> dict:
    """One configuration in this process: warm-up step, then the measured step."""
    from videored.models import create_model

    torch.manual_seed(0)
    dev = torch.device(device)
    model = create_model(model_name, grad_checkpointing=grad_checkpointing).to(dev).train()
    x = _example_input(model, batch_size, dev)
    y = torch.zeros(batch_size, dtype=torch.long, device=dev)
    _one_step(model, x, y, keep_ratio)  # warm-up: allocates the .grad buffers
    _sync(dev)
    baseline = _reset_peak(dev)
    start = time.perf_counter()
    saved = _one_step(model, x, y, keep_ratio)
    _sync(dev)
    seconds = time.perf_counter() - start
    return dict(model=model_name, batch_size=batch_size, keep_ratio=keep_ratio,
                grad_checkpointing=str(grad_checkpointing).lower(), device=_device_name(dev),
                peak_mb=_peak_mb(dev, baseline), saved_mb=saved, step_s=seconds)


def _worker(kwargs: dict, queue) -> None:
    queue.put(measure(**kwargs))


def measure_fresh(**kwargs) -> dict:
    """`measure` in a fresh spawned process (clean allocator and peak counters)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(kwargs, queue))
    proc.start()
    row = queue.get()
    proc.join()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="timesformer_jointst_base_patch16_224")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--keep-ratio", type=float, default=1.0, help="< 1: random selector at this ratio")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = [measure_fresh(model_name=args.model, batch_size=args.batch, grad_checkpointing=ckpt,
                          device=args.device, keep_ratio=args.keep_ratio) for ckpt in (False, True)]
    print(f"device: {rows[0]['device']}")
    print(markdown_table(rows, COLUMNS))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Micro-benchmark (not a test): interpreter-stage step vs finetune-stage step.

    python -m videored.bench.steps [--frames 2] [--img 224] [--batch 2] [--rounds 5]

The two steps exactly as the trainer runs them (`videored.engine.stages`), on a ViT-B-sized JointST
model (group 0 of D=1, the video setting, where finetuning trains all 12 blocks):
  interpreter step = greedy pass (no grad) + sampled pass (autograd only through the interpreter)
                     + backward + optimizer step on the interpreter
  finetune step    = greedy pass with grad + backward through every block + optimizer step
The leave-one-out baseline (`reinforce.baseline=leave_one_out`) skips the greedy pass.
The interpreter threshold is calibrated so that the greedy decisions keep about as many tokens as
the sampled ones (as after training, where I is near 0 or 1). Steps are timed interleaved,
round by round, and the median is reported (CUDA: synchronized, bf16 autocast).
"""
from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch

from videored.bench.common import resolve_device, time_interleaved
from videored.models.budget import calibrate_interpreter
from videored.tables import markdown_table


def build(frames: int, img: int, device: torch.device):
    from videored.models import create_model

    model = create_model("timesformer_jointst_base_patch16_224", num_frames=frames, img_size=img,
                         num_classes=400, selector="interpreter", groups=1).to(device)
    return model


def calibrate(model, x: torch.Tensor) -> tuple[float, float]:
    """Set the threshold so greedy keeps the fraction the sampled pass keeps on average (mean I):
    the one interpreter calibration (`budget.calibrate_interpreter`) at kept ratio mean I."""
    with torch.no_grad():
        _, tokens = model.embed(x)
        keep = model.interpreters[0](tokens).float().mean().item()
    return calibrate_interpreter(model, x, keep)[0], keep


def make_steps(model, x, y, amp: bool) -> dict[str, Callable[[], dict]]:
    from videored.engine.stages import (Stage, classification_step, interpreter_step,
                                        set_train_mode, trainable_parameters)

    stages = {"interpreter": Stage(0, "interpreter", 0, 1), "finetune": Stage(1, "finetune", 0, 1)}
    optims = {k: torch.optim.SGD(trainable_parameters(model, st), lr=1e-6, momentum=0.9)
              for k, st in stages.items()}  # built once, as in training (momentum buffers reused)

    def step(kind: str, baseline: str = "self_critical") -> dict:
        stage = stages[kind]
        trainable_parameters(model, stage)  # requires_grad for this stage only
        set_train_mode(model, stage)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            if kind == "interpreter":
                result = interpreter_step(model, model, x, y, 0, tau=1.5, squared=True,
                                          baseline=baseline)
            else:
                result = classification_step(model, x, y, stage)
        optims[kind].zero_grad(set_to_none=True)
        result.loss.backward()
        optims[kind].step()
        return {"kept": result.sums["kept"].item() / result.count}

    def greedy_pass() -> dict:  # the self-critical baseline's share of an interpreter step
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(x, active_groups=1)
        return {"kept": out.keep[0].float().mean().item()}

    return {"interpreter step (self-critical, paper)": lambda: step("interpreter"),
            "interpreter step (leave-one-out)": lambda: step("interpreter", "leave_one_out"),
            "  of which: greedy pass (no grad)": greedy_pass,
            "finetune step": lambda: step("finetune")}


def time_steps(fns: dict[str, Callable[[], dict]], rounds: int, warmup: int,
               device: torch.device) -> dict[str, dict]:
    """Median seconds per step (the shared interleaved timer) and the mean kept ratio the timed
    steps reported."""
    kept: dict[str, list[float]] = {k: [] for k in fns}

    def recording(name: str) -> Callable[[], None]:
        return lambda: kept[name].append(fns[name]()["kept"])

    seconds, _ = time_interleaved({k: recording(k) for k in fns}, warmup=warmup, runs=rounds,
                                  device=device)
    return {k: {"seconds": seconds[k], "kept": statistics.mean(kept[k][warmup:])} for k in fns}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2, help="frames per clip (8 in the paper)")
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build(args.frames, args.img, device)
    x = torch.randn(args.batch, 3, args.frames, args.img, args.img, device=device)
    y = torch.randint(0, 400, (args.batch,), device=device)
    threshold, mean_i = calibrate(model, x)
    amp = device.type == "cuda"
    res = time_steps(make_steps(model, x, y, amp), args.rounds, args.warmup, device)
    base = res["finetune step"]["seconds"]
    rows = [{"step": k, "ms": v["seconds"] * 1e3, "ratio": v["seconds"] / base, "kept": v["kept"]}
            for k, v in res.items()]
    n = model.num_patches
    print(f"JointST ViT-B, {args.frames} frames x {args.img}² ({n} patch tokens), batch {args.batch}, "
          f"{device.type}{' bf16' if amp else ' fp32'}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} interleaved rounds; threshold {threshold:.3f} (mean I {mean_i:.3f})")
    print(markdown_table(rows, [("step", "step", "s"), ("ms", "ms/step", ".1f"),
                                ("ratio", "vs finetune", ".2f"), ("kept", "kept ratio", ".2f")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

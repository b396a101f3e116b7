"""Batches with unequal kept counts (pad / bucket / packed) and activation checkpointing.

References: a brute-force search over every split for the bucket plan, a per-sample softmax loop
for packed attention, the padded + masked path and plain per-sample runs for the model."""
from __future__ import annotations

import itertools

import pytest
import torch

from videored.engine.builders import build_model
from videored.engine.config import load_config
from videored.models import create_model
from videored.models.ragged import RAGGED_MODES, bucket_plan, can_pack, packed_attention, packed_layout

TINY = dict(img_size=64, embed_dim=48, num_heads=3, num_classes=5)


def tiny(name: str, **kwargs):
    video = name.startswith("timesformer")
    extra = dict(num_frames=3, groups=1, depth=2) if video else dict(groups=3, depth=6)
    return create_model(name, selector="interpreter", **{**TINY, **extra, **kwargs})


def spread_inputs(model, batch: int = 6) -> torch.Tensor:
    """Inputs whose clips the (widened) untrained interpreter keeps in unequal numbers."""
    for interp in model.interpreters:
        torch.nn.init.normal_(interp.query.weight, std=0.5)
    T, gh, _ = model.grid
    size = gh * model.patch_size
    shape = (batch, 3, T, size, size) if model.embed.num_frames else (batch, 3, size, size)
    scale = torch.tensor([0.2, 1.0, 3.0, 6.0, 0.5, 2.0][:batch])
    return torch.randn(shape) * scale.view(batch, *[1] * (len(shape) - 1))


def brute_force_plan_cost(counts, sample_cost, bucket_cost):
    """Cheapest cost over every split of the sorted samples into contiguous buckets."""
    c = sorted(counts)
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=len(c) - 1):
        total, start = 0.0, 0
        for i, cut in enumerate(list(cuts) + [True]):
            if cut:
                total += (i + 1 - start) * sample_cost(c[i]) + bucket_cost
                start = i + 1
        best = min(best, total)
    return best


@pytest.mark.parametrize("counts,bucket_cost", [
    ([5, 90, 7, 88, 40, 41], 30.0), ([10, 10, 10, 10], 0.0), ([1, 50, 100, 150, 200], 1000.0),
    ([3, 9, 4, 8, 6, 7, 5], 2.0), ([12], 5.0)])
def test_bucket_plan_is_the_cheapest_split(counts, bucket_cost):
    cost = lambda n: n * n / 10 + 3 * n  # noqa: E731 (quadratic like attention)
    plan = bucket_plan(counts, cost, bucket_cost)
    assert sorted(i for bucket in plan for i in bucket) == list(range(len(counts)))
    total = sum(len(b) * cost(max(counts[i] for i in b)) + bucket_cost for b in plan)
    assert total == pytest.approx(brute_force_plan_cost(counts, cost, bucket_cost))
    if bucket_cost == 0.0:  # free calls: every distinct count gets its own bucket
        assert len(plan) == len(set(counts))


@pytest.mark.parametrize("jagged,call_tokens", [(False, 0), (False, 3), (False, 10**6), (True, 0)])
def test_packed_attention_matches_per_sample_softmax(jagged, call_tokens):
    """Jagged, and padded attention buckets: one per distinct length (0), some (3), one (10**6)."""
    torch.manual_seed(0)
    model = tiny("deit_tiny_patch16_224")
    attn = model.blocks[0].attn
    lengths = torch.tensor([4, 1, 7, 3, 7, 4])
    offsets = torch.nn.functional.pad(lengths.cumsum(0), (1, 0))
    keys = torch.arange(8)[None, :] < lengths[:, None]  # (B, 1 + m) prefix of real rows
    layout = packed_layout(keys, jagged=jagged, call_tokens=call_tokens)
    if not jagged:
        expected = {0: 4, 3: None, 10**6: 1}[call_tokens]
        assert expected is None or len(layout.buckets) == expected
    x = torch.randn(int(lengths.sum()), model.embed_dim)
    out = packed_attention(attn, x, layout)
    H, hd = attn.num_heads, attn.head_dim
    w, b = attn.qkv.weight, attn.qkv.bias
    for s in range(len(lengths)):  # the attention formula, one sample at a time
        xs = x[offsets[s]:offsets[s + 1]]
        q, k, v = (xs @ w.T + b).view(len(xs), 3, H, hd).unbind(1)
        probs = torch.einsum("nhd,mhd->hnm", q, k).div(hd ** 0.5).softmax(-1)
        ref = torch.einsum("hnm,mhd->nhd", probs, v).reshape(len(xs), H * hd) @ attn.proj.weight.T
        torch.testing.assert_close(out[offsets[s]:offsets[s + 1]], ref + attn.proj.bias,
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["timesformer_jointst_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_every_mode_equals_padding_and_one_by_one(name):
    torch.manual_seed(1)
    model = tiny(name).eval()
    model.bucket_cost_tokens = 0  # every distinct count its own bucket: the reordering is exercised
    x = spread_inputs(model)
    calls = []
    model.blocks[0].register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    outs = {}
    for mode in RAGGED_MODES:
        model.ragged = mode
        calls.clear()
        outs[mode] = model(x)
        if mode == "bucket":
            assert len(calls) > 1 and sum(calls) == len(x), calls  # really split into buckets
    counts = outs["pad"].keep[0].sum(1)
    assert len(set(counts.tolist())) > 2, "the test needs unequal kept counts"
    for mode in ("bucket", "packed", "jagged"):
        for j in range(model.groups):
            assert torch.equal(outs[mode].keep[j], outs["pad"].keep[j])
        torch.testing.assert_close(outs[mode].logits, outs["pad"].logits, atol=1e-5, rtol=0)
        model.ragged = mode
        for b in range(len(x)):  # a clip's result does not depend on its batch
            torch.testing.assert_close(outs[mode].logits[b:b + 1], model(x[b:b + 1]).logits,
                                       atol=1e-5, rtol=0)


def _block_grads(model, x, seed: int = 5) -> torch.Tensor:
    model.zero_grad()
    torch.manual_seed(seed)  # drop path draws
    model(x).logits.square().sum().backward()
    return torch.cat([p.grad.flatten() for p in model.blocks.parameters()])


@pytest.mark.parametrize("name", ["timesformer_jointst_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_training_gradients_same_in_every_mode_with_and_without_checkpointing(name):
    torch.manual_seed(2)
    model = tiny(name, drop_path_rate=0.3).train()  # drop path: one draw per sample, every mode
    x = spread_inputs(model)
    model.ragged = "pad"
    ref = _block_grads(model, x)
    assert ref.abs().max() > 0
    for mode, ckpt in itertools.product(("pad", "packed", "jagged"), (False, True)):
        model.ragged, model.grad_checkpointing = mode, ckpt
        torch.testing.assert_close(_block_grads(model, x), ref, atol=5e-5, rtol=1e-4)
    model.grad_checkpointing = False
    model.ragged = "pad"
    assert not torch.allclose(_block_grads(model, x, seed=6), ref)  # the seed does matter


def _saved_bytes(model, x) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    out.logits.sum().backward()
    return total


def test_grad_checkpointing_stores_fewer_activations_and_comes_from_the_config():
    cfg = load_config(None, ["data.root=/x", "model.name=timesformer_jointst_tiny_patch16_224",
                             "model.img_size=64", "model.num_frames=3", "model.depth=4",
                             "model.num_classes=5", "model.grad_checkpointing=true"])
    model = build_model(cfg, selector="none").train()
    assert model.grad_checkpointing and "grad_checkpointing" not in model.model_config
    x = torch.randn(2, 3, 3, 64, 64)
    with_ckpt = _saved_bytes(model, x)
    model.set_grad_checkpointing(False)
    without = _saved_bytes(model, x)
    # Stored per block without checkpointing: ~11 activations of (B, n, D) or (B, n, 4D); with
    # it only each block's input. At depth 4 that must save well over half.
    assert with_ckpt < 0.5 * without, (with_ckpt, without)


def test_auto_packs_unless_hooks_or_unfused_attention_need_the_block_forwards():
    torch.manual_seed(1)
    model = tiny("deit_tiny_patch16_224").eval()
    x = spread_inputs(model)
    results = {}
    for mode in ("packed", "bucket"):
        model.ragged = mode
        results[mode] = model(x).logits
    model.ragged = "auto"
    assert can_pack(model.blocks)
    assert torch.equal(model(x).logits, results["packed"])  # the packed path itself
    calls = []
    hooks = [blk.register_forward_hook(lambda m, a, o: calls.append(1)) for blk in model.blocks]
    assert not can_pack(model.blocks)
    assert torch.equal(model(x).logits, results["bucket"]) and len(calls) >= len(model.blocks)
    for h in hooks:
        h.remove()
    assert can_pack(model.blocks)
    model.blocks[0].attn.fused_attn = False  # materialized attention probabilities: run as written
    assert not can_pack(model.blocks) and can_pack(model.blocks[1:])
    assert create_model("deit_tiny_patch16_224", **TINY).ragged == "auto"  # the default

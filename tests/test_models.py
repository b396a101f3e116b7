"""Core model tests: numbers against independent references (timm's ViT, Eq. 1 by hand, the
flop counter, plain per-sample runs), on tiny configurations of every registered model."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from _flop_count import counted_macs
from videored.models import create_model, list_models, load_pretrained
from videored.models.tokens import full_token_set, gather_kept

TINY = dict(img_size=32, embed_dim=48, num_heads=3, num_classes=5)


def tiny(name: str, **kwargs):
    video = name.startswith("timesformer")
    groups = 1 if video else 3
    extra = dict(num_frames=3) if video else {}
    return create_model(name, **{**TINY, "depth": 2 * groups, **extra, **kwargs})


def inputs(model, batch: int = 2) -> torch.Tensor:
    T, gh, _ = model.grid
    size = gh * model.patch_size
    shape = (batch, 3, T, size, size) if model.embed.num_frames else (batch, 3, size, size)
    return torch.randn(shape)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("selector", ["none", "interpreter", "random", "attention",
                                      "temporal_difference"])
def test_every_model_shapes_finite_and_gradients(name, selector):
    model = tiny(name, selector=selector)
    out = model(inputs(model), sample=selector == "interpreter")
    B, N = 2, model.num_patches
    assert out.logits.shape == (B, 5) and torch.isfinite(out.logits).all()
    assert len(out.scores) == len(out.keep) == model.groups
    for scores, keep in zip(out.scores, out.keep):
        assert scores.shape == keep.shape == (B, N) and keep.dtype == torch.bool
    # a token dropped by a group never comes back later
    for earlier, later in zip(out.keep, out.keep[1:]):
        assert not (later & ~earlier).any()
    loss = out.logits.logsumexp(1).sum() + sum(s.sum() for s in out.scores)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent, f"parameters without gradient: {silent}"


def test_registered_in_timm():
    model = timm.create_model("timesformer_jointst_small_patch16_224", depth=1, num_classes=3)
    assert model.grid == (8, 14, 14) and model.num_patches == 1568
    assert timm.create_model("videored_deit_tiny_patch16_224", depth=3).groups == 3
    with pytest.raises(ValueError, match="pretrained_path"):
        timm.create_model("timesformer_jointst_tiny_patch16_224", pretrained=True)


def test_deit_dense_matches_timm_vision_transformer(tmp_path):
    """Our DeiT (loaded from a timm state dict) == timm's VisionTransformer, for every selector
    that keeps everything (keep-all takes the do-nothing path)."""
    ref = timm.create_model("deit_tiny_patch16_224", img_size=32, depth=3, num_classes=5).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "deit.pth")
    x = torch.randn(3, 3, 32, 32)
    expected = ref(x)
    for selector, kwargs in [("none", {}), ("random", dict(keep_ratio=1.0)),
                             ("attention", dict(keep_ratio=1.0)),
                             ("interpreter", dict(threshold=0.0))]:
        ours = create_model("deit_tiny_patch16_224", img_size=32, depth=3, num_classes=5,
                            selector=selector, **kwargs).eval()
        load_pretrained(ours, tmp_path / "deit.pth")
        out = ours(x)
        torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)
        assert all(k.all() for k in out.keep)


def test_video_dense_matches_plain_reference():
    """JointST keep-all == a plain re-implementation: per-frame patches + pos + time, one sequence."""
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="interpreter", threshold=0.0).eval()
    x = inputs(model)
    e = model.embed
    B, C, T, H, W = x.shape
    patches = e.patch_embed.proj(x.transpose(1, 2).reshape(B * T, C, H, W))  # (BT, D, g, g)
    patches = patches.flatten(2).transpose(1, 2).reshape(B, T, -1, model.embed_dim)
    patches = patches + e.pos_embed[:, None, 1:] + e.time_embed[:, :, None]
    seq = torch.cat([(e.cls_token + e.pos_embed[:, :1]).expand(B, -1, -1),
                     patches.reshape(B, -1, model.embed_dim)], dim=1)
    for blk in model.blocks:
        seq = blk(seq)
    expected = model.head(model.norm(seq)[:, 0])
    torch.testing.assert_close(model(x).logits, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(x, selector="none").logits, expected, atol=1e-5, rtol=0)


def test_patch_order_frame_row_col():
    """Patch n <-> frame n // g², row (n % g²) // g, col n % g: perturb one patch, see one token move."""
    model = tiny("timesformer_jointst_tiny_patch16_224").eval()
    x = inputs(model, batch=1)
    _, base = model.embed(x)
    t, r, c = 2, 1, 0
    x2 = x.clone()
    x2[:, :, t, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] += 1.0
    _, moved = model.embed(x2)
    changed = (moved - base).abs().sum(-1)[0].nonzero().flatten().tolist()
    g = model.grid[1]
    assert changed == [t * g * g + r * g + c]


def test_dropped_patch_pixels_do_not_matter():
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="random", keep_ratio=0.4).eval()
    x = inputs(model, batch=1)
    out = model(x, generator=torch.Generator().manual_seed(3))
    dropped = (~out.keep[0][0]).nonzero().flatten()
    assert 0 < len(dropped) < model.num_patches
    x2 = x.clone()
    g = model.grid[1]
    for n in dropped.tolist():
        t, r, c = n // (g * g), (n % (g * g)) // g, n % g
        x2[0, :, t, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = torch.randn(3, 16, 16) * 10
    out2 = model(x2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.keep[0], out2.keep[0])
    torch.testing.assert_close(out2.logits, out.logits, atol=1e-6, rtol=0)
    x2[0, :, 0, :16, :16] += 5  # sanity: a kept patch does matter (if patch 0 is kept)
    if out.keep[0][0, 0]:
        assert not torch.allclose(model(x2, generator=torch.Generator().manual_seed(3)).logits,
                                  out.logits, atol=1e-6)


@pytest.mark.parametrize("name,selector", [
    ("timesformer_jointst_tiny_patch16_224", "interpreter"),
    ("deit_tiny_patch16_224", "interpreter"),
    ("timesformer_jointst_tiny_patch16_224", "temporal_difference"),
    ("deit_tiny_patch16_224", "attention"),
])
def test_batched_equals_one_by_one_with_unequal_counts(name, selector):
    torch.manual_seed(1)
    model = tiny(name, selector=selector, keep_ratio=0.6, img_size=64).eval()
    if selector == "interpreter":  # spread the scores so samples keep different counts
        for interp in model.interpreters:
            torch.nn.init.normal_(interp.query.weight, std=0.5)
    x = inputs(model, batch=4)
    x = x * torch.tensor([0.2, 1.0, 3.0, 6.0]).view(4, *[1] * (x.ndim - 1))  # different contents
    out = model(x)
    counts = out.keep[0].sum(1)
    if selector == "interpreter":
        assert len(set(counts.tolist())) > 1, "the test needs unequal kept counts"
    for b in range(4):
        single = model(x[b:b + 1])
        torch.testing.assert_close(out.logits[b:b + 1], single.logits, atol=1e-5, rtol=0)
        for j in range(model.groups):
            assert torch.equal(out.keep[j][b:b + 1], single.keep[j])
            torch.testing.assert_close(out.scores[j][b:b + 1], single.scores[j], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.gflops[b:b + 1], single.gflops)


def eq1_loop(interp, x: torch.Tensor) -> torch.Tensor:
    """Eq. 1 written out, unfolded: I_i = 1/H sum_h sigmoid(F_q^h(LN x_i) . F_k^h(P)). (B, n)"""
    H = interp.num_heads
    hd = interp.query.weight.shape[0] // H
    Wq, bq = interp.query.weight, interp.query.bias
    Wk, bk = interp.key.weight, interp.key.bias
    P = interp.policy_token[0]
    rows = []
    for b in range(x.shape[0]):
        row = []
        for i in range(x.shape[1]):
            xi = interp.norm(x[b, i])
            total = 0.0
            for h in range(H):
                part = slice(h * hd, (h + 1) * hd)
                q = Wq[part] @ xi + bq[part]  # F_q^h(X_i)
                k = Wk[part] @ P + bk[part]  # F_k^h(P)
                total = total + torch.sigmoid(torch.dot(q, k))
            row.append(total / H)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_interpreter_matches_eq1_slow_loop():
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="interpreter", interpreter_heads=4)
    interp = model.interpreters[0]
    for p in interp.parameters():  # away from the init, so every term matters
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 7, model.embed_dim)
    fast = interp(x)
    with torch.no_grad():
        torch.testing.assert_close(fast, eq1_loop(interp, x), atol=1e-6, rtol=0)
    greedy = interp.decide(fast, sample=False)
    assert torch.equal(greedy, fast >= 0.5)
    # The folded form has the unfolded one's parameters, so old checkpoints load unchanged.
    assert set(interp.state_dict()) == {"norm.weight", "norm.bias", "query.weight", "query.bias",
                                        "key.weight", "key.bias", "policy_token"}

    # Gradients of both forms agree for every parameter and the input (float64: tight).
    interp = interp.double()
    x = x.double().requires_grad_()
    weights = torch.randn(2, 7, dtype=torch.float64)  # a generic downstream loss
    params = [x, *interp.parameters()]
    fast_grads = torch.autograd.grad((interp(x) * weights).sum(), params)
    slow_grads = torch.autograd.grad((eq1_loop(interp, x) * weights).sum(), params)
    for (name, _), g_fast, g_slow in zip([("x", x), *interp.named_parameters()],
                                         fast_grads, slow_grads):
        assert g_fast.abs().sum() > 0, name
        torch.testing.assert_close(g_fast, g_slow, atol=1e-10, rtol=1e-8, msg=name)


def test_sampling_is_bernoulli_of_scores():
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="interpreter")
    x = inputs(model, batch=1)
    gen = torch.Generator().manual_seed(0)
    outs = [model(x, sample=True, generator=gen) for _ in range(300)]
    freq = torch.stack([o.keep[0][0].float() for o in outs]).mean(0)
    scores = outs[0].scores[0][0].detach()
    assert (freq - scores).abs().max() < 0.1  # 300 draws: 4.4 sigma at p = 0.5


def test_random_selector_same_seed_same_masks():
    a = tiny("timesformer_jointst_tiny_patch16_224", selector="random", keep_ratio=0.5, seed=7)
    b = tiny("timesformer_jointst_tiny_patch16_224", selector="random", keep_ratio=0.5, seed=7)
    c = tiny("timesformer_jointst_tiny_patch16_224", selector="random", keep_ratio=0.5, seed=8)
    x = inputs(a)
    ka, kb, kc = (m(x).keep[0] for m in (a, b, c))
    assert torch.equal(ka, kb) and not torch.equal(ka, kc)
    assert (ka.sum(1) == round(0.5 * a.num_patches)).all()


def test_temporal_difference_and_attention_by_hand():
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="temporal_difference",
                 keep_ratio=0.25).eval()
    T, g, _ = model.grid
    x = torch.zeros(1, 3, T, 32, 32)
    # Change exactly one patch position over time; the rest are constant -> zero difference.
    x[0, :, 1, 16:32, 0:16] = 3.0
    _, tokens = model.embed(x)
    tok = tokens[0].view(T, g * g, -1)
    prev = torch.cat([torch.zeros_like(tok[:1]), tok[:-1]])
    expected = (tok - prev).norm(dim=-1).flatten()
    out = model(x)
    torch.testing.assert_close(out.scores[0][0], expected / expected.max(), atol=1e-5, rtol=0)
    top = expected.argsort(descending=True)[:round(0.25 * model.num_patches)]
    assert set(out.keep[0][0].nonzero().flatten().tolist()) == set(top.tolist())

    model = tiny("deit_tiny_patch16_224", selector="attention", keep_ratio=0.5).eval()
    x = torch.randn(1, 3, 32, 32)
    cls, tokens = model.embed(x)
    blk = model.blocks[0]
    seq = blk.norm1(torch.cat([cls, tokens], 1))
    q, k, _ = blk.attn.qkv(seq).view(1, -1, 3, 3, 16).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) / 4.0).softmax(-1)[0, :, 0, 1:].mean(0)
    torch.testing.assert_close(model(x).scores[0][0], attn / attn.max(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("selector", ["none", "interpreter", "attention", "random",
                                      "temporal_difference"])
@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "timesformer_jointst_tiny_patch16_224"])
def test_gflops_match_flop_counter(name, selector):
    model = tiny(name, selector=selector, keep_ratio=0.5).eval()
    x = inputs(model, batch=1)
    out, macs = counted_macs(lambda: model(x))
    assert out.gflops.item() * 1e9 == pytest.approx(macs, rel=1e-6)


def test_gflops_papers_convention():
    deit_s = create_model("deit_small_patch16_224")
    with torch.no_grad():
        assert deit_s(torch.zeros(1, 3, 224, 224)).gflops.item() == pytest.approx(4.6, abs=0.01)


def test_gather_keeps_order_and_pads():
    x = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    keep = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    ts = gather_kept(full_token_set(x), keep)
    assert ts.index[0].tolist() == [0, 2, 3] and ts.index[1, 0].item() == 1
    assert ts.valid.tolist() == [[True, True, True], [True, False, False]]
    assert ts.x[0, :, 0].tolist() == [0.0, 2.0, 3.0] and ts.x[1, 0, 0].item() == 6.0
    same = full_token_set(x)
    assert gather_kept(same, torch.ones(2, 5, dtype=torch.bool)) is same  # do-nothing path


def test_checkpoint_round_trip(tmp_path):
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="interpreter").eval()
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    fresh = tiny("timesformer_jointst_tiny_patch16_224", selector="interpreter").eval()
    report = load_pretrained(fresh, tmp_path / "ckpt.pt")
    assert not report.initialized and not report.dropped
    x = inputs(model)
    torch.testing.assert_close(fresh(x).logits, model(x).logits)


def test_imagenet_checkpoint_into_timesformer(tmp_path):
    deit = timm.create_model("deit_tiny_patch16_224", img_size=64, depth=2, num_classes=10)
    torch.save(deit.state_dict(), tmp_path / "in1k.pth")  # plain state dict
    video = create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=4,
                         depth=2, num_classes=5)
    report = load_pretrained(video, tmp_path / "in1k.pth")
    assert "embed.pos_embed" in report.resized and sorted(report.dropped) == ["head.bias", "head.weight"]
    assert torch.equal(video.embed.time_embed, torch.zeros_like(video.embed.time_embed))
    assert torch.equal(video.blocks[1].mlp.fc2.weight, deit.blocks[1].mlp.fc2.weight)
    # interpolated spatial grid: 4x4 -> 2x2 by bicubic resampling, cls position copied
    torch.testing.assert_close(video.embed.pos_embed[:, :1], deit.pos_embed[:, :1])
    grid = deit.pos_embed[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(2, 2), mode="bicubic", antialias=True,
                             align_corners=False).permute(0, 2, 3, 1).reshape(1, 4, -1)
    torch.testing.assert_close(video.embed.pos_embed[:, 1:], expected, atol=1e-5, rtol=0)


def test_facebook_timesformer_checkpoint_format(tmp_path):
    """facebookresearch TimeSformer: {"model_state": sd} with a "model." prefix and time_embed."""
    src = create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=8,
                       depth=2, num_classes=400)
    sd = {}
    for k, v in src.state_dict().items():
        sd["model." + k.removeprefix("embed.")] = v
    torch.save({"epoch": 15, "model_state": sd}, tmp_path / "TimeSformer_jointST_K400.pyth")
    dst = create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=4,
                       depth=2, num_classes=400, selector="interpreter")
    report = load_pretrained(dst, tmp_path / "TimeSformer_jointST_K400.pyth")
    assert report.resized == ["embed.time_embed"]
    assert all(k.startswith("interpreters.") for k in report.initialized)
    expected = F.interpolate(src.embed.time_embed.transpose(1, 2), size=4, mode="linear",
                             align_corners=False).transpose(1, 2)
    torch.testing.assert_close(dst.embed.time_embed, expected)
    torch.testing.assert_close(dst.head.weight, src.head.weight)


def test_mismatched_checkpoint_refused_with_names(tmp_path):
    wide = create_model("deit_small_patch16_224", img_size=32, depth=3, num_classes=5)
    torch.save({"model": wide.state_dict()}, tmp_path / "small.pth")
    narrow = create_model("deit_tiny_patch16_224", img_size=32, depth=3, num_classes=5)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight: file \(1152, 384\) vs model \(576, 192\)"):
        load_pretrained(narrow, tmp_path / "small.pth")
    deep = create_model("deit_tiny_patch16_224", img_size=32, depth=6, num_classes=5)
    torch.save(deep.state_dict(), tmp_path / "deep.pth")
    with pytest.raises(ValueError, match=r"keys the model does not have.*blocks\.3\."):
        load_pretrained(narrow, tmp_path / "deep.pth")
    shallow = create_model("deit_tiny_patch16_224", img_size=32, depth=6, num_classes=5)
    torch.save(narrow.state_dict(), tmp_path / "shallow.pth")
    with pytest.raises(ValueError, match=r"lacks weights.*blocks\.3\."):
        load_pretrained(shallow, tmp_path / "shallow.pth")
    divided = {**wide.state_dict(), "blocks.0.temporal_attn.qkv.weight": torch.zeros(1)}
    torch.save(divided, tmp_path / "divided.pth")
    with pytest.raises(ValueError, match="divided space-time"):
        load_pretrained(wide, tmp_path / "divided.pth")
    with pytest.raises(FileNotFoundError):
        load_pretrained(wide, tmp_path / "nope.pth")


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vit_huge_patch14")
    with pytest.raises(ValueError, match="unknown selector"):
        tiny("deit_tiny_patch16_224", selector="magic")
    with pytest.raises(ValueError, match="groups"):
        create_model("deit_tiny_patch16_224", depth=4, groups=3)
    model = tiny("timesformer_jointst_tiny_patch16_224")
    with pytest.raises(ValueError, match="selector='interpreter'"):
        model(inputs(model), selector="interpreter")
    with pytest.raises(ValueError, match=r"\(B, C, T=3, H, W\)"):
        model(torch.zeros(1, 3, 32, 32))


def test_model_file_rebuilds_the_model(tmp_path):
    from videored.models import load_model_file, save_model_file
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="interpreter").eval()
    save_model_file(model, tmp_path / "model.pt", note="quickstart")
    again = load_model_file(tmp_path / "model.pt").eval()
    x = inputs(model)
    torch.testing.assert_close(again(x).logits, model(x).logits)
    baseline = load_model_file(tmp_path / "model.pt", selector="random", keep_ratio=0.5)
    assert baseline.interpreters is None and baseline(x).keep[0].float().mean() == 0.5
    torch.save({"model": model.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="model_config"):
        load_model_file(tmp_path / "plain.pt")


def test_random_seeds_make_masks_batch_independent():
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="random", keep_ratio=0.5)
    x = inputs(model, batch=3)
    seeds = torch.tensor([11, 12, 13])
    together = model(x, random_seeds=seeds).keep[0]
    alone = torch.cat([model(x[b:b + 1], random_seeds=seeds[b:b + 1]).keep[0] for b in (2, 0, 1)])
    assert torch.equal(together, alone[[1, 2, 0]])
    assert not torch.equal(together[0], together[1])


@pytest.mark.parametrize("p", [0.15, 0.5, 0.9])
def test_interpreter_initial_keep_probability(p):
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="interpreter",
                 interpreter_init_keep=p)
    scores = model(inputs(model)).scores[0]
    assert scores.mean().item() == pytest.approx(p, abs=0.03)


def test_keep_ratio_zero_keeps_one_token():
    """Baselines matched to an interpreter that kept nothing still run (one token per sample)."""
    model = tiny("timesformer_jointst_tiny_patch16_224", selector="random", keep_ratio=0.0)
    assert (model(inputs(model)).keep[0].sum(1) == 1).all()
    with pytest.raises(ValueError, match=r"keep_ratio must be in \[0, 1\]"):
        model(inputs(model), keep_ratio=1.5)

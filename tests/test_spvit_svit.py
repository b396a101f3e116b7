"""SPViT (package token) and SViT (reactivation) against hand-computed references, timm's own
blocks, one-by-one runs, torch's flop counter and finite differences; tiny models only."""
from functools import partial

import pytest
import torch
from torch import nn
from timm.models.vision_transformer import Block

from _flop_count import counted_macs
from videored.models import flops
from videored.models.pruning_losses import (budget_keep, gumbel_keep, keep_ratio_loss, logits_kl,
                                            token_mse)
from videored.models.spvit import (SPViTSelector, budget_counts, rows_at_positions, run_spvit, selector_macs,
                                   spvit_blocks, spvit_budget_macs, spvit_macs, spvit_targets)
from videored.models.svit import (SViTGate, gate_macs, run_svit, svit_blocks, svit_budget_macs,
                                  svit_macs, svit_targets)

D, H = 32, 2  # head width 16: the selector's hd/4 layer has 4 units


def make_blocks(depth: int, seed: int = 0) -> list[Block]:
    torch.manual_seed(seed)
    return [Block(D, H, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
            for _ in range(depth)]


def dense(blocks, cls, patches):
    x = torch.cat([cls, patches], dim=1)
    for blk in blocks:
        x = blk(x)
    return x


class FeatureSelector(nn.Module):
    """A stand-in selector with known probabilities: p(keep) = sigmoid(4 · x[..., 0])."""

    def forward(self, x, alive):
        p = torch.sigmoid(4 * x[..., 0])
        probs = torch.stack([p, 1 - p], dim=-1)
        return probs.log(), probs


class TableGate(nn.Module):
    """A stand-in SViT gate keeping a fixed set of positions (log-probs ±20 nats apart)."""

    def __init__(self, keep: list[int], n: int):
        super().__init__()
        k = torch.zeros(n, dtype=torch.bool)
        k[keep] = True
        self.register_buffer("keep", k)

    def forward(self, x):
        logit = torch.where(self.keep, 10.0, -10.0).to(x.dtype).expand(x.shape[:2])
        return torch.stack([logit, -logit], dim=-1).log_softmax(dim=-1)


def sharpen(module: nn.Module, scale: float) -> nn.Module:
    """Scale a freshly initialized selector's / gate's logit layer (bias 0) so its decisions
    vary from token to token."""
    last = module.out[-1] if isinstance(module, SPViTSelector) else module.fc2
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.zero_()
    return module


# ---------------------------------------------------------------------------- SPViT

@torch.no_grad()
def slow_spvit(blocks, cls, patches, selector_fns, stage_blocks, normalize=False):
    """Per-sample reference written from the paper: at a stage keep the tokens with
    p(keep) >= 0.5, fold the others into the package Σ p_i x_i (a Python loop), add it to the
    existing package, run timm's blocks on [cls, package, kept...]."""
    outs = []
    for b in range(patches.shape[0]):
        x = torch.cat([cls[b:b + 1], patches[b:b + 1]], dim=1)  # (1, 1 + n, D)
        pos = list(range(patches.shape[1]))
        package = None
        for i, blk in enumerate(blocks):
            if i in stage_blocks:
                sel = selector_fns[stage_blocks.index(i)]
                start = 1 if package is None else 2
                rows = x[:, start:]
                _, probs = sel(rows, torch.ones(rows.shape[:2], dtype=torch.bool))
                p = probs[0, :, 0]
                new = torch.zeros(D)
                total = 0.0
                kept_rows, kept_pos = [], []
                for j in range(rows.shape[1]):
                    if p[j] >= 0.5:
                        kept_rows.append(rows[0, j])
                        kept_pos.append(pos[j])
                    else:
                        new = new + p[j] * rows[0, j]
                        total += float(p[j])
                if normalize and total > 0:
                    new = new / total
                if total > 0 or package is not None:
                    package = new if package is None else x[0, 1] + new
                pos = kept_pos
                parts = [x[0, :1]] + ([package[None]] if package is not None else []) + \
                    [r[None] for r in kept_rows]
                x = torch.cat(parts)[None]
            x = blk(x)
        outs.append((x, pos, package is not None))
    return outs


def test_spvit_package_token_is_the_score_weighted_sum():
    """One stage before block 0, then a second before block 1: the rows after each block equal
    timm's blocks on [cls, Σ p_i x_i over the pruned, kept...] built by hand."""
    blocks = make_blocks(2)
    torch.manual_seed(1)
    cls, patches = torch.randn(2, 1, D), torch.randn(2, 6, D)
    patches[0, :, 0] = torch.tensor([1.0, -1.0, 0.5, -0.7, 2.0, -0.2])  # 3 kept, 3 pruned
    patches[1, :, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, 1.0])  # 5 kept, 1 pruned
    sel = FeatureSelector()
    run = run_spvit(blocks, cls, patches, [sel, sel], stage_blocks=[0, 1], train=False)
    ref = slow_spvit(blocks, cls, patches, [sel, sel], [0, 1])
    for b, (x, pos, has_pkg) in enumerate(ref):
        n = x.shape[1] - 1
        torch.testing.assert_close(run.cls[b], x[0, :1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(run.tokens.x[b, :n], x[0, 1:], atol=1e-5, rtol=1e-5)
        assert has_pkg and run.tokens.index[b, 0] == -1  # the package row leads
        assert run.tokens.index[b, 1:n].tolist() == pos
        assert run.keep[-1][b].nonzero().squeeze(1).tolist() == pos
        # every pruned patch maps to the package row, whose size counts them
        assert run.tokens.source[b].tolist() == [pos.index(p) + 1 if p in pos else 0 for p in range(6)]
        assert run.tokens.size[b, 0] == 6 - len(pos)
    assert run.kept[0].tolist() == [3, 5]


def test_spvit_package_by_hand_on_the_input():
    """The first stage's package, read off by a block that is the identity (zeroed residual
    branches): exactly Σ p_i x_i over the pruned input patches; normalize gives the average."""
    blk = make_blocks(1)[0]
    with torch.no_grad():
        blk.attn.proj.weight.zero_(), blk.attn.proj.bias.zero_()
        blk.mlp.fc2.weight.zero_(), blk.mlp.fc2.bias.zero_()
    cls = torch.zeros(1, 1, D)
    patches = torch.randn(1, 4, D)
    patches[0, :, 0] = torch.tensor([0.3, -0.5, 1.0, -0.1])  # pruned: 1 and 3
    p = torch.sigmoid(4 * patches[0, :, 0])
    for normalize in (False, True):
        run = run_spvit([blk], cls, patches, [FeatureSelector()], stage_blocks=[0], train=False,
                        normalize_package=normalize)
        want = p[1] * patches[0, 1] + p[3] * patches[0, 3]
        if normalize:
            want = want / (p[1] + p[3])
        torch.testing.assert_close(run.tokens.x[0, 0], want)
        torch.testing.assert_close(run.tokens.x[0, 1:], patches[0, [0, 2]])


def test_spvit_masked_training_forward_equals_the_gathered_one():
    """With decisions that are certain (Gumbel noise cannot flip them), the training forward
    (all tokens, attention policy) gives the gathered forward's cls, package and kept rows."""
    blocks = make_blocks(3)
    torch.manual_seed(2)
    cls, patches = torch.randn(2, 1, D), torch.randn(2, 8, D)
    patches[..., 0] = torch.randn(2, 8).sign() * 8  # p(keep) = sigmoid(±32)
    sel = FeatureSelector()
    ev = run_spvit(blocks, cls, patches, [sel, sel], stage_blocks=[1, 2], train=False)
    tr = run_spvit(blocks, cls, patches, [sel, sel], stage_blocks=[1, 2], train=True,
                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(tr.cls, ev.cls, atol=1e-5, rtol=1e-5)
    for b in range(2):
        keep = ev.keep[-1][b]
        n = int(keep.sum())
        torch.testing.assert_close(tr.tokens.x[b, 0], ev.tokens.x[b, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tr.tokens.x[b, 1:][keep], ev.tokens.x[b, 1:1 + n], atol=1e-5, rtol=1e-5)
    for a, b in zip(tr.keep, ev.keep):
        assert torch.equal(a, b)
    torch.testing.assert_close(tr.macs, ev.macs)
    # the kept rows at their positions agree too (what token distillation compares)
    keep = ev.keep[-1].unsqueeze(-1)
    torch.testing.assert_close(rows_at_positions(tr.tokens, 8) * keep,
                               rows_at_positions(ev.tokens, 8), atol=1e-5, rtol=1e-5)
    assert rows_at_positions(ev.tokens, 8)[~ev.keep[-1]].eq(0).all()


@pytest.mark.parametrize("train", [False, True])
def test_spvit_keep_all_equals_dense(train):
    blocks = make_blocks(4)
    cls, patches = torch.randn(2, 1, D), torch.randn(2, 10, D)
    head = nn.Linear(D, 5)
    if train:  # selectors that surely keep: the last layer's bias +30 nats toward keep
        sels = [SPViTSelector(D, H) for _ in range(2)]
        for s in sels:
            with torch.no_grad():
                s.out[-1].bias.copy_(torch.tensor([30.0, -30.0]))
        run = run_spvit(blocks, cls, patches, sels, stage_blocks=[1, 3], train=True)
    else:
        sels = [sharpen(SPViTSelector(D, H), 10.0) for _ in range(2)]
        run = run_spvit(blocks, cls, patches, sels, stage_blocks=[1, 3], train=False, kept_ratio=1.0)
    ref = dense(blocks, cls, patches)
    assert run.tokens.size[:, 0].eq(0).all() or not train  # no package was formed
    torch.testing.assert_close(run.cls, ref[:, :1], atol=1e-5, rtol=1e-5)
    rows = run.tokens.x[:, 1:] if train else run.tokens.x
    torch.testing.assert_close(rows, ref[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head(run.cls), head(ref[:, :1]), atol=1e-5, rtol=1e-5)
    dense_macs = 4 * flops.block_macs(11, D) + 2 * selector_macs(10, D, H)
    assert run.macs.tolist() == [dense_macs] * 2


@pytest.mark.parametrize("second", ["feature", "learned"])
def test_spvit_batched_equals_one_by_one_with_unequal_counts(second):
    """Stage 1 keeps a different number per sample; stage 2 (the known selector, or a learned
    one whose global feature must ignore the padding rows) runs on the ragged batch."""
    blocks = make_blocks(4)
    torch.manual_seed(0)
    cls, patches = torch.randn(4, 1, D), torch.randn(4, 12, D)
    sels = [FeatureSelector(), FeatureSelector() if second == "feature" else SPViTSelector(D, H)]
    run = run_spvit(blocks, cls, patches, sels, stage_blocks=[1, 2], train=False)
    counts = run.kept[0].tolist()
    assert len(set(counts)) > 1, counts  # the batch really is ragged
    for b in range(4):
        one = run_spvit(blocks, cls[b:b + 1], patches[b:b + 1], sels, stage_blocks=[1, 2], train=False)
        n = one.tokens.x.shape[1]
        torch.testing.assert_close(run.cls[b], one.cls[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(run.tokens.x[b, :n], one.tokens.x[0], atol=1e-5, rtol=1e-5)
        assert run.tokens.size[b, n:].eq(0).all()  # padding rows cover nothing
        assert torch.equal(run.tokens.source[b], one.tokens.source[0])
        assert run.macs[b] == one.macs[0]
        for a, c in zip(run.keep, one.keep):
            assert torch.equal(a[b], c[0])
        for a, c in zip(run.scores, one.scores):
            torch.testing.assert_close(a[b], c[0], atol=1e-6, rtol=1e-5)
    # and the slow per-sample reference agrees on what was kept and computed
    for b, (x, pos, _) in enumerate(slow_spvit(blocks, cls, patches, sels, [1, 2])):
        assert run.keep[-1][b].nonzero().squeeze(1).tolist() == pos
        torch.testing.assert_close(run.cls[b], x[0, :1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kept_ratio", [None, 0.5, 0.1])
def test_spvit_macs_predicted_reported_and_counted(kept_ratio):
    blocks = make_blocks(4)
    torch.manual_seed(4)
    sels = [sharpen(SPViTSelector(D, H), 30.0) for _ in range(3)]
    stages = spvit_blocks(4)
    assert stages == [1, 2, 3] and spvit_blocks(12) == [3, 6, 9]
    for b in range(3):
        cls, patches = torch.randn(1, 1, D), torch.randn(1, 12, D)
        run, counted = counted_macs(lambda: run_spvit(blocks, cls, patches, sels, stage_blocks=stages,
                                                      train=False, kept_ratio=kept_ratio))
        assert float(run.macs[0]) == pytest.approx(counted, rel=1e-9)
        kept = [int(k[0]) for k in run.kept]
        assert float(run.macs[0]) == float(spvit_macs(12, 4, stages, kept, dim=D, heads=H, mlp_ratio=4.0)[0])
        if kept_ratio is not None:
            assert kept == budget_counts(12, 3, kept_ratio)
            assert float(run.macs[0]) == spvit_budget_macs(12, 4, stages, kept_ratio, dim=D, heads=H,
                                                           mlp_ratio=4.0)


def test_spvit_budget_ties_go_to_the_lowest_index():
    blk = make_blocks(1)[0]
    patches = torch.zeros(1, 6, D)  # every keep probability equal
    run = run_spvit([blk], torch.zeros(1, 1, D), patches, [FeatureSelector()], stage_blocks=[0],
                    train=False, kept_ratio=0.5)
    assert run.keep[0][0].tolist() == [True, True, True, False, False, False]
    assert budget_counts(1568, 3, 0.343) == [1098, 768, 538]


# ---------------------------------------------------------------------------- SViT

def run_after_block0(blocks, cls, patches, gates, train):
    """The sequence after block 0 of the same run (the gated model cut after one block)."""
    run = run_svit(blocks[:1], cls, patches, gates[:1], gate_blocks=[0], train=train,
                   generator=torch.Generator().manual_seed(0))
    return torch.cat([run.cls, run.tokens.x], dim=1)


@pytest.mark.parametrize("train", [False, True])
def test_svit_keep_prune_reactivate_by_hand(train):
    """Gate 1 (before block 0) keeps {0, 1, 2}; gate 2 (before block 1) keeps {1, 3}: token 3,
    skipped by block 0, is reactivated; token 0 and 2, processed once, pass block 1 unchanged."""
    blocks = make_blocks(2)
    torch.manual_seed(5)
    cls, patches = torch.randn(1, 1, D), torch.randn(1, 4, D)
    gates = [TableGate([0, 1, 2], 4), TableGate([1, 3], 4)]
    run = run_svit(blocks, cls, patches, gates, gate_blocks=[0, 1], train=train,
                   generator=torch.Generator().manual_seed(0))
    # by hand: block 0 on [cls, x0, x1, x2]; x3 untouched
    y = blocks[0](torch.cat([cls, patches[:, :3]], dim=1))
    after0 = torch.cat([y, patches[:, 3:]], dim=1)  # (1, 5, D): cls, x0', x1', x2', x3
    # block 1 on [cls', x1', x3]; x0', x2' untouched
    z = blocks[1](after0[:, [0, 2, 4]])
    want = after0.clone()
    want[:, [0, 2, 4]] = z
    torch.testing.assert_close(run.cls, want[:, :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run.tokens.x, want[:, 1:], atol=1e-5, rtol=1e-5)
    # pass-through is exact: the pruned rows are copied (test) or kept by (1 - M) x (training)
    mid = run_after_block0(blocks, cls, patches, gates, train)  # (1, 5, D): cls, x0'..x2', x3
    assert torch.equal(mid[0, 4], patches[0, 3])  # token 3 skipped block 0: bit-identical
    assert torch.equal(run.tokens.x[0, 0], mid[0, 1])  # token 0 skipped block 1
    assert torch.equal(run.tokens.x[0, 2], mid[0, 3])  # token 2 skipped block 1
    assert [k[0].tolist() for k in run.keep] == [[True, True, True, False], [False, True, False, True]]
    assert [int(k[0]) for k in run.kept] == [3, 2]


@pytest.mark.parametrize("train", [False, True])
def test_svit_keep_all_equals_dense(train):
    blocks = make_blocks(4)
    cls, patches = torch.randn(2, 1, D), torch.randn(2, 10, D)
    gates = [TableGate(list(range(10)), 10) for _ in range(3)]
    if train:
        run = run_svit(blocks, cls, patches, gates, gate_blocks=[1, 2, 3], train=True)
    else:
        gates = [sharpen(SViTGate(D), 10.0) for _ in range(3)]
        run = run_svit(blocks, cls, patches, gates, gate_blocks=[1, 2, 3], train=False, kept_ratio=1.0)
    ref = dense(blocks, cls, patches)
    torch.testing.assert_close(run.cls, ref[:, :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run.tokens.x, ref[:, 1:], atol=1e-5, rtol=1e-5)


def test_svit_batched_equals_one_by_one_with_unequal_counts():
    blocks = make_blocks(4)
    torch.manual_seed(6)
    cls, patches = torch.randn(4, 1, D), torch.randn(4, 12, D)
    gates = [sharpen(SViTGate(D), 30.0) for _ in range(3)]
    run = run_svit(blocks, cls, patches, gates, gate_blocks=[1, 2, 3], train=False)
    assert any(len(set(k.tolist())) > 1 for k in run.kept), [k.tolist() for k in run.kept]
    for b in range(4):
        one = run_svit(blocks, cls[b:b + 1], patches[b:b + 1], gates, gate_blocks=[1, 2, 3], train=False)
        torch.testing.assert_close(run.cls[b], one.cls[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(run.tokens.x[b], one.tokens.x[0], atol=1e-5, rtol=1e-5)
        assert run.macs[b] == one.macs[0]
        for a, c in zip(run.keep, one.keep):
            assert torch.equal(a[b], c[0])


@pytest.mark.parametrize("kept_ratio", [None, 0.5])
def test_svit_macs_predicted_reported_and_counted(kept_ratio):
    blocks = make_blocks(4)
    torch.manual_seed(7)
    gate_blocks = svit_blocks(4)
    assert gate_blocks == [1, 2, 3] and svit_blocks(12) == list(range(3, 12))
    gates = [sharpen(SViTGate(D), 30.0) for _ in gate_blocks]
    for _ in range(3):
        cls, patches = torch.randn(1, 1, D), torch.randn(1, 12, D)
        run, counted = counted_macs(lambda: run_svit(blocks, cls, patches, gates, gate_blocks=gate_blocks,
                                                     train=False, kept_ratio=kept_ratio))
        assert float(run.macs[0]) == pytest.approx(counted, rel=1e-9)
        kept = [int(k[0]) for k in run.kept]
        by_hand = flops.block_macs(13, D) + sum(gate_macs(12, D) + flops.block_macs(k + 1, D) for k in kept)
        assert float(run.macs[0]) == by_hand == float(svit_macs(12, 4, gate_blocks, kept, dim=D, mlp_ratio=4.0)[0])
        if kept_ratio is not None:
            assert float(run.macs[0]) == svit_budget_macs(12, 4, gate_blocks, kept_ratio, dim=D, mlp_ratio=4.0)


def test_svit_targets_and_budget_follow_the_paper():
    assert svit_targets(9) == pytest.approx([0.7] * 3 + [0.49] * 3 + [0.343] * 3)
    assert spvit_targets(3) == pytest.approx([0.7, 0.49, 0.343])
    from videored.models.svit import budget_counts as svit_counts
    assert svit_counts(196, 9, 0.343) == [137] * 3 + [96] * 3 + [67] * 3


# ---------------------------------------------------------------------------- losses

def test_keep_ratio_loss_value_and_gradient():
    torch.manual_seed(8)
    d = [torch.rand(3, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    t = [0.7, 0.49]
    by_hand = ((d[0].mean() - 0.7) ** 2 + (d[1].mean() - 0.49) ** 2) / 2
    torch.testing.assert_close(keep_ratio_loss(d, t), by_hand)
    per = (((d[0].mean(1) - 0.7) ** 2).mean() + ((d[1].mean(1) - 0.49) ** 2).mean()) / 2
    torch.testing.assert_close(keep_ratio_loss(d, t, per_sample=True), per)
    for per_sample in (False, True):
        assert torch.autograd.gradcheck(lambda a, b: keep_ratio_loss([a, b], t, per_sample=per_sample),
                                        tuple(d), eps=1e-6, atol=1e-8)
    # analytic: d/dd_ij = 2 (mean - t) / (B N) / S
    loss = keep_ratio_loss(d, t)
    loss.backward()
    want = 2 * (d[0].mean() - 0.7) / 15 / 2
    torch.testing.assert_close(d[0].grad, torch.full_like(d[0], float(want.detach())))
    with pytest.raises(ValueError, match=r"targets\[1\] = 1.5"):
        keep_ratio_loss(d, [0.5, 1.5])
    with pytest.raises(ValueError, match="2 pruning stages"):
        keep_ratio_loss(d, [0.5])


def test_gumbel_keep_is_hard_straight_through_and_bernoulli():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], requires_grad=True)
    log_probs = logits.log_softmax(-1)
    draws = torch.stack([gumbel_keep(log_probs.detach(), generator=torch.Generator().manual_seed(s))
                         for s in range(4000)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    p = log_probs.detach().exp()[:, 0]
    torch.testing.assert_close(draws.mean(0), p, atol=0.03, rtol=0)  # hard sample ~ Bernoulli(p)
    # the gradient is that of the soft sample with the same noise
    g = torch.Generator().manual_seed(0)
    k = gumbel_keep(log_probs, generator=g)
    k.sum().backward()
    u = torch.rand(log_probs.shape, generator=torch.Generator().manual_seed(0))
    l2 = logits.detach().clone().requires_grad_(True)
    soft = ((l2.log_softmax(-1) - (-u.log()).log()) / 1.0).softmax(-1)[:, 0]
    soft.sum().backward()
    torch.testing.assert_close(logits.grad, l2.grad)


def test_budget_keep_stable_top_k():
    p = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    eligible = torch.tensor([[True, True, False, True, True]])
    assert budget_keep(p, eligible, torch.tensor([2])).tolist() == [[True, True, False, False, False]]
    assert budget_keep(p, eligible, torch.tensor([9])).tolist() == eligible.tolist()


def test_distillation_losses_by_hand():
    torch.manual_seed(9)
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    ps, pt = s.softmax(-1), t.softmax(-1)
    kl = (pt * (pt.log() - ps.log())).sum() / 3
    torch.testing.assert_close(logits_kl(s, t), kl)
    ps2, pt2 = (s / 2).softmax(-1), (t / 2).softmax(-1)
    torch.testing.assert_close(logits_kl(s, t, temperature=2.0), (pt2 * (pt2.log() - ps2.log())).sum() / 3 * 4)
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    keep = torch.tensor([[True, False, True], [False, False, True]])
    want = sum(((a[i, j] - b[i, j]) ** 2).sum() for i, j in [(0, 0), (0, 2), (1, 2)]) / 12
    torch.testing.assert_close(token_mse(a, b, keep), want)
    assert token_mse(a, b, torch.zeros_like(keep)) == 0


def test_bad_arguments_are_clear():
    blocks = make_blocks(2)
    cls, patches = torch.randn(1, 1, D), torch.randn(1, 4, D)
    sel = SPViTSelector(D, H)
    with pytest.raises(ValueError, match="strictly increasing"):
        run_spvit(blocks, cls, patches, [sel, sel], stage_blocks=[1, 1], train=False)
    with pytest.raises(ValueError, match="1 selectors for 2 stages"):
        run_spvit(blocks, cls, patches, [sel], stage_blocks=[0, 1], train=False)
    with pytest.raises(ValueError, match="evaluation budget"):
        run_spvit(blocks, cls, patches, [sel], stage_blocks=[0], train=True, kept_ratio=0.5)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        run_svit(blocks, cls, patches, [SViTGate(D)], gate_blocks=[2], train=False)
    with pytest.raises(ValueError, match="not divisible"):
        SPViTSelector(30, 4)


# ---------------------------------------------------------------------------- short training

def _kept_ratio(run) -> float:
    """The last stage's kept fraction of the training forward (sampled decisions)."""
    return float(run.decisions[-1].mean())


@pytest.mark.parametrize("method", ["spvit", "svit"])
def test_short_training_moves_the_kept_ratio_to_its_target(method):
    """A few dozen steps on random data, selectors trained with the keep-ratio loss plus
    distillation from the dense model (backbone frozen): the kept ratio of the training forward
    (Gumbel samples, a fixed batch and noise) moves to the last stage's target. (The hard
    test-time decisions need confident selectors, which a few dozen steps do not give.)"""
    torch.manual_seed(10)
    blocks = make_blocks(3)
    for blk in blocks:
        blk.requires_grad_(False)
    head = nn.Linear(D, 4).requires_grad_(False)
    N = 12
    if method == "spvit":  # cumulative targets above the start (~0.3)
        stages, targets = [1, 2], [0.9, 0.8]
        pruners = nn.ModuleList(SPViTSelector(D, H) for _ in stages)

        def run(cls, x, train, g=None):
            return run_spvit(blocks, cls, x, pruners, stage_blocks=stages, train=train, generator=g)
    else:  # per-gate targets below the start (~0.5)
        stages, targets = [1, 2], [0.3, 0.15]
        pruners = nn.ModuleList(SViTGate(D) for _ in stages)

        def run(cls, x, train, g=None):
            return run_svit(blocks, cls, x, pruners, gate_blocks=stages, train=train, generator=g)
    cls_eval, x_eval = torch.randn(16, 1, D), torch.randn(16, N, D)
    with torch.no_grad():
        before = _kept_ratio(run(cls_eval, x_eval, True, torch.Generator().manual_seed(1)))
    opt = torch.optim.Adam(pruners.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(40):
        cls, x = torch.randn(8, 1, D), torch.randn(8, N, D)
        with torch.no_grad():
            teacher = head(dense(blocks, cls, x)[:, 0])
        out = run(cls, x, True, g)
        loss = 2.0 * keep_ratio_loss(out.decisions, targets) + 0.5 * logits_kl(head(out.cls[:, 0]), teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = _kept_ratio(run(cls_eval, x_eval, True, torch.Generator().manual_seed(1)))
    assert abs(after - targets[-1]) < abs(before - targets[-1]) - 0.1, (before, after)
    assert abs(after - targets[-1]) < 0.1, (before, after)


@pytest.mark.parametrize("method", ["spvit", "svit"])
def test_every_pruner_parameter_gets_a_gradient(method):
    """The training forward's straight-through decisions carry the keep-ratio loss and the
    task loss to every selector / gate parameter (and the blocks get theirs)."""
    torch.manual_seed(11)
    blocks = make_blocks(3)
    cls, patches = torch.randn(4, 1, D), torch.randn(4, 10, D)
    if method == "spvit":
        pruners = nn.ModuleList(SPViTSelector(D, H) for _ in range(2))
        run = run_spvit(blocks, cls, patches, pruners, stage_blocks=[1, 2], train=True,
                        generator=torch.Generator().manual_seed(0))
    else:
        pruners = nn.ModuleList(SViTGate(D) for _ in range(2))
        run = run_svit(blocks, cls, patches, pruners, gate_blocks=[1, 2], train=True,
                       generator=torch.Generator().manual_seed(0))
    loss = keep_ratio_loss(run.decisions, [0.5, 0.3]) + run.cls.square().mean()
    loss.backward()
    for name, p in pruners.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    assert all(p.grad is not None for blk in blocks for p in blk.parameters())

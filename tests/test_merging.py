"""ToMe and EViT against independent references: hand-built duplicates (proportional attention),
explicit loops over the bipartite graph, a hand-computed fused token, a slow per-head top-k over
the cls attention, the dense model, torch's flop counter and one-by-one runs."""
from __future__ import annotations

import math

import pytest
import torch

from _flop_count import counted_macs
from videored.models import create_model
from videored.models.evit import attentive_rows, evit_blocks, evit_schedule, fusion_map
from videored.models.merge_blocks import attention_step, mlp_step, run_tome
from videored.models.merging import patch_sizes, positions, regroup, unmerged
from videored.models.tome import bipartite_soft_matching, tome_schedule

VIDEO, IMAGE = "timesformer_jointst_tiny_patch16_224", "deit_tiny_patch16_224"


def tiny(name: str, **kwargs):
    """Enough patches to merge: video 3 x 4 x 4 = 48, images 4 x 4 = 16."""
    video = name.startswith("timesformer")
    extra = dict(num_frames=3, depth=2, groups=1) if video else dict(depth=6, groups=3)
    return create_model(name, **{**dict(img_size=64, embed_dim=48, num_heads=3, num_classes=5),
                                 **extra, **kwargs}).eval()


def inputs(model, batch: int = 2) -> torch.Tensor:
    size = model.grid[1] * model.patch_size
    if model.embed.num_frames:
        return torch.randn(batch, 3, model.grid[0], size, size)
    return torch.randn(batch, 3, size, size)


# ---- ToMe ----

def test_tome_schedule_meets_the_budget_evenly():
    assert tome_schedule(1568, 12, 0.5) == [65, 65, 66] * 4  # floor(l * 784 / 12) steps
    for N, L, keep in [(196, 12, 0.3), (1568, 12, 0.3), (48, 2, 0.5), (16, 6, 0.25)]:
        schedule = tome_schedule(N, L, keep)
        assert N - sum(schedule) == round(keep * N)
        assert max(schedule) - min(schedule) <= 1
    assert tome_schedule(196, 12, 1.0) == [0] * 12
    # the bipartite cap: no block removes more than half of its rows
    n = 16
    for r in tome_schedule(16, 2, 0.0):
        assert r <= n // 2
        n -= r


def slow_matching(metric: torch.Tensor, r: int):
    """Explicit loops over the bipartite graph of one sample: metric (n, c) -> new row per row."""
    n = metric.shape[0]
    a_rows, b_rows = list(range(0, n, 2)), list(range(1, n, 2))

    def cosine(i, j):
        u, v = metric[i].tolist(), metric[j].tolist()
        dot = sum(p * q for p, q in zip(u, v))
        return dot / math.sqrt(sum(p * p for p in u) * sum(q * q for q in v))

    edges = []  # (similarity, a row, its best b row)
    for i in a_rows:
        best_j = max(b_rows, key=lambda j: cosine(i, j))
        edges.append((cosine(i, best_j), i, best_j))
    edges.sort(key=lambda e: -e[0])
    merged = {i: j for _, i, j in edges[:r]}
    stay = sorted(i for _, i, _ in edges[r:])
    new_rows = stay + b_rows  # the rows of the merged sequence, by the old row they stand at
    row_map = [new_rows.index(merged.get(i, i)) for i in range(n)]
    return row_map, new_rows


@pytest.mark.parametrize("n, r", [(9, 3), (10, 5), (7, 1)])
def test_bipartite_matching_equals_slow_loop(n, r):
    metric = torch.randn(3, n, 5, dtype=torch.float64)
    match = bipartite_soft_matching(metric, r)
    for b in range(3):
        row_map, new_rows = slow_matching(metric[b], r)
        assert match.row_map[b].tolist() == row_map
        assert match.keep[b].tolist() == new_rows


def test_tome_sizes_and_sources_add_up():
    model = tiny(VIDEO)
    N, x = model.num_patches, inputs(model)
    out = model(x, selector="tome", keep_ratio=0.4)
    # the run's own bookkeeping, reached through the block loop
    cls, patches = model.embed(x)
    run = run_tome(list(model.blocks), cls, patches, keep_ratio=0.4, mlp_ratio=4.0)
    tokens = run.tokens
    n = tokens.x.shape[1]
    assert n == round(0.4 * N) and out.source.shape == (2, N)
    assert torch.equal(tokens.size.sum(1), torch.full((2,), float(N)))
    for b in range(2):  # size = how many patches name the row in source
        counts = torch.bincount(tokens.source[b], minlength=n).double()
        torch.testing.assert_close(tokens.size[b].double(), counts, rtol=0, atol=0)
        # each row stands at one of the patches it covers
        assert (tokens.source[b, tokens.index[b]] == torch.arange(n)).all()
    assert positions(tokens, N).sum(1).tolist() == [n, n]
    torch.testing.assert_close(out.kept_ratio, torch.full((2,), n / N))
    torch.testing.assert_close(out.scores[-1], 1.0 / patch_sizes(tokens))


def test_proportional_attention_on_exact_duplicates():
    """Tokens duplicated in pairs, merged pair by pair: with log(size) in the logits the next
    block gives exactly the dense outputs; without it, it does not."""
    torch.manual_seed(1)
    model = tiny(IMAGE)
    block1, block2 = model.blocks[0], model.blocks[1]
    cls = torch.randn(1, 1, 48)
    distinct = torch.randn(1, 4, 48)
    dense_patches = distinct.repeat_interleave(2, dim=1)  # rows 2i, 2i+1 equal (A row, B row)
    dense = block2(block1(torch.cat([cls, dense_patches], 1)))  # timm's own blocks

    seq, keys, _ = attention_step(block1, torch.cat([cls, dense_patches], 1), want_keys=True)
    match = bipartite_soft_matching(keys[:, 1:], 4)
    assert match.row_map.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]]  # every pair, nothing else
    tokens = regroup(unmerged(seq[:, 1:]), match.row_map, match.keep, torch.ones(1, 8),
                     normalize=True)
    assert tokens.size.tolist() == [[2.0] * 4]
    seq = mlp_step(block1, torch.cat([seq[:, :1], tokens.x], 1))
    for log_size, equal in [(tokens.size.log(), True), (None, False)]:
        out, _, _ = attention_step(block2, seq, log_size=log_size)
        out = mlp_step(block2, out)
        close = torch.allclose(out[:, 0], dense[:, 0], atol=1e-5)
        assert close == equal
        if equal:
            torch.testing.assert_close(out[:, 1:], dense[:, 2::2], atol=1e-5, rtol=0)
            torch.testing.assert_close(out[:, 1:], dense[:, 1::2], atol=1e-5, rtol=0)


# ---- EViT ----

def test_evit_blocks_and_schedule():
    assert evit_blocks(12) == [3, 6, 9]  # the paper's 4th, 7th and 10th layers
    assert evit_blocks(16) == [4, 8, 12]  # LV-ViT-S: 5th, 9th, 13th
    assert evit_schedule(1568, 3, 0.5) == [1245, 988, 784]  # + the fused row at each stage
    assert evit_schedule(196, 3, 1.0) == [196] * 3


def test_evit_fused_token_by_hand():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]]])  # (1, 4, 2)
    cls_attn = torch.tensor([[0.1, 0.4, 0.2, 0.05]])
    attentive = attentive_rows(cls_attn, 2)
    assert attentive.tolist() == [[False, True, True, False]]
    row_map, keep = fusion_map(attentive)
    assert row_map.tolist() == [[2, 0, 1, 2]] and keep.tolist() == [[1, 2]]
    tokens = regroup(unmerged(x), row_map, torch.tensor([[1, 2, -1]]),
                     torch.where(attentive, 1.0, cls_attn), normalize=False)
    # rows 1 and 2 unchanged; fused = 0.1 * [1, 0] + 0.05 * [4, 0] = [0.3, 0]
    torch.testing.assert_close(tokens.x, torch.tensor([[[0.0, 1.0], [2.0, 2.0], [0.3, 0.0]]]))
    assert tokens.size.tolist() == [[1.0, 1.0, 2.0]] and tokens.source.tolist() == [[2, 0, 1, 2]]
    assert positions(tokens, 4).tolist() == [[False, True, True, False]]


def slow_cls_attention(block, seq: torch.Tensor) -> list[float]:
    """One sample's cls attention row, head by head with explicit softmax: seq (L, D) -> (L-1)."""
    attn = block.attn
    H, hd = attn.num_heads, attn.head_dim
    x = block.norm1(seq).detach()
    W, bias = attn.qkv.weight.detach(), attn.qkv.bias.detach()
    total = [0.0] * (seq.shape[0] - 1)
    for h in range(H):
        q = x[0] @ W[h * hd:(h + 1) * hd].T + bias[h * hd:(h + 1) * hd]
        kw = slice(H * hd + h * hd, H * hd + (h + 1) * hd)
        logits = [float(q @ (x[j] @ W[kw].T + bias[kw])) / math.sqrt(hd)
                  for j in range(seq.shape[0])]
        z = sum(math.exp(v) for v in logits)
        for j in range(1, seq.shape[0]):
            total[j - 1] += math.exp(logits[j]) / z / H
    return total


@pytest.mark.parametrize("name", [IMAGE, VIDEO])
def test_evit_keeps_the_slow_topk_of_cls_attention(name):
    model = tiny(name)
    x = inputs(model)
    N = model.num_patches
    stage = evit_blocks(len(model.blocks))[0]
    k = evit_schedule(N, len(evit_blocks(len(model.blocks))), 0.5)[0]
    out = model(x, selector="evit", keep_ratio=0.5)
    with torch.no_grad():
        cls, patches = model.embed(x)
        seq = torch.cat([cls, patches], 1)
        for block in model.blocks[:stage]:  # nothing reduced before the first stage
            seq = block(seq)
    for b in range(len(x)):
        a = slow_cls_attention(model.blocks[stage], seq[b])
        top = sorted(range(N), key=lambda j: -a[j])[:k]
        assert sorted(torch.nonzero(out.keep[0][b]).flatten().tolist()) == sorted(top)
        torch.testing.assert_close(out.scores[0][b], torch.tensor(a) / max(a), atol=1e-5, rtol=0)


# ---- both ----

@pytest.mark.parametrize("name", [IMAGE, VIDEO])
@pytest.mark.parametrize("selector", ["tome", "evit"])
def test_keep_all_equals_dense(name, selector):
    model = tiny(name)
    x = inputs(model)
    dense = model(x, selector="none")
    out = model(x, selector=selector, keep_ratio=1.0)
    torch.testing.assert_close(out.logits, dense.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.gflops, dense.gflops)
    assert all(k.all() for k in out.keep)


@pytest.mark.parametrize("name", [IMAGE, VIDEO])
@pytest.mark.parametrize("selector", ["tome", "evit"])
def test_cost_falls_with_the_budget_and_matches_flop_counter(name, selector):
    model = tiny(name)
    x = inputs(model, batch=1)
    costs = []
    for keep in (1.0, 0.7, 0.5, 0.3):
        out, counted = counted_macs(lambda: model(x, selector=selector, keep_ratio=keep))
        assert float(out.gflops[0]) * 1e9 == pytest.approx(counted, rel=1e-6)  # float32 GMACs
        costs.append(float(out.gflops[0]))
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == 4


@pytest.mark.parametrize("name", [IMAGE, VIDEO])
@pytest.mark.parametrize("selector", ["tome", "evit"])
def test_batched_equals_one_by_one(name, selector):
    model = tiny(name)
    x = inputs(model, batch=3)
    out = model(x, selector=selector, keep_ratio=0.4)
    for b in range(3):
        one = model(x[b:b + 1], selector=selector, keep_ratio=0.4)
        torch.testing.assert_close(one.logits, out.logits[b:b + 1], atol=1e-5, rtol=0)
        assert torch.equal(one.source, out.source[b:b + 1])
        for k1, kb in zip(one.keep, out.keep):
            assert torch.equal(k1, kb[b:b + 1])


@pytest.mark.parametrize("selector", ["tome", "evit"])
def test_trainable_through_the_reduction(selector):
    """EViT is finetuned through its reduction (its fused token carries gradient to the cls
    attention); ToMe too can be: every trainable parameter gets a gradient."""
    model = tiny(IMAGE, selector=selector, keep_ratio=0.5).train()
    out = model(inputs(model))
    out.logits.logsumexp(1).sum().backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent, f"parameters without gradient: {silent}"


@pytest.mark.parametrize("selector", ["tome", "evit"])
def test_per_clip_budgets_equal_one_by_one(selector):
    """A (B,) keep_ratio (matched budgets) reduces every clip to its own count."""
    model = tiny(VIDEO)
    x = inputs(model, batch=3)
    ratios = torch.tensor([0.5, 0.25, 0.5], dtype=torch.float64)
    out = model(x, selector=selector, keep_ratio=ratios)
    for b in range(3):
        one = model(x[b:b + 1], selector=selector, keep_ratio=float(ratios[b]))
        torch.testing.assert_close(one.logits, out.logits[b:b + 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(one.gflops, out.gflops[b:b + 1])
        assert torch.equal(one.source, out.source[b:b + 1])
        assert all(torch.equal(k1, kb[b:b + 1]) for k1, kb in zip(one.keep, out.keep))
    assert out.gflops[1] < out.gflops[0] == out.gflops[2]

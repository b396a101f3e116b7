"""The benchmark's explanation rows (`models/explanations.py`) against plain slow references
written here from the rules' descriptions (Chefer et al. CVPR'21; the public benchmark
hila-chefer/Transformer-Explainability), on a 2-block model: per-head, per-token loops for the
attention, element loops for every LRP rule; and the rules' conservation property."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videored.models import create_model
from videored.models import explanations as E

D, HEADS, L = 8, 2, 5  # embed dim, heads, tokens (cls + 2 x 2 patches)


def _model():
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=D,
                         depth=2, num_heads=HEADS, num_classes=3, groups=1,
                         selector="none").double().eval()
    with torch.no_grad():  # non-trivial norms and biases (init sets them to 1 / 0)
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _x(b=2):
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(1)).double()


def _ln(x, mod):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def _slow_forward(model, seq):
    """One sample's tokens seq (L, D) through the blocks with the attention written as loops.
    Each block's probabilities are made a leaf (same values), so autograd gives ∂y/∂A."""
    hd = D // HEADS
    recs, h = [], seq
    for blk in model.blocks:
        a = blk.attn
        n1 = _ln(h, blk.norm1)
        qkv = n1 @ a.qkv.weight.T + a.qkv.bias
        q, k, v = qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:]
        P = torch.zeros(HEADS, L, L, dtype=seq.dtype)
        for hh in range(HEADS):
            cols = slice(hh * hd, (hh + 1) * hd)
            for i in range(L):
                logits = torch.stack([(q[i, cols] * k[j, cols]).sum() / math.sqrt(hd)
                                      for j in range(L)])
                e = torch.exp(logits - logits.max())
                P[hh, i] = e / e.sum()
        P = P.detach().requires_grad_(True)
        o = torch.cat([P[hh] @ v[:, hh * hd:(hh + 1) * hd] for hh in range(HEADS)], dim=1)
        attn_out = o @ a.proj.weight.T + a.proj.bias
        mid = h + attn_out
        n2 = _ln(mid, blk.norm2)
        g = F.gelu(n2 @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
        mlp_out = g @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
        out = mid + mlp_out
        recs.append(dict(h=h, n1=n1, q=q, k=k, v=v, P=P, o=o, attn_out=attn_out, mid=mid,
                         n2=n2, g=g, mlp_out=mlp_out))
        h = out
    feat = _ln(h, model.norm)[0]
    return recs, feat, feat @ model.head.weight.T + model.head.bias


# ---- the LRP rules, element by element (numpy, float64)
def _rel_linear(x, W, R):
    """alpha=1 beta=0: R_i = Σ_j (x_i⁺ W_ji⁺ + x_i⁻ W_ji⁻) / z_j R_j; an output with z_j = 0
    (no input agrees in sign with its weight) passes nothing on (the benchmark's safe divide)."""
    x, W, R = (np.asarray(t, dtype=np.float64) for t in (x, W, R))
    out = np.zeros(x.shape)
    for n in range(x.shape[0]):
        for j in range(W.shape[0]):
            terms = [max(x[n, i], 0) * max(W[j, i], 0) + min(x[n, i], 0) * min(W[j, i], 0)
                     for i in range(x.shape[1])]
            z = sum(terms)
            if z == 0:
                continue
            for i in range(x.shape[1]):
                out[n, i] += terms[i] / z * R[n, j]
    return out


def _rel_matmul(A, B, R):
    """z-rule on both factors of Z = A B, halved."""
    A, B, R = (np.asarray(t, dtype=np.float64) for t in (A, B, R))
    ra, rb = np.zeros(A.shape), np.zeros(B.shape)
    for i in range(A.shape[0]):
        for j in range(B.shape[1]):
            z = sum(A[i, k] * B[k, j] for k in range(A.shape[1]))
            for k in range(A.shape[1]):
                share = A[i, k] * B[k, j] / z * R[i, j] / 2
                ra[i, k] += share
                rb[k, j] += share
    return ra, rb


def _rel_add(a, b, R):
    """z-rule on a + b, each side rescaled to |Σ R_side| / (|Σ R_a| + |Σ R_b|) of Σ R."""
    a, b, R = (np.asarray(t, dtype=np.float64) for t in (a, b, R))
    ra, rb = a * R / (a + b), b * R / (a + b)
    sa, sb = ra.sum(), rb.sum()
    return (ra * abs(sa) / (abs(sa) + abs(sb)) * R.sum() / sa,
            rb * abs(sb) / (abs(sa) + abs(sb)) * R.sum() / sb)


def _slow_lrp(model, recs, feat, target):
    """Relevance at the block-0 input (L, D) and per block R_A (H, L, L) (numpy)."""
    hd = D // HEADS
    r_logits = np.zeros((1, 3))
    r_logits[0, target] = 1.0
    R = np.zeros((L, D))
    R[0] = _rel_linear(feat.detach()[None], model.head.weight.detach(), r_logits)[0]
    r_attn_all = []
    for blk, r in zip(reversed(model.blocks), reversed(recs)):
        n = {key: val.detach().numpy() for key, val in r.items()}
        r_mid, r_mlp = _rel_add(n["mid"], n["mlp_out"], R)
        r_g = _rel_linear(n["g"], blk.mlp.fc2.weight.detach(), r_mlp)
        r_mid = r_mid + _rel_linear(n["n2"], blk.mlp.fc1.weight.detach(), r_g)  # GELU, norm2: =
        r_x, r_att = _rel_add(n["h"], n["attn_out"], r_mid)
        r_o = _rel_linear(n["o"], blk.attn.proj.weight.detach(), r_att)
        r_q, r_k, r_v = np.zeros((L, D)), np.zeros((L, D)), np.zeros((L, D))
        r_P = np.zeros((HEADS, L, L))
        for hh in range(HEADS):
            c = slice(hh * hd, (hh + 1) * hd)
            r_P[hh], r_v[:, c] = _rel_matmul(n["P"][hh], n["v"][:, c], r_o[:, c])
            r_q[:, c], r_kt = _rel_matmul(n["q"][:, c], n["k"][:, c].T, r_P[hh])  # softmax: =
            r_k[:, c] = r_kt.T
        R = r_x + _rel_linear(n["n1"], blk.attn.qkv.weight.detach(),
                              np.concatenate([r_q, r_k, r_v], axis=1))
        r_attn_all.insert(0, r_P)
    return R, r_attn_all


def _slow_input_rule(model, image, r_tokens):
    """zᴮ rule through the patch conv (bounds: the image's min / max), patch by patch and
    output channel by output channel, summed over colours -> (1, H, W)."""
    W = model.embed.patch_embed.proj.weight.detach().numpy()  # (D, 3, p, p)
    p = W.shape[-1]
    low, high = image.min(), image.max()
    out = np.zeros(image.shape)
    g = image.shape[-1] // p
    for n in range(r_tokens.shape[0]):
        r0, c0 = (n // g) * p, (n % g) * p
        patch = image[:, r0:r0 + p, c0:c0 + p]
        for j in range(W.shape[0]):
            w = W[j]
            num = patch * w - low * np.maximum(w, 0) - high * np.minimum(w, 0)
            out[:, r0:r0 + p, c0:c0 + p] += num / num.sum() * r_tokens[n, j]
    return out.sum(0)[None]


def _reference(model, x, targets=None):
    """{row: (B, N)} from the slow forward and the slow rules, sample by sample; targets (B,)
    the explained classes (default: the predicted ones)."""
    rows = {k: [] for k in ("raw_attention", "rollout", "attn_gradcam", "lrp", "lrp_pixels",
                            "transformer_attribution")}
    eye = np.eye(L)
    for b in range(len(x)):
        seq = torch.cat(model.embed(x[b:b + 1]), dim=1)[0].detach()
        recs, feat, logits = _slow_forward(model, seq)
        target = int(logits.argmax()) if targets is None else int(targets[b])
        grads = torch.autograd.grad(logits[target], [r["P"] for r in recs])
        P = [r["P"].detach().numpy() for r in recs]
        g = [gr.numpy() for gr in grads]
        rows["raw_attention"].append(P[1][:, 0, 1:].mean(0))
        rows["rollout"].append((0.5 * P[1].mean(0) + 0.5 * eye)[0, 1:])  # start_layer = 1
        w = g[1][:, 0, 1:].mean(1)  # (H,) per-head weight
        rows["attn_gradcam"].append(np.maximum(
            np.mean([w[h] * P[1][h, 0, 1:] for h in range(HEADS)], axis=0), 0))
        R, r_attn = _slow_lrp(model, recs, feat, target)
        pos = model.embed.pos_embed[0].detach().numpy()
        content = seq.detach().numpy() - pos
        r_content, _ = _rel_add(content, pos, R)
        rows["lrp"].append(r_content[1:].sum(1))
        rows["lrp_pixels"].append(_slow_input_rule(model, x[b].numpy(), r_content[1:]))
        cam = np.maximum(g[1] * r_attn[1], 0).mean(0)  # start_layer = 1: the last block only
        rows["transformer_attribution"].append((cam + eye)[0, 1:])
    return {k: torch.tensor(np.stack(v)) for k, v in rows.items()}


@pytest.mark.parametrize("targets", [None, (0, 1), (2, 0)])
def test_benchmark_rows_equal_slow_loop_references_on_two_blocks(targets):
    model, x = _model(), _x()
    ref = _reference(model, x, targets)
    t = None if targets is None else torch.tensor(targets)
    got = {"raw_attention": E.raw_attention(model, x), "rollout": E.attention_rollout(model, x),
           "attn_gradcam": E.attn_gradcam(model, x, t), "lrp": E.lrp(model, x, t),
           "lrp_pixels": E.lrp_pixels(model, x, t),
           "transformer_attribution": E.transformer_attribution(model, x, t)}
    for name, value in got.items():
        assert value.shape == ((2, 1, 16, 16) if name == "lrp_pixels" else (2, 4))
        torch.testing.assert_close(value, ref[name], rtol=1e-6, atol=1e-9, msg=name)
    # the pixel map's per-patch sums are the patch relevance (the zᴮ rule conserves)
    torch.testing.assert_close(got["lrp_pixels"].reshape(2, 2, 8, 2, 8).sum((2, 4)).flatten(1),
                               got["lrp"])
    assert (ref["lrp"] != 0).all() and (ref["transformer_attribution"] > 0).any()
    if targets == (2, 0):  # a class whose attention-GradCAM is not all ReLU-zero
        assert (ref["attn_gradcam"] > 0).any()


def test_rollout_start_layer_skips_the_first_blocks():
    model, x = _model(), _x()
    with torch.no_grad():
        probs = []
        seq = torch.cat(model.embed(x), dim=1)
        from videored.models import block_adapter as ba
        for blk in model.blocks:
            att = ba.ExplicitAttend(blk.attn)
            seq = ba.block_forward(blk, seq, att)
            probs.append(0.5 * att.probs.mean(1) + 0.5 * torch.eye(L, dtype=seq.dtype))
    torch.testing.assert_close(E.attention_rollout(model, x, start_layer=0),
                               (probs[1] @ probs[0])[:, 0, 1:])
    torch.testing.assert_close(E.attention_rollout(model, x, start_layer=1), probs[1][:, 0, 1:])


def test_lrp_rules_conserve_relevance():
    g = torch.Generator().manual_seed(3)
    x, W = torch.randn(4, 6, generator=g).double(), torch.randn(5, 6, generator=g).double()
    R = torch.rand(4, 5, generator=g).double()
    # linear (alpha 1, beta 0): Σ_i R_i = Σ_j R_j over the outputs with z_j ≠ 0, per row; and
    # equal to the element loops
    r = E.lrp_linear(x, W, R)
    z = F.linear(x.clamp(min=0), W.clamp(min=0)) + F.linear(x.clamp(max=0), W.clamp(max=0))
    assert (z == 0).any()  # the case the rule drops is exercised
    torch.testing.assert_close(r.sum(1), (R * (z != 0)).sum(1))
    torch.testing.assert_close(r, torch.tensor(_rel_linear(x, W, R)))
    # product: each factor gets half, Σ R_a + Σ R_b = Σ R
    a, b = torch.rand(3, 4, generator=g).double(), torch.rand(4, 2, generator=g).double()
    Rz = torch.randn(3, 2, generator=g).double()
    ra, rb = E.lrp_matmul(a, b, Rz)
    torch.testing.assert_close(ra.sum() + rb.sum(), Rz.sum())
    for got, want in zip((ra, rb), _rel_matmul(a, b, Rz)):
        torch.testing.assert_close(got, torch.tensor(want))
    # residual sum: exact, per sample
    a, b, Rs = (torch.randn(2, 3, 4, generator=g).double() for _ in range(3))
    ra, rb = E.lrp_add(a, b, Rs)
    torch.testing.assert_close((ra + rb).sum((1, 2)), Rs.sum((1, 2)))
    for s in range(2):
        for got, want in zip((ra[s], rb[s]), _rel_add(a[s], b[s], Rs[s])):
            torch.testing.assert_close(got, torch.tensor(want))
    # input layer (zᴮ): z ≥ 0 for inputs within the bounds, Σ R_pixels = Σ R
    patches = torch.rand(4, 6, generator=g).double() * 2 - 1
    r = E.lrp_input_rule(patches, W, R, torch.tensor(-1.0).double(), torch.tensor(1.0).double())
    torch.testing.assert_close(r.sum(1), R.sum(1))
    # the whole model: Σ R is 1 per sample (the one-hot start) after the head and every block
    # (D = 64: an output with z = 0 needs 64 sign mismatches, so none loses relevance)
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=64,
                         depth=3, num_heads=4, num_classes=3, groups=1,
                         selector="none").double().eval()
    xs = _x()
    layers = E.lrp_pass(model, xs)["layers"]
    assert len(layers) == 1 + len(model.blocks)
    assert layers == pytest.approx([2.0] * len(layers), rel=1e-6)  # 2 samples


def test_old_names_still_work_and_warn_once(recwarn):
    import warnings
    E._warned.clear()
    model, x = _model(), _x()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = E.explanation_scores(model, x, "gradcam")
        E.explanation_scores(model, x, "gradcam")
    assert sum("feature_gradcam" in str(w.message) for w in caught) == 1
    torch.testing.assert_close(a, E.explanation_scores(model, x, "feature_gradcam"))
    from videored.models.methods import EXPLANATIONS
    assert EXPLANATIONS == (*E.EXPLANATIONS, *E.DEPRECATED)  # the table's names = this registry


def test_topk_ties_keep_the_lowest_indices_on_every_run_and_batch_order():
    scores = torch.tensor([[0.5, 1.0, 0.5, 0.5, 0.0, 1.0],
                           [0.2, 0.2, 0.2, 0.2, 0.2, 0.2],
                           [0.0, 0.3, 0.3, 0.9, 0.3, 0.1]])
    k = [3, 2, 2]
    want = torch.tensor([[1, 1, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0]]).bool()
    for _ in range(5):
        assert torch.equal(E.stable_topk_mask(scores, k), want)
    perm = torch.tensor([2, 0, 1])
    assert torch.equal(E.stable_topk_mask(scores[perm], [k[i] for i in perm]), want[perm])
    # long rows of ties (the sort's parallel paths): still the first k indices
    flat = torch.zeros(2, 3000)
    keep = E.stable_topk_mask(flat, [1000, 7])
    assert keep[0, :1000].all() and not keep[0, 1000:].any() and keep[1].sum() == 7
    assert keep[1, :7].all()
    # through an explanation: GradCAM's ReLU zeros tie; batch order does not change a sample's set
    model, x = _model(), _x(4)
    out = E.explanation_output(model, x, "attn_gradcam", 0.5).keep[0]
    again = E.explanation_output(model, x[[3, 1, 0, 2]], "attn_gradcam", 0.5).keep[0]
    assert torch.equal(again, out[[3, 1, 0, 2]])


def test_lrp_position_split_reads_the_video_embedding():
    """LRP's last rule splits the input tokens into content (cls token, patch embedding) and
    position (+ time) embedding: the content part equals the patch embedding of each frame."""
    from einops import rearrange

    torch.manual_seed(0)
    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=16, patch_size=8,
                         num_frames=3, embed_dim=D, depth=2, num_heads=HEADS, num_classes=3,
                         selector="none").double().eval()
    with torch.no_grad():
        model.embed.time_embed.normal_()
    x = torch.randn(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(2)).double()
    seq = E._tokens(model, x)
    content = seq - E._position_part(model, seq)
    with torch.no_grad():
        patches = model.embed.patch_embed(rearrange(x, "b c t h w -> (b t) c h w"))
    torch.testing.assert_close(content[:, 1:], patches.reshape(2, 12, D))
    torch.testing.assert_close(content[:, 0], model.embed.cls_token[0].expand(2, D))
    assert E.lrp(model, x).shape == (2, 12)

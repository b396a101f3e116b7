"""The timm adapter (`models/block_adapter.py`) computes what timm's own Block computes."""
import pytest
import torch
from timm.models.vision_transformer import Block

from videored.models import block_adapter as ba
from videored.models.vit import block_norm

VARIANTS = {
    "plain": {},
    "qk_norm": {"qk_norm": True},
    "scale_norm": {"scale_attn_norm": True},
    "layer_scale": {"init_values": 0.1},
}


def _block(**kwargs) -> Block:
    torch.manual_seed(0)
    blk = Block(dim=32, num_heads=4, qkv_bias=True, norm_layer=block_norm, **kwargs).eval()
    for p in blk.parameters():  # non-trivial norms / biases
        p.data.add_(0.05 * torch.randn_like(p))
    return blk


def _variants():
    yield from VARIANTS.items()
    import inspect
    from timm.models.vision_transformer import Attention
    if "gated" in inspect.signature(Attention.__init__).parameters:  # newer timm only
        yield "gated", {"gated": True}


def _make(kwargs) -> Block:
    if "gated" in kwargs:  # Block has no `gated` knob: swap in a gated Attention
        from timm.models.vision_transformer import Attention
        blk = _block()
        blk.attn = Attention(32, num_heads=4, qkv_bias=True, gated=True).eval()
        for p in blk.attn.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        return blk
    try:
        return _block(**kwargs)
    except TypeError:
        pytest.skip(f"this timm's Block has no {kwargs}")


@pytest.mark.parametrize("name,kwargs", list(_variants()))
def test_block_forward_equals_timm(name, kwargs):
    blk = _make(kwargs)
    x = torch.randn(3, 9, 32)
    ref = blk(x)
    torch.testing.assert_close(ba.block_forward(blk, x, ba.sdpa_attend(blk.attn)), ref,
                               atol=1e-5, rtol=1e-5)
    explicit = ba.ExplicitAttend(blk.attn)
    torch.testing.assert_close(ba.block_forward(blk, x, explicit), ref, atol=1e-5, rtol=1e-5)
    assert explicit.probs.shape == (3, 4, 9, 9)
    torch.testing.assert_close(explicit.probs.sum(-1), torch.ones(3, 4, 9))


def test_key_mask_equals_timm_masked_call():
    blk = _block()
    x = torch.randn(2, 7, 32)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    ref = blk(x, attn_mask=mask)
    out = ba.block_forward(blk, x, ba.sdpa_attend(blk.attn, mask))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    explicit = ba.ExplicitAttend(blk.attn, mask)
    torch.testing.assert_close(ba.block_forward(blk, x, explicit), ref, atol=1e-5, rtol=1e-5)
    assert explicit.probs[1, ..., 5:].abs().max() == 0


def test_cls_attention_is_row_zero_of_the_probabilities():
    """cls_attention projects only the cls query and the keys; a hand computation from the
    block's weights (one plain softmax per head) gives the same row."""
    blk = _block(qk_norm=True)
    x = torch.randn(2, 6, 32)
    h = blk.norm1(x)
    qkv = blk.attn.qkv(h).view(2, 6, 3, 4, 8)
    q, k = blk.attn.q_norm(qkv[:, :, 0]), blk.attn.k_norm(qkv[:, :, 1])  # (B, L, H, hd)
    logits = torch.einsum("bhd,blhd->bhl", q[:, 0], k) / 8 ** 0.5
    expected = logits.softmax(-1)[:, :, 1:].mean(1)
    torch.testing.assert_close(ba.cls_attention(blk, x), expected, atol=1e-6, rtol=1e-5)


def test_packed_rows_share_the_code_path():
    """Token-major layout: a (L, D) sample runs the same as a (1, L, D) batch."""
    blk = _block()
    x = torch.randn(1, 5, 32)

    def attend(q, k, v):  # unbatched (L, H, hd)
        return ba.tokens_first(torch.nn.functional.scaled_dot_product_attention(
            ba.heads_first(q), ba.heads_first(k), ba.heads_first(v)))

    torch.testing.assert_close(ba.block_forward(blk, x[0], attend), blk(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kwargs", list(VARIANTS.items()))
def test_traced_block_forward_equals_timm_and_keeps_its_intermediates(name, kwargs):
    blk = _make(kwargs)
    x = torch.randn(2, 7, 32)
    t = ba.traced_block_forward(blk, x, retain_grad=True)
    torch.testing.assert_close(t.out, blk(x), atol=1e-5, rtol=1e-5)
    qkv, proj, fc1, fc2 = ba.lrp_linears(blk)
    torch.testing.assert_close(t.mid, x + blk.ls1(blk.attn(blk.norm1(x))), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t.mlp_out, blk.ls2(fc2(t.hidden)))
    torch.testing.assert_close(t.hidden, blk.mlp.act(fc1(blk.norm2(t.mid))))
    assert t.probs.shape == (2, 4, 7, 7) and t.q.shape == (2, 7, 4, 8)
    with pytest.raises(ValueError, match="eval mode"):
        ba.traced_block_forward(blk.train(), x)


def test_lrp_linears_refuse_what_the_rules_do_not_cover():
    for name, kwargs in _variants():
        if name == "gated":
            with pytest.raises(NotImplementedError, match="gated"):
                ba.lrp_linears(_make(kwargs))
    blk = _block()
    blk.mlp.norm = torch.nn.LayerNorm(blk.mlp.fc1.out_features)
    with pytest.raises(NotImplementedError, match="MLP"):
        ba.lrp_linears(blk)


def test_patch_embed_matrix_is_the_patch_conv():
    from timm.layers import PatchEmbed

    torch.manual_seed(0)
    pe = PatchEmbed(img_size=16, patch_size=8, in_chans=3, embed_dim=5)
    x = torch.randn(2, 3, 16, 16)
    weight, p = ba.patch_embed_matrix(pe)
    patches = x.unfold(2, p, p).unfold(3, p, p)  # (B, C, gh, gw, p, p)
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 4, 3 * p * p)  # (c, row, col) order
    torch.testing.assert_close(flat @ weight.T + pe.proj.bias, pe(x), atol=1e-5, rtol=1e-5)


# ---- every reader of a Block goes through the adapter: each path equals timm's own Block ----

@pytest.mark.parametrize("name,kwargs", list(_variants()))
def test_merging_steps_equal_timm(name, kwargs):
    """ToMe/EViT's split block (merge_blocks.attention_step + mlp_step) with nothing merged is
    timm's Block, gated attention included (it used to raise)."""
    from videored.models.merge_blocks import attention_step, mlp_step
    blk = _make(kwargs)
    x = torch.randn(2, 9, 32)
    seq, keys, cls_attn = attention_step(blk, x, want_keys=True, want_cls_attn=True)
    torch.testing.assert_close(mlp_step(blk, seq), blk(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls_attn, ba.cls_attention(blk, x), atol=1e-6, rtol=1e-5)
    _, k, _ = ba.qkv_heads(blk.attn, blk.norm1(x), parts="k")
    torch.testing.assert_close(keys, k.mean(dim=2))


@pytest.mark.parametrize("name,kwargs", list(_variants()))
def test_packed_block_equals_timm_per_sample(name, kwargs):
    """The packed path (ragged.packed_block): two samples of unequal length packed in one (L, D)
    tensor give what timm's Block gives on each sample alone."""
    from videored.models.ragged import packed_block, packed_layout
    blk = _make(kwargs)
    a, b = torch.randn(1, 6, 32), torch.randn(1, 4, 32)
    keys = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    layout = packed_layout(keys)
    out = packed_block(blk, torch.cat([a[0], b[0]]), layout)
    torch.testing.assert_close(out[:6], blk(a)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[6:], blk(b)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kwargs", list(_variants()))
def test_attention_scorer_is_the_cls_row_rescaled(name, kwargs):
    """The raw-attention baseline (selectors.attention_scores) = the adapter's cls row, divided
    by its per-sample max, padded keys excluded."""
    from videored.models.selectors import attention_scores
    from videored.models.tokens import TokenSet, key_padding_mask
    blk = _make(kwargs)
    cls, x = torch.randn(2, 1, 32), torch.randn(2, 5, 32)
    valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    tokens = TokenSet(x=x, index=torch.arange(5).expand(2, 5), valid=valid)
    got = attention_scores(blk, cls, tokens, key_padding_mask(valid))
    for i, n in enumerate((5, 3)):  # each sample alone, only its real rows
        row = ba.cls_attention(blk, torch.cat([cls[i:i + 1], x[i:i + 1, :n]], dim=1))[0]
        torch.testing.assert_close(got[i, :n], row / row.max(), atol=1e-6, rtol=1e-5)
        assert (got[i, n:] == 0).all()

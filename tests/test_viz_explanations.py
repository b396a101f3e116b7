"""Explanation baselines (`videored.models.explanations`) against independent references:
attention probabilities captured from timm's own (non-fused) attention, rollout as a
hand-computed product, GradCAM's weights by finite differences, Chefer's ICCV'21 rule on gradients
that timm's graph retained."""
import pytest
import torch

from videored.models import create_model
from videored.models import block_adapter as ba
from videored.models.explanations import (attention_rollout, chefer_iccv21, explanation_output,
                                          explanation_scores, feature_gradcam, gradcam_parts)


def _model(depth=2, video=False):
    torch.manual_seed(0)
    kwargs = dict(img_size=32, patch_size=8, embed_dim=24, depth=depth, num_heads=3,
                  num_classes=5, groups=1, selector="interpreter")
    if video:
        kwargs["num_frames"] = 2
    return create_model("deit_tiny_patch16_224" if not video else "timesformer_jointst_tiny_patch16_224",
                        **kwargs).eval()


def _x(video=False, b=2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, *((2,) if video else ()), 32, 32, generator=g)


class _TimmProbs:
    """Attention probabilities from timm's non-fused path of this model instance only: the
    input of each block's attn_drop (a Dropout, identity in eval) is softmax(qkᵀ·scale)."""

    def __init__(self, model, retain_grad=False):
        self.probs, self.handles = [], []
        for blk in model.blocks:
            blk.attn.fused_attn = False  # this instance, not timm's global setting

            def hook(module, args, output):
                if retain_grad:
                    output.retain_grad()
                self.probs.append(output)
            self.handles.append(blk.attn.attn_drop.register_forward_hook(hook))

    def remove(self, model):
        for h in self.handles:
            h.remove()
        for blk in model.blocks:
            blk.attn.fused_attn = True


def test_block_forward_equals_timm_block_and_its_probabilities():
    model, x = _model(), _x()
    seq = torch.cat(model.embed(x), dim=1)
    attend = ba.ExplicitAttend(model.blocks[0].attn)
    out = ba.block_forward(model.blocks[0], seq, attend)
    probs = attend.probs
    assert torch.allclose(out, model.blocks[0](seq), atol=1e-5)  # timm, fused SDPA
    timm = _TimmProbs(model)
    model.blocks[0](seq)
    timm.remove(model)
    assert torch.allclose(probs, timm.probs[0], atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3, 17))


def test_rollout_equals_the_hand_computed_product_on_two_blocks():
    model, x = _model(depth=2), _x()
    timm = _TimmProbs(model)
    with torch.no_grad():
        model(x, selector="none")
    timm.remove(model)
    a1, a2 = (p.mean(dim=1) for p in timm.probs)  # (B, 17, 17), head means
    eye = torch.eye(17)
    joint = (0.5 * a2 + 0.5 * eye) @ (0.5 * a1 + 0.5 * eye)  # Abnar & Zuidema with residual
    expected = joint[:, 0, 1:]
    assert torch.allclose(attention_rollout(model, x, start_layer=0), expected, atol=1e-6)
    # the benchmark's start_layer=1: only the last block's factor
    assert torch.allclose(attention_rollout(model, x), (0.5 * a2 + 0.5 * eye)[:, 0, 1:],
                          atol=1e-6)
    # each factor is row-stochastic (A + I rows sum to 2, halved), so the product is too
    assert torch.allclose(joint.sum(-1), torch.ones(2, 17), atol=1e-6)


def test_gradcam_weights_equal_finite_differences():
    model, x = _model(depth=2).double(), _x().double()
    acts, weights = gradcam_parts(model, x)
    target = model(x, selector="none").logits.argmax(-1)
    last = model.blocks[-1]
    with torch.no_grad():  # the input of the last block, through timm's blocks
        seq = model.blocks[0](torch.cat(model.embed(x), dim=1))

    def logit(a):  # the rest of the model from the last block's norm1 output, timm modules
        h = seq + last.ls1(last.attn(a))
        h = h + last.ls2(last.mlp(last.norm2(h)))
        return model.forward_head(model.norm(h)[:, 0]).gather(1, target[:, None])[:, 0]

    assert torch.allclose(acts, last.norm1(seq))
    eps, N = 1e-5, model.num_patches
    with torch.no_grad():
        for d in (0, 7, 23):
            bump = torch.zeros_like(acts)
            bump[:, 1:, d] = eps  # every patch token's channel d
            fd = (logit(acts + bump) - logit(acts - bump)) / (2 * eps) / N
            assert torch.allclose(weights[:, d], fd, rtol=1e-5, atol=1e-9), d
    cam = feature_gradcam(model, x)
    assert torch.allclose(cam, torch.relu((acts[:, 1:] * weights[:, None]).sum(-1)))


def test_chefer_relevance_follows_its_rule_on_timm_gradients():
    model, x = _model(depth=2), _x()
    timm = _TimmProbs(model, retain_grad=True)
    xg = x.clone().requires_grad_(True)  # so that the graph reaches every attention map
    logits = model(xg, selector="none").logits
    logits.gather(1, logits.argmax(-1, keepdim=True)).sum().backward()
    timm.remove(model)
    R = torch.eye(17).expand(2, 17, 17)
    for p in timm.probs:  # R <- R + mean_h (grad * A)^+ R, block by block
        R = R + (p.grad * p).clamp(min=0).mean(dim=1) @ R
    assert torch.allclose(chefer_iccv21(model, x), R[:, 0, 1:], atol=1e-6)


@pytest.mark.parametrize("video", [False, True])
def test_explanations_are_drawn_and_kept_like_token_scorers(video):
    model, x = _model(video=video), _x(video=video)
    from videored.models.explanations import EXPLANATIONS

    for method in EXPLANATIONS:
        s = explanation_scores(model, x, method)
        assert s.shape == (2, model.num_patches) and (s >= 0).all()
        # min-max normalised per sample; a constant map (e.g. GradCAM's ReLU of a negative
        # map: all zero) is 0 everywhere
        constant = s.amax(1) == 0
        assert torch.allclose(s.amax(1)[~constant], torch.ones(int((~constant).sum()))), method
        assert torch.allclose(s.amin(1), torch.zeros(2)), method
        out = explanation_output(model, x, method, torch.tensor([0.25, 0.5]))
        k = out.keep[-1]
        assert k.sum(1).tolist() == [round(0.25 * model.num_patches),
                                     round(0.5 * model.num_patches)]
        for b in range(2):  # the kept patches are the highest-scoring ones
            assert s[b][k[b]].min() >= s[b][~k[b]].max()
        assert torch.allclose(out.logits, model(x, selector="none").logits)
    with pytest.raises(ValueError, match="unknown explanation"):
        explanation_scores(model, x, "memnet")

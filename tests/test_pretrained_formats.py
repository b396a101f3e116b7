"""Public checkpoint files load with their own preprocessing, against independent references.

- mmaction2 TimeSformer: a reference forward written here the way mmcv builds it
  (torch.nn.MultiheadAttention + nn.Sequential FFNs, patch-major tokens), its state dict saved
  in mmengine layout, loaded into videored: same logits.
- timm / DeiT release formats: logits equal to timm's own model on the same weights.
- The normalization travels: an mmaction2 file -> model.pt -> `videored eval` feeds
  (pixels - 127.5) / 127.5 without any flag.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from videored.normalization import model_input
from videored.models import create_model, load_model_file, load_pretrained, save_model_file
from videored.normalization import IMAGENET, Normalization

DIM, HEADS, DEPTH, FRAMES, SIZE, CLASSES = 48, 4, 2, 4, 32, 5
VIDEO = "timesformer_jointst_tiny_patch16_224"
IMAGE = "deit_tiny_patch16_224"
SMALL = dict(img_size=SIZE, depth=DEPTH, embed_dim=DIM, num_heads=HEADS, num_classes=CLASSES)


def _randomize(module: nn.Module, seed: int) -> None:
    """Non-trivial weights everywhere: norms far from identity, embeddings far from zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith(("pos_embed", "time_embed", "cls_token", "dist_token")):
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.08 * noise)


# ---------------------------------------------------------------- mmaction2 reference

class _MMAttention(nn.Module):  # mmcv MultiheadAttention: wraps torch's, batch_first
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True)


class _MMFFN(nn.Module):  # mmcv FFN(num_fcs=2): Sequential(Sequential(fc1, GELU, drop), fc2, drop)
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Dropout(0.0)),
                                    nn.Linear(4 * DIM, DIM), nn.Dropout(0.0))


class _MMLayer(nn.Module):  # BaseTransformerLayer, operation_order (norm, self_attn, norm, ffn)
    def __init__(self) -> None:
        super().__init__()
        self.norms = nn.ModuleList([nn.LayerNorm(DIM, eps=1e-6), nn.LayerNorm(DIM, eps=1e-6)])
        self.attentions = nn.ModuleList([_MMAttention()])
        self.ffns = nn.ModuleList([_MMFFN()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norms[0](x)
        x = x + self.attentions[0].attn(h, h, h, need_weights=False)[0]
        return x + self.ffns[0].layers(self.norms[1](x))


class _MMSequence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_MMLayer() for _ in range(DEPTH)])


class _MMPatchEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, DIM, 16, 16)


class _MMBackbone(nn.Module):  # mmaction2 TimeSformer, attention_type='joint_space_time'
    def __init__(self) -> None:
        super().__init__()
        grid = (SIZE // 16) ** 2
        self.patch_embed = _MMPatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid + 1, DIM))
        self.time_embed = nn.Parameter(torch.zeros(1, FRAMES, DIM))
        self.transformer_layers = _MMSequence()
        self.norm = nn.LayerNorm(DIM, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, C, T, H, W)
        b = x.shape[0]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = self.patch_embed.projection(x).flatten(2).transpose(1, 2)  # (B*T, P, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        cls = x[:b, 0].unsqueeze(1)
        x = rearrange(x[:, 1:], "(b t) p m -> (b p) t m", b=b) + self.time_embed  # patches only
        x = rearrange(x, "(b p) t m -> b (p t) m", b=b)  # patch-major token order
        x = torch.cat([cls, x], dim=1)
        for layer in self.transformer_layers.layers:
            x = layer(x)
        return self.norm(x)[:, 0]


class _MMHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc_cls = nn.Linear(DIM, CLASSES)


class _MMRecognizer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.cls_head = _MMBackbone(), _MMHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head.fc_cls(self.backbone(x))


_MM_CFG = ("model = dict(type='Recognizer3D', data_preprocessor=dict(\n"
           "        type='ActionDataPreprocessor',\n        mean=[{m}, {m}, {m}],\n"
           "        std=[{s}, {s}, {s}],\n        format_shape='NCTHW'))\n")


def _mmaction_file(path: Path, meta_cfg: str | None = None, seed: int = 0) -> _MMRecognizer:
    ref = _MMRecognizer()
    _randomize(ref, seed)
    meta = {"epoch": 15, "mmengine_version": "0.8.4"}
    if meta_cfg is not None:
        meta["cfg"] = meta_cfg
    torch.save({"meta": meta, "state_dict": ref.state_dict()}, path)
    return ref.eval()


def test_mmaction2_jointst_file_gives_the_reference_logits(tmp_path):
    path = tmp_path / "timesformer_jointST_8xb8-8x32x1-15e_kinetics400-rgb_20220815-8022d1c0.pth"
    ref = _mmaction_file(path)
    model = create_model(VIDEO, num_frames=FRAMES, pretrained_path=str(path), **SMALL).eval()
    x = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        expected, got = ref(x), model(x).logits
    assert expected.abs().max() > 0.1  # non-trivial logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert model.normalization.mean == (0.5,) * 3 and model.normalization.std == (0.5,) * 3
    assert "mmaction2" in model.normalization.source


def test_mmaction2_normalization_read_from_the_files_config_text(tmp_path):
    _mmaction_file(tmp_path / "a.pth", _MM_CFG.format(m=114.75, s=57.375))
    model = create_model(VIDEO, num_frames=FRAMES, pretrained_path=str(tmp_path / "a.pth"), **SMALL)
    assert model.normalization.mean == pytest.approx((0.45,) * 3)
    assert model.normalization.std == pytest.approx((0.225,) * 3)
    assert "config text" in model.normalization.source


def test_mmaction2_divided_and_space_only_refused_in_one_clear_line(tmp_path):
    ref = _MMRecognizer()
    sd = ref.state_dict()
    divided = {**sd, "backbone.transformer_layers.layers.0.attentions.1.temporal_fc.weight":
               torch.zeros(DIM, DIM)}
    torch.save({"meta": {}, "state_dict": divided}, tmp_path / "divST.pth")
    space_only = {k: v for k, v in sd.items() if k != "backbone.time_embed"}
    torch.save({"meta": {}, "state_dict": space_only}, tmp_path / "spaceOnly.pth")
    model = create_model(VIDEO, num_frames=FRAMES, **SMALL)
    for name, what in (("divST.pth", "divided space-time"), ("spaceOnly.pth", "space-only")):
        with pytest.raises(ValueError) as err:
            load_pretrained(model, tmp_path / name)
        msg = str(err.value)
        assert "\n" not in msg and name in msg and "mmaction2" in msg and what in msg
        assert "timesformer_jointST" in msg and "jointst_b_8x224_supervised.yaml" in msg
    # a wider model than the file: the refusal names file, format and the mismatching shapes
    wide = create_model(VIDEO, num_frames=FRAMES, **{**SMALL, "embed_dim": 96})
    _mmaction_file(tmp_path / "ok.pth")
    with pytest.raises(ValueError, match=r"ok\.pth \(read as mmaction2 TimeSformer\).*"
                                         r"blocks\.0\.attn\.qkv\.weight: file \(144, 48\) vs model \(288, 96\)"):
        load_pretrained(wide, tmp_path / "ok.pth")


def test_time_embed_nearest_reproduces_the_timesformer_loader(tmp_path):
    src = create_model(VIDEO, num_frames=8, **SMALL)
    _randomize(src, 1)
    sd = {"model." + k.removeprefix("embed."): v for k, v in src.state_dict().items()}
    torch.save({"model_state": sd, "epoch": 15}, tmp_path / "fb.pyth")
    near = create_model(VIDEO, num_frames=4, pretrained_path=str(tmp_path / "fb.pyth"),
                        time_embed_resize="nearest", **SMALL)
    # nearest from 8 to 4 frames picks frames 0, 2, 4, 6
    torch.testing.assert_close(near.embed.time_embed, src.embed.time_embed[:, [0, 2, 4, 6]])
    lin = create_model(VIDEO, num_frames=4, pretrained_path=str(tmp_path / "fb.pyth"), **SMALL)
    t = src.embed.time_embed
    torch.testing.assert_close(lin.embed.time_embed, (t[:, 0::2] + t[:, 1::2]) / 2)  # 8 -> 4 linear
    assert near.normalization.mean == (0.45,) * 3  # TimeSformer's Kinetics configs


# ---------------------------------------------------------------- timm / DeiT formats

def _timm_vit(seed: int = 0, **kw):
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=DIM, depth=DEPTH,
                            num_heads=HEADS, num_classes=CLASSES, **kw)
    _randomize(vit, seed)
    return vit.eval()


def _ours(path: Path, **kw):
    return create_model(IMAGE, groups=1, pretrained_path=str(path), **{**SMALL, **kw}).eval()


def _same_logits(ours, theirs, x=None) -> None:
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)) if x is None else x
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x).logits, expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 0.1


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "weights.pth"])
def test_safetensors_under_any_extension(tmp_path, name):
    from safetensors.torch import save_file

    vit = _timm_vit()
    save_file(vit.state_dict(), str(tmp_path / name))
    ours = _ours(tmp_path / name)
    _same_logits(ours, vit)
    assert ours.normalization.mean == IMAGENET.mean  # no config.json: DeiT's / timm's default
    # timm's hub layout: config.json beside the weights says the file's own preprocessing
    (tmp_path / "config.json").write_text(json.dumps(
        {"architecture": "vit_tiny", "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    again = _ours(tmp_path / name)
    assert again.normalization.mean == (0.5,) * 3 and "config.json" in again.normalization.source


def _write_jax_npz(vit, path: Path) -> None:
    """A Google ViT .npz (JAX/Flax names and layouts) holding `vit`'s weights."""
    sd = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    hd = DIM // HEADS
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
         "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
         "Transformer/encoder_norm/scale": sd["norm.weight"],
         "Transformer/encoder_norm/bias": sd["norm.bias"],
         "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
    for i in range(DEPTH):
        b, p = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        mha = b + "MultiHeadDotProductAttention_1/"
        qkv_w, qkv_b = sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w[f"{mha}{n}/kernel"] = qkv_w[j * DIM:(j + 1) * DIM].T.reshape(DIM, HEADS, hd)
            w[f"{mha}{n}/bias"] = qkv_b[j * DIM:(j + 1) * DIM].reshape(HEADS, hd)
        w[mha + "out/kernel"] = sd[p + "attn.proj.weight"].reshape(DIM, HEADS, hd).transpose(1, 2, 0)
        w[mha + "out/bias"] = sd[p + "attn.proj.bias"]
        for ln, t in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[f"{b}{ln}/scale"], w[f"{b}{ln}/bias"] = sd[p + t + ".weight"], sd[p + t + ".bias"]
        for r in range(2):
            w[f"{b}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{p}mlp.fc{r + 1}.weight"].T
            w[f"{b}MlpBlock_3/Dense_{r}/bias"] = sd[f"{p}mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_google_npz_through_timms_own_loader(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    _write_jax_npz(_timm_vit(seed=3), tmp_path / "ViT-Ti_16.npz")
    reference = VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=DIM, depth=DEPTH,
                                  num_heads=HEADS, num_classes=CLASSES).eval()
    reference.load_pretrained(str(tmp_path / "ViT-Ti_16.npz"))  # timm's own JAX loader
    ours = _ours(tmp_path / "ViT-Ti_16.npz")
    _same_logits(ours, reference)
    assert ours.normalization.mean == (0.5,) * 3 and "npz" in ours.normalization.source


def test_deit_training_checkpoint_with_namespace_args(tmp_path):
    vit = _timm_vit(seed=4)
    args = argparse.Namespace(model="deit_tiny_patch16_224", lr=5e-4, input_size=SIZE)
    torch.save({"model": vit.state_dict(), "optimizer": {"state": {}, "param_groups": []},
                "lr_scheduler": {"base_lrs": [5e-4]}, "epoch": 299, "args": args},
               tmp_path / "checkpoint.pth")
    _same_logits(_ours(tmp_path / "checkpoint.pth"), vit)
    # only argparse.Namespace is let through weights_only loading: any other class is refused
    torch.save({"model": vit.state_dict(), "args": Path("/x")}, tmp_path / "other.pth")
    with pytest.raises(ValueError) as err:
        _ours(tmp_path / "other.pth")
    assert "other.pth" in str(err.value) and "weights_only" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("strip_head_dist", [False, True])
def test_distilled_deit_dropped_with_a_one_line_notice(tmp_path, caplog, strip_head_dist):
    from timm.models.deit import VisionTransformerDistilled

    distilled = VisionTransformerDistilled(img_size=SIZE, patch_size=16, embed_dim=DIM,
                                           depth=DEPTH, num_heads=HEADS, num_classes=CLASSES)
    _randomize(distilled, 6)
    sd = distilled.state_dict()
    if strip_head_dist:  # the "stripped" files that used to die in a raw reshape error
        sd = {k: v for k, v in sd.items() if not k.startswith(("head_dist", "dist_token"))}
    torch.save({"model": sd}, tmp_path / "deit_tiny_distilled.pth")
    with caplog.at_level(logging.WARNING):
        ours = _ours(tmp_path / "deit_tiny_distilled.pth")
    notes = [r.getMessage() for r in caplog.records if "distill" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0]
    # reference: timm's plain ViT holding the cls-token part of the same weights
    plain = _timm_vit()
    kept = {k: v for k, v in distilled.state_dict().items()
            if not k.startswith(("head_dist", "dist_token"))}
    kept["pos_embed"] = torch.cat([kept["pos_embed"][:, :1], kept["pos_embed"][:, 2:]], dim=1)
    plain.load_state_dict(kept)
    _same_logits(ours, plain)


# ---------------------------------------------------------------- normalization travels

def test_mmaction2_model_pt_evaluates_with_127_5_without_any_flag(tmp_path, synth_root):
    """mmaction2 file -> model.pt -> `videored eval`: the clips fed are (pixels - 127.5) / 127.5."""
    from videored.cli import main
    from videored.data import VideoClipDataset
    from videored.engine.builders import build_dataset
    from videored.engine.config import load_config

    root = synth_root
    _mmaction_file(tmp_path / "mm.pth")
    model = create_model(VIDEO, num_frames=FRAMES, pretrained_path=str(tmp_path / "mm.pth"), **SMALL)
    save_model_file(model, tmp_path / "model.pt")
    assert load_model_file(tmp_path / "model.pt").normalization.std == (0.5,) * 3
    cfg = tmp_path / "eval.yaml"  # names no normalization
    cfg.write_text(f"""
model: {{name: {VIDEO}, img_size: {SIZE}, num_frames: {FRAMES}, depth: {DEPTH}, num_classes: {CLASSES},
        kwargs: {{embed_dim: {DIM}, num_heads: {HEADS}}}}}
data: {{root: {root}, batch_size: 2, num_workers: 0, sampling_rate: 7}}
run: {{device: cpu, progress: false}}
""")
    assert main(["eval", "--config", str(cfg), "--checkpoint", str(tmp_path / "model.pt"),
                 "--out", str(tmp_path / "eval"), "--methods", "original",
                 "--speed-runs", "0"]) == 0
    stored = json.loads((tmp_path / "eval" / "results.json").read_text())["config"]
    assert stored["data"]["mean"] == [0.5] * 3 and stored["data"]["std"] == [0.5] * 3
    # The eval pipeline's clips equal (pixels - 127.5) / 127.5 of the same decoded, resized crop
    ran = build_dataset(load_config(None, base=stored), "test")
    plain = VideoClipDataset(root / "test.csv", mode="test", num_frames=FRAMES, sampling_rate=7,
                             crop_size=SIZE, num_spatial_crops=3, mean=(0.0,) * 3, std=(1.0,) * 3)
    for i in (0, 4):
        pixels = plain[i]["video"] * 255.0  # the same crop, 0-255 scale, no normalization
        torch.testing.assert_close(model_input(ran[i]), (pixels - 127.5) / 127.5, atol=1e-5, rtol=0)


def test_shipped_mmaction2_config_eval_and_iared2_recipe_from_the_file(tmp_path, synth_root):
    """configs/k400/jointst_b_8x224_mmaction2_iared2.yaml, shrunk: `videored eval` on the mmaction2
    file itself, then `videored train` (interpreter + finetune) from it, then eval of its model.pt."""
    from videored.cli import main

    mm = tmp_path / "mm.pth"
    _mmaction_file(mm)
    shrink = [f"model.pretrained_path={mm}", f"data.root={synth_root}", f"model.img_size={SIZE}",
              f"model.num_frames={FRAMES}", f"model.depth={DEPTH}", f"model.num_classes={CLASSES}",
              f"model.kwargs={{embed_dim: {DIM}, num_heads: {HEADS}}}", "data.batch_size=2",
              "data.num_workers=0", "data.sampling_rate=7", "data.train_jitter_scales=[32,40]",
              "schedule.max_steps_per_epoch=1", "schedule.interpreter_epochs=1",
              "optim.reference_batch=null", "run.device=cpu", "run.progress=false",
              "run.ckpt_every_steps=0"]
    config = "configs/k400/jointst_b_8x224_mmaction2_iared2.yaml"
    assert main(["eval", "--config", config, "--checkpoint", str(mm), "--methods", "original",
                 "--out", str(tmp_path / "original"), "--speed-runs", "0", *shrink]) == 0
    original = json.loads((tmp_path / "original" / "results.json").read_text())
    assert original["config"]["data"]["mean"] == [0.5] * 3
    assert original["config"]["data"]["sampling"] == "mmaction"

    assert main(["train", "--config", config, "--out", str(tmp_path / "run"), *shrink]) == 0
    trained = load_model_file(tmp_path / "run" / "model.pt")
    assert trained.interpreters is not None and trained.normalization.mean == (0.5,) * 3
    assert "mmaction2" in trained.normalization.source
    assert "mean:\n  - 0.5" in (tmp_path / "run" / "config.yaml").read_text()
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "model.pt"), "--dense-checkpoint",
                 str(mm), "--out", str(tmp_path / "iared2"), "--speed-runs", "0"]) == 0
    both = json.loads((tmp_path / "iared2" / "results.json").read_text())
    assert both["config"]["data"]["mean"] == [0.5] * 3
    assert both["methods"]["original"]["video1_err"] == original["methods"]["original"]["video1_err"]

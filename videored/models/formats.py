"""Read any public checkpoint file into videored key names, with the preprocessing it was trained on.

`read_checkpoint(path)` -> `Checkpoint(state, format, normalization, notes)`. The container is
recognised from the file's bytes, never from its name:

- safetensors (an 8-byte header length, then a JSON header): the safetensors library;
- a zip holding `.npy` members: Google's JAX ViT `.npz`, read by timm's own loader
  (`VisionTransformer.load_pretrained`) into a timm ViT of the file's shape;
- anything else: `torch.load(weights_only=True)`, with `argparse.Namespace` (the `args` of DeiT
  and timm training checkpoints) as the one class allowed beyond tensors and containers.

Then the layout is recognised from the keys:

- mmaction2 TimeSformer (mmengine / mmcv runner file `{"meta", "state_dict"}`, `backbone.*` and
  `cls_head.*`): mmcv's `BaseTransformerLayer` renamed to timm's `Block` (see `_MMACTION_BLOCK`);
  joint space-time only;
- facebookresearch TimeSformer (`{"model_state"}`, `model.` prefix), joint space-time only;
- timm / DeiT ViT state dicts (plain, `{"model"}`, `{"state_dict"}`), distilled DeiT included
  (the distillation token, its position row and `head_dist` are dropped with a notice);
- videored's own training checkpoints and `model.pt` files.

Token order needs no conversion: joint attention treats the patch tokens as a set, so mmaction2's
patch-major order and videored's frame-major order give the same cls output; only the time
embedding's broadcast (to patch tokens, never to cls) matters, and both add it the same way.
"""
from __future__ import annotations

import argparse
import json
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from videored.torch_io import UnreadableFileError, load_torch_file
from videored.normalization import (GOOGLE_VIT, IMAGENET, MMACTION2, TIMESFORMER, Normalization)

_EMBED_KEYS = ("patch_embed.", "pos_embed", "cls_token", "time_embed", "dist_token")
_DIVIDED_HINT = ("use a joint space-time file instead (mmaction2's "
                 "timesformer_jointST_8xb8-8x32x1-15e_kinetics400-rgb), or ImageNet ViT/DeiT "
                 "weights with configs/k400/jointst_b_8x224_supervised.yaml")

# mmcv BaseTransformerLayer (operation_order norm, self_attn, norm, ffn) -> timm Block.
# nn.MultiheadAttention's in_proj rows are [q; k; v], heads contiguous inside each: timm's qkv.
_MMACTION_BLOCK = {
    "norms.0.": "norm1.",
    "attentions.0.attn.in_proj_weight": "attn.qkv.weight",
    "attentions.0.attn.in_proj_bias": "attn.qkv.bias",
    "attentions.0.attn.out_proj.": "attn.proj.",
    "norms.1.": "norm2.",
    "ffns.0.layers.0.0.": "mlp.fc1.",  # Sequential(Linear, GELU, Dropout)
    "ffns.0.layers.1.": "mlp.fc2.",
}
_MMACTION_TOP = {
    "backbone.patch_embed.projection.": "embed.patch_embed.proj.",
    "backbone.cls_token": "embed.cls_token",
    "backbone.pos_embed": "embed.pos_embed",
    "backbone.time_embed": "embed.time_embed",
    "backbone.norm.": "norm.",
    "cls_head.fc_cls.": "head.",
}


@dataclass
class Checkpoint:
    state: dict[str, torch.Tensor]  # videored key names
    format: str  # what the file was recognised as, for messages
    normalization: Normalization | None  # None: the file does not say (videored files only)
    notes: list[str] = field(default_factory=list)  # one line per adaptation made while reading


class CheckpointFormatError(ValueError):
    """A file that cannot be used; the message names the file, its format and the keys."""


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    container = _container(path)
    if container == "safetensors":
        from safetensors.torch import load_file

        return _from_state(path, load_file(str(path)), {}, "safetensors")
    if container == "npz":
        return _read_npz(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: expected a dict of tensors, found "
                                    f"{type(obj).__name__}")
    return _from_state(path, *_unwrap(path, obj), "torch")


def _container(path: Path) -> str:
    """'safetensors', 'npz' or 'torch', from the first bytes (the extension may lie)."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] < size:
        return "safetensors"
    if head[:2] == b"PK" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
    return "torch"


def _torch_load(path: Path) -> Any:
    """The file through videored's one reader; argparse.Namespace (DeiT's `args`) is let through."""
    try:
        return load_torch_file(path, what="weights file", allow=[argparse.Namespace])
    except UnreadableFileError as err:
        raise CheckpointFormatError(f"{err}; re-save its state dict with torch.save(state_dict, file)") from None


def _unwrap(path: Path, obj: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, the top-level dict it came from) of a torch checkpoint."""
    top = obj
    while not _is_state_dict(obj):
        key = next((k for k in ("model", "model_state", "state_dict", "module") if
                    isinstance(obj.get(k), dict)), None)
        if key is None:
            raise CheckpointFormatError(f"{path}: no state dict found; top-level keys are "
                                        f"{sorted(map(str, obj))[:10]}")
        obj = obj[key]
    return obj, top


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _from_state(path: Path, state: dict, top: dict, container: str) -> Checkpoint:
    keys = list(state)
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        return _mmaction(path, state, top)
    if "model_config" in top or "format_version" in top:  # videored model.pt / training ckpt
        return Checkpoint(dict(state), "videored", _videored_normalization(top))
    fb = "model_state" in top
    state = {_strip(k): v for k, v in state.items()}
    divided = sorted(k for k in state if re.match(r"blocks\.\d+\.temporal_", k))
    if divided:
        raise CheckpointFormatError(f"{path}: divided space-time TimeSformer weights "
                                    f"({divided[0]}, ...) do not fit a JointST model; "
                                    + _DIVIDED_HINT)
    if any(k.startswith("embed.") for k in keys):  # a videored state dict saved by hand
        return Checkpoint(state, "videored state dict", None)
    if fb:
        return Checkpoint(state, "facebookresearch TimeSformer", _timesformer_normalization(top))
    if container == "torch" and "embed.time_embed" in state:
        return Checkpoint(state, "TimeSformer state dict", TIMESFORMER)
    notes = _drop_distillation(state)
    name = f"timm/DeiT ViT ({container})" + (", distilled" if notes else "")
    return Checkpoint(state, name, _timm_normalization(path, top), notes)


def _strip(key: str) -> str:
    """Wrapper prefixes (`module.`, `model.`) off; embedding keys under `embed.`."""
    changed = True
    while changed:
        changed = False
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return "embed." + key if key.startswith(_EMBED_KEYS) else key


# ---- mmaction2 ----

def _mmaction(path: Path, state: dict, top: dict) -> Checkpoint:
    fmt = "mmaction2 TimeSformer"
    if not any(k.startswith("backbone.transformer_layers.") for k in state):
        raise CheckpointFormatError(f"{path}: {fmt}-style keys (backbone.*) but no "
                                    "backbone.transformer_layers.*: not a TimeSformer file")
    if any(".attentions.1." in k or "temporal_fc" in k for k in state):
        raise CheckpointFormatError(f"{path}: {fmt} with divided space-time attention "
                                    f"(attentions.1, temporal_fc) does not fit a JointST model; "
                                    + _DIVIDED_HINT)
    if "backbone.time_embed" not in state:
        raise CheckpointFormatError(f"{path}: {fmt} without backbone.time_embed is the space-only "
                                    "variant (attention within each frame), not JointST; "
                                    + _DIVIDED_HINT)
    norm = _mmaction_normalization(state, top)
    out, unknown = {}, []
    for key, value in state.items():
        if key.startswith("data_preprocessor."):
            continue  # its mean/std were read above
        new = _mmaction_key(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointFormatError(f"{path}: {fmt}: keys with no JointST counterpart: "
                                    f"{unknown[:12]}" + (f" and {len(unknown) - 12} more"
                                                         if len(unknown) > 12 else ""))
    return Checkpoint(out, fmt, norm)


def _mmaction_key(key: str) -> str | None:
    for old, new in _MMACTION_TOP.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"backbone\.transformer_layers\.layers\.(\d+)\.(.+)$", key)
    if m is None:
        return None
    for old, new in _MMACTION_BLOCK.items():
        if m.group(2).startswith(old):
            return f"blocks.{m.group(1)}.{new}{m.group(2)[len(old):]}"
    return None


def _mmaction_normalization(state: dict, top: dict) -> Normalization:
    """From the file when it says (preprocessor buffers, or the config text in `meta`), else
    mmaction2's TimeSformer default; all on 0-255 pixels."""
    if "data_preprocessor.mean" in state and "data_preprocessor.std" in state:
        return Normalization.from_255(state["data_preprocessor.mean"].flatten().tolist(),
                                      state["data_preprocessor.std"].flatten().tolist(),
                                      "mmaction2 file: data_preprocessor buffers (0-255)")
    meta = top.get("meta") if isinstance(top.get("meta"), dict) else {}
    text = next((meta[k] for k in ("cfg", "config") if isinstance(meta.get(k), str)), "")
    found = {}
    for name in ("mean", "std"):
        m = re.search(rf"(?:data_preprocessor|img_norm_cfg)\s*=\s*dict\([^)]*?\b{name}\s*=\s*"
                      r"\[([-\d.,\s]+)\]", text, re.S)
        if m:
            found[name] = [float(v) for v in m.group(1).replace("\n", " ").split(",") if v.strip()]
    if len(found) == 2:
        return Normalization.from_255(found["mean"], found["std"],
                                      "mmaction2 file: config text in meta (0-255)")
    return MMACTION2


# ---- TimeSformer / timm / videored normalizations ----

def _timesformer_normalization(top: dict) -> Normalization:
    """pyslowfast checkpoints carry the config dump (`cfg`, YAML): DATA.MEAN / DATA.STD."""
    text = top.get("cfg")
    if isinstance(text, str):
        import yaml

        try:
            data = (yaml.safe_load(text) or {}).get("DATA", {})
            return Normalization(tuple(data["MEAN"]), tuple(data["STD"]),
                                 "TimeSformer file: cfg DATA.MEAN / DATA.STD")
        except Exception:  # no usable config dump: the published configs' values
            pass
    return TIMESFORMER


def _timm_normalization(path: Path, top: dict) -> Normalization:
    """timm hub layout: `config.json` beside the weights holds `pretrained_cfg` mean/std; a timm
    training checkpoint's `args` may hold them; otherwise DeiT's / timm's ImageNet default."""
    config = path.with_name("config.json")
    if config.is_file():
        try:
            cfg = json.loads(config.read_text())
            pre = cfg.get("pretrained_cfg", cfg)
            return Normalization(tuple(pre["mean"]), tuple(pre["std"]),
                                 f"timm {config.name} beside the weights")
        except (ValueError, KeyError, TypeError):
            pass
    args = top.get("args")
    if isinstance(args, argparse.Namespace) and getattr(args, "mean", None) and getattr(args, "std", None):
        return Normalization(tuple(args.mean), tuple(args.std), "training args mean / std")
    return Normalization(IMAGENET.mean, IMAGENET.std,
                         f"{IMAGENET.source}; the file records none (a timm config.json beside "
                         "it would say)")


def _videored_normalization(top: dict) -> Normalization | None:
    if isinstance(top.get("normalization"), dict):
        return Normalization.from_dict(top["normalization"])
    data = (top.get("config") or {}).get("data") or {}
    if data.get("mean") is not None and data.get("std") is not None:
        return Normalization(tuple(data["mean"]), tuple(data["std"]), "stored run config")
    return None  # an older videored file: the caller keeps the model's default


def _drop_distillation(state: dict) -> list[str]:
    """Distilled DeiT: dist token (second prefix token), its position row and head_dist out."""
    pos = state.get("embed.pos_embed")
    two_prefix = pos is not None and _is_square(pos.shape[1] - 2) and not _is_square(pos.shape[1] - 1)
    if "embed.dist_token" not in state and not two_prefix:
        return []
    if two_prefix:
        state["embed.pos_embed"] = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
    dropped = [k for k in list(state) if k == "embed.dist_token" or k.startswith("head_dist.")]
    for k in dropped:
        del state[k]
    return [f"distilled DeiT: dropped the distillation token, its position-embedding row and "
            f"head_dist ({', '.join(dropped) or 'only the position row was present'}); the "
            "logits are the cls head's alone"]


def _is_square(n: int) -> bool:
    return n > 0 and round(n ** 0.5) ** 2 == n


# ---- Google JAX ViT .npz ----

def _read_npz(path: Path) -> Checkpoint:
    """Build a timm ViT of the file's shape, let timm load the .npz, take its state dict."""
    import numpy as np
    from timm.models.vision_transformer import VisionTransformer

    with np.load(path, allow_pickle=False) as w:
        shapes = {k: w[k].shape for k in w.files}
    prefix = next((p for p in ("", "opt/target/", "params/") if f"{p}embedding/kernel" in shapes), None)
    if prefix is None:
        raise CheckpointFormatError(f"{path}: a .npz without embedding/kernel: not a Google ViT "
                                    f"file (first keys {sorted(shapes)[:6]})")
    block = re.compile(rf"{re.escape(prefix)}Transformer/encoderblock_(\d+)/")
    depth = len({m.group(1) for k in shapes if (m := block.match(k))})
    if depth == 0:
        raise CheckpointFormatError(f"{path}: Google ViT .npz without Transformer/encoderblock_N "
                                    "(a stacked big_vision layout): not supported")
    b0 = f"{prefix}Transformer/encoderblock_0/"
    patch, _, chans, dim = shapes[f"{prefix}embedding/kernel"]
    heads = shapes[f"{b0}MultiHeadDotProductAttention_1/query/kernel"][1]
    hidden = shapes[f"{b0}MlpBlock_3/Dense_0/kernel"][1]
    tokens = shapes[f"{prefix}Transformer/posembed_input/pos_embedding"][1] - 1
    grid = round(tokens ** 0.5)
    classes = shapes[f"{prefix}head/bias"][0] if f"{prefix}head/bias" in shapes else 0
    vit = VisionTransformer(img_size=grid * patch, patch_size=patch, in_chans=chans,
                            embed_dim=dim, depth=depth, num_heads=heads,
                            mlp_ratio=hidden / dim, num_classes=classes)
    vit.load_pretrained(str(path))  # timm's own JAX loader
    state = {_strip(k): v for k, v in vit.state_dict().items()}
    if classes == 0:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return Checkpoint(state, "Google ViT .npz (timm loader)", GOOGLE_VIT)

"""Load local checkpoints into a TokenReductionViT (never downloads).

Accepted formats, detected from the file itself:
- ImageNet DeiT / ViT (timm names), as `{"model": sd}` or a plain state dict: into DeiT, or into
  TimeSformer (spatial pos-embed copied or interpolated, temporal embedding zero);
- the public facebookresearch TimeSformer checkpoints (`{"model_state": sd}` with a `model.`
  prefix; only the joint space-time variant fits this architecture);
- videored's own training checkpoints and `model.pt` files (`{"model": sd, ...}`).
A classification head whose class count differs is dropped (left freshly initialized). Anything
else that does not fit raises a ValueError naming the keys and shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

_WRAPPERS = ("model", "model_state", "state_dict", "module")
_PREFIXES = ("module.", "model.")
_EMBED_KEYS = ("patch_embed.", "pos_embed", "cls_token", "time_embed")
# Present in a fresh model but legitimately absent from ImageNet / TimeSformer checkpoints.
_MAY_BE_MISSING = ("interpreters.", "embed.time_embed", "head.")


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # in the file, not loaded (e.g. head)
    initialized: list[str] = field(default_factory=list)  # in the model, not in the file

    def __str__(self) -> str:
        return (f"loaded {len(self.loaded)} tensors; resized {self.resized or 'none'}; "
                f"dropped {self.dropped or 'none'}; kept fresh {self.initialized or 'none'}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint file, with wrapper prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(obj, dict) and not _is_state_dict(obj):
        key = next((k for k in _WRAPPERS if k in obj), None)
        if key is None:
            raise ValueError(f"{path}: no state dict found; top-level keys are {sorted(obj)[:10]}")
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {_strip(k): v for k, v in obj.items()}


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    if key.startswith(_EMBED_KEYS):
        key = "embed." + key
    return key


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load `path` into `model` (a TokenReductionViT), adapting embeddings and head; see module doc."""
    state = read_state_dict(path)
    own = model.state_dict()
    report = LoadReport()
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        hint = (" (divided space-time TimeSformer weights do not fit a JointST model)"
                if any("temporal_" in k for k in unexpected) else "")
        raise ValueError(f"{path}: keys the model does not have{hint}: {unexpected[:12]}"
                         + (f" and {len(unexpected) - 12} more" if len(unexpected) > 12 else ""))
    adapted: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, value in state.items():
        target = own[key].shape
        if value.shape == target:
            adapted[key] = value
        elif key == "embed.pos_embed" and value.shape[-1] == target[-1]:
            adapted[key] = _resize_pos_embed(value, model.grid[1:])
            report.resized.append(key)
        elif key == "embed.time_embed" and value.shape[-1] == target[-1]:
            adapted[key] = F.interpolate(value.transpose(1, 2), size=target[1], mode="linear",
                                         align_corners=False).transpose(1, 2)
            report.resized.append(key)
        elif key.startswith("head."):
            report.dropped.append(key)  # different class count: keep the fresh head
        else:
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target)}")
    if mismatched:
        raise ValueError(f"{path} does not fit this architecture; mismatched shapes: "
                         + "; ".join(mismatched[:12]))
    # A fresh head is fine (different class count, or a headless file); so are new interpreters.
    missing = [k for k in own if k not in adapted and not k.startswith(_MAY_BE_MISSING)]
    if missing:
        raise ValueError(f"{path} lacks weights this model needs: {missing[:12]}")
    if "embed.time_embed" in own and "embed.time_embed" not in state:
        adapted["embed.time_embed"] = torch.zeros_like(own["embed.time_embed"])  # image -> video
    model.load_state_dict(adapted, strict=False)
    report.loaded = sorted(adapted)
    report.initialized = sorted(k for k in own if k not in adapted)
    return report


def _resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + S', D) -> (1, 1 + gh*gw, D): cls position kept, spatial grid interpolated."""
    if pos.shape[1] - 1 <= 0:
        raise ValueError(f"pos_embed of shape {tuple(pos.shape)} has no spatial positions")
    return resample_abs_pos_embed(pos, new_size=list(grid), num_prefix_tokens=1)

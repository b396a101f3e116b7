"""Load local checkpoints into a TokenReductionViT (never downloads).

`formats.read_checkpoint` recognises the file (mmaction2 / facebookresearch TimeSformer, timm and
DeiT files in every release format, videored's own) and gives its state dict in videored names
plus the input normalization it was trained with; `load_pretrained` adapts it to the model:

- spatial position embedding: copied, or resampled bicubically (timm's
  `resample_abs_pos_embed`, cls position kept) when the patch grid differs;
- time embedding: copied, or resized to the model's frame count, by linear interpolation
  (default) or by nearest neighbour (`time_embed_resize="nearest"`, what TimeSformer's own loader
  does, to reproduce an FB-finetuned number); zero for an image checkpoint loaded into video;
- classification head: dropped (left freshly initialized) when the class count differs.
The file's normalization is recorded on the model (`model.normalization`), so it travels into
`model.pt` and the run config. Anything else that does not fit raises a ValueError naming the
file, the format it was read as, and the keys and shapes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from .formats import CheckpointFormatError, read_checkpoint

log = logging.getLogger(__name__)

# Present in a fresh model but legitimately absent from ImageNet / TimeSformer checkpoints.
_MAY_BE_MISSING = ("interpreters.", "pruners.", "length_embed.", "embed.time_embed", "head.")
TIME_EMBED_RESIZE = ("linear", "nearest")


@dataclass
class LoadReport:
    format: str = ""  # what the file was recognised as
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # in the file, not loaded (e.g. head)
    initialized: list[str] = field(default_factory=list)  # in the model, not in the file
    notes: list[str] = field(default_factory=list)  # adaptations made while reading the file

    def __str__(self) -> str:
        return (f"{self.format}: loaded {len(self.loaded)} tensors; resized "
                f"{self.resized or 'none'}; dropped {self.dropped or 'none'}; kept fresh "
                f"{self.initialized or 'none'}" + "".join(f"; {n}" for n in self.notes))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint file, in videored key names."""
    return read_checkpoint(path).state


def load_pretrained(model: nn.Module, path: str | Path, *,
                    time_embed_resize: str = "linear") -> LoadReport:
    """Load `path` into `model` (a TokenReductionViT), adapting embeddings and head; see module doc."""
    if time_embed_resize not in TIME_EMBED_RESIZE:
        raise ValueError(f"time_embed_resize={time_embed_resize!r}: use one of {TIME_EMBED_RESIZE}")
    ckpt = read_checkpoint(path)
    state, where = ckpt.state, f"{path} (read as {ckpt.format})"
    own = model.state_dict()
    report = LoadReport(format=ckpt.format, notes=list(ckpt.notes))
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        raise CheckpointFormatError(
            f"{where}: keys the model does not have: {unexpected[:12]}"
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
            adapted[key] = _resize_time_embed(value, target[1], time_embed_resize)
            report.resized.append(key)
        elif key.startswith("head."):
            report.dropped.append(key)  # different class count: keep the fresh head
        else:
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target)}")
    if mismatched:
        raise CheckpointFormatError(f"{where} does not fit this architecture; mismatched shapes: "
                         + "; ".join(mismatched[:12]))
    # A fresh head is fine (different class count, or a headless file); so are new interpreters
    # and pruners (SPViT / SViT selectors trained from a dense model) and RLT's length embedding.
    missing = [k for k in own if k not in adapted and not k.startswith(_MAY_BE_MISSING)]
    if missing:
        raise CheckpointFormatError(f"{where} lacks weights this model needs: {missing[:12]}")
    if "embed.time_embed" in own and "embed.time_embed" not in state:
        adapted["embed.time_embed"] = torch.zeros_like(own["embed.time_embed"])  # image -> video
    model.load_state_dict(adapted, strict=False)
    report.loaded = sorted(adapted)
    report.initialized = sorted(k for k in own if k not in adapted)
    if ckpt.normalization is not None:  # preprocessing belongs to the weights
        model.normalization = ckpt.normalization
    for note in report.notes:
        log.warning("%s: %s", path, note)
    return report


def _resize_time_embed(time: torch.Tensor, frames: int, mode: str) -> torch.Tensor:
    """(1, T', D) -> (1, frames, D) along time: linear (align_corners=False) or nearest (the
    TimeSformer loader's `F.interpolate(..., mode="nearest")`)."""
    kwargs = {"align_corners": False} if mode == "linear" else {}
    return F.interpolate(time.transpose(1, 2), size=frames, mode=mode, **kwargs).transpose(1, 2)


def _resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + S', D) -> (1, 1 + gh*gw, D): cls position kept, spatial grid interpolated."""
    if pos.shape[1] - 1 <= 0:
        raise ValueError(f"pos_embed of shape {tuple(pos.shape)} has no spatial positions")
    return resample_abs_pos_embed(pos, new_size=list(grid), num_prefix_tokens=1)

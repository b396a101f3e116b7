"""Input normalization: THE one definition every reader and command uses.

Preprocessing belongs to the weights. A checkpoint was trained on pixels normalized one way, and
evaluating it with another is a silent several-point error, so the normalization is recorded when
weights are loaded (`videored.models.load_pretrained` sets `model.normalization`), stored in
`model.pt` and in the run config (`data.mean` / `data.std`), and read back by training,
`videored eval`, `videored visualize` and the benchmarks through `resolve_normalization`.

Where it runs: the video loaders' workers return uint8 clips with their normalization beside
them (`VideoClipDataset(output="uint8")`: a quarter of the bytes through the worker queues, no
float work in the workers); `model_input` normalizes them on the device in the training and
evaluation steps. `normalize_uint8` is the one formula, used there and by float-output datasets.

Units: mean and std apply to RGB pixels scaled to [0, 1] (`(x / 255 - mean) / std`), the units
of timm's `pretrained_cfg` and of TimeSformer's configs. mmaction2's `mean = std = 127.5` on
0-255 pixels is the same map as mean = std = 0.5 here: (x - 127.5) / 127.5 = (x/255 - 0.5) / 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]  # per channel, on [0, 1] pixels
    std: tuple[float, ...]
    source: str  # where it came from (checkpoint format, config file, default), for the record

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"normalization mean {self.mean} and std {self.std} must have one "
                             "value per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"normalization std {self.std} must be positive")

    def same_map(self, other: "Normalization", tol: float = 1e-6) -> bool:
        """Same mean and std (the source may differ)."""
        return (len(self.mean) == len(other.mean)
                and all(abs(a - b) <= tol for a, b in zip(self.mean + self.std, other.mean + other.std)))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Normalization":
        return cls(tuple(data["mean"]), tuple(data["std"]), str(data.get("source", "stored")))

    @classmethod
    def from_255(cls, mean: Sequence[float], std: Sequence[float], source: str) -> "Normalization":
        """From values on 0-255 pixels (mmaction2's / mmengine's data preprocessors)."""
        return cls(tuple(m / 255.0 for m in mean), tuple(s / 255.0 for s in std), source)

    def __str__(self) -> str:
        fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
        return f"mean {fmt(self.mean)} std {fmt(self.std)} on [0, 1] pixels ({self.source})"


# TimeSformer's Kinetics configs (DATA.MEAN / DATA.STD): facebookresearch TimeSformer checkpoints.
TIMESFORMER = Normalization((0.45,) * 3, (0.225,) * 3, "TimeSformer Kinetics configs")
# mmaction2's TimeSformer configs: ActionDataPreprocessor(mean=[127.5] * 3, std=[127.5] * 3).
MMACTION2 = Normalization.from_255((127.5,) * 3, (127.5,) * 3,
                                   "mmaction2 TimeSformer configs: mean = std = 127.5 on 0-255")
# DeiT and timm's ImageNet default.
IMAGENET = Normalization(tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD),
                         "ImageNet default (DeiT, timm)")
# Google's JAX ViT (.npz) preprocessing: inputs scaled to [-1, 1].
GOOGLE_VIT = Normalization((0.5,) * 3, (0.5,) * 3, "Google ViT .npz: inputs in [-1, 1]")


def default_normalization(video: bool) -> Normalization:
    """A model built here without pretrained weights: TimeSformer's for video, ImageNet's for
    images (what videored used before normalization was recorded with the weights)."""
    base = TIMESFORMER if video else IMAGENET
    return Normalization(base.mean, base.std, f"videored default for new weights ({base.source})")


def resolve_normalization(cfg: Any, *models: Any) -> Normalization | None:
    """The normalization a run feeds its models; writes it into `cfg.data.mean` / `cfg.data.std`
    (so the saved run config records it) and onto each model (so `model.pt` records it).

    Rule: `data.mean` / `data.std` from the config (an explicit override) win; otherwise the
    models' own (recorded when their weights were loaded). Models that disagree are an error
    (one dataset feeds them all). `data.kind: tensor_file` holds ready tensors: None.
    """
    if cfg.data.kind == "tensor_file":
        return None
    own = [m.normalization for m in models if getattr(m, "normalization", None) is not None]
    for other in own[1:]:
        if not other.same_map(own[0]):
            raise ValueError(f"the models were trained with different input normalizations: "
                             f"{own[0]} vs {other}; evaluate them separately")
    given = (cfg.data.mean, cfg.data.std)
    if (given[0] is None) != (given[1] is None):
        raise ValueError("set both data.mean and data.std, or neither (null: the weights' own)")
    if given[0] is not None:
        chosen = Normalization(tuple(given[0]), tuple(given[1]), "config data.mean / data.std")
        if own and own[0].same_map(chosen):
            chosen = own[0]  # the same numbers: keep the more informative source
        elif own:
            print(f"[normalization] config data.mean / data.std {chosen.mean} / {chosen.std} "
                  f"replace the weights' own {own[0]}", flush=True)
    elif own:
        chosen = own[0]
    else:
        raise ValueError("input normalization unknown: the model records none; set data.mean "
                         "and data.std (values on [0, 1] pixels)")
    cfg.data.mean, cfg.data.std = list(chosen.mean), list(chosen.std)
    for m in models:
        m.normalization = chosen
    return chosen


def config_normalization(cfg: Any) -> Normalization:
    """The resolved normalization of a config (after `resolve_normalization`); an unresolved
    config is an error, so no reader can fall back to a guess."""
    if cfg.data.mean is None or cfg.data.std is None:
        raise ValueError("data.mean / data.std are not resolved: call "
                         "videored.normalization.resolve_normalization(cfg, model) after loading "
                         "the model (or set them in the config)")
    return Normalization(tuple(cfg.data.mean), tuple(cfg.data.std), "config")


def model_normalization(model: Any) -> Normalization:
    """The normalization a model's weights expect (set by create_model / load_pretrained /
    load_model_file); a model without one is an error, never a guess."""
    norm = getattr(model, "normalization", None)
    if norm is None:
        raise ValueError(f"{type(model).__name__} records no input normalization: build it with "
                         "videored.models.create_model / load_model_file")
    return norm


def normalize_uint8(video: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """uint8 pixels -> float32 `(video / 255 - mean) / std` per channel, contiguous.

    video: (..., C, T, H, W) uint8 (one clip, a batch, or a batch of K clips per item).
    mean, std: (C,) for all, or (B, C) per item of a batched video (B = video.shape[0]).
    The per-channel factors are formed in float64 and rounded once, so a clip gives the same
    bits on every device and whether it was normalized in a worker or in the step."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64)
    lead = video.dim() - 4  # dims before C
    shape = mean.shape[:-1] + (1,) * (lead - (mean.dim() - 1)) + (mean.shape[-1], 1, 1, 1)
    scale = (1.0 / (255.0 * std)).float().reshape(shape).to(video.device)
    shift = (mean / std).float().reshape(shape).to(video.device)
    return (video.float() * scale - shift).contiguous()


def model_input(batch: dict, device: torch.device | str | None = None) -> torch.Tensor:
    """The model input of a dataset item or collated batch, on `device` (None: where it is).

    `video` (or `image`) as it is when float; uint8 (the video loaders' output) is moved to the
    device first and normalized there with the batch's own `normalization`: (2, C) for one item,
    (B, 2, C) for a batch, rows [mean; std]. This is THE place the training, validation and
    evaluation steps normalize video."""
    x = batch["video"] if "video" in batch else batch["image"]
    if device is not None:
        x = x.to(device, non_blocking=True)
    if x.dtype != torch.uint8:
        return x
    norm = batch.get("normalization")
    if norm is None:
        raise ValueError("a uint8 video without its 'normalization' ([mean; std]): build the "
                         "dataset with output='uint8' (it adds it) or output='float'")
    return normalize_uint8(x, norm[..., 0, :], norm[..., 1, :])

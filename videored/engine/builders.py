"""Model, dataset, optimizer and lr-schedule builders from the typed config.

Shared by training and evaluation so both build exactly the same model and data pipeline.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from videored.data.tensor_file import TensorFileDataset
from videored.normalization import config_normalization, model_input

VIDEO_MODEL_PREFIX = "timesformer"


def is_video_model(name: str) -> bool:
    return name.startswith(VIDEO_MODEL_PREFIX)


def build_model(cfg: DictConfig, selector: str = "interpreter") -> nn.Module:
    """The token-reduction ViT of `cfg.model` (interpreters included by default)."""
    from videored.models import create_model  # engine -> models, never the other way

    m = cfg.model
    kwargs: dict[str, Any] = dict(num_classes=m.num_classes, img_size=m.img_size, groups=m.groups,
                                  threshold=m.threshold, selector=selector, seed=cfg.run.seed)
    if is_video_model(m.name):
        kwargs["num_frames"] = m.num_frames
    if m.depth is not None:
        kwargs["depth"] = m.depth
    extra = OmegaConf.to_container(m.kwargs, resolve=True)
    check_model_kwargs(m.name, extra)
    kwargs.update(extra)
    model = create_model(m.name, pretrained_path=m.pretrained_path,
                         time_embed_resize=m.time_embed_resize, **kwargs)
    # a training-time switch, not part of the architecture: set after construction so that it
    # does not travel into saved model files (model_config)
    model.set_grad_checkpointing(m.grad_checkpointing)
    return model


def check_model_kwargs(name: str, extra: dict[str, Any]) -> None:
    """A ConfigError naming each `model.kwargs` key the model's constructor does not take."""
    import inspect

    from videored.models import TokenReductionViT

    from .config import ConfigError

    params = inspect.signature(TokenReductionViT.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(k for k, p in params.items() if k != "self" and p.kind is p.KEYWORD_ONLY)
    unknown = sorted(k for k in extra if k not in accepted)
    if unknown:
        raise ConfigError(f"key 'model.kwargs': {name} takes no argument {', '.join(map(repr, unknown))}; "
                          f"it takes {', '.join(accepted)}")


def build_dataset(cfg: DictConfig, split: str, **overrides: Any) -> Dataset:
    """The dataset of `cfg.data` for split "train" | "val" | "test".

    video: `VideoClipDataset` on `<root>/<split>.csv` (mode = split); items are dicts with
    "video" (C, T, H, W) uint8 and its "normalization" (applied on the device by
    `unpack_batch`), and "label"; `overrides` replace its constructor arguments (e.g.
    return_masks=True, num_spatial_crops=1). image: `<root>/<split>/<class>/*` with DeiT's
    transforms. tensor_file: `TensorFileDataset`.
    """
    d = cfg.data
    if d.kind != "tensor_file":  # resolved from the model's weights first (or set in the config)
        norm = config_normalization(cfg)
    if d.kind != "video" and overrides:
        raise ValueError(f"data.kind={d.kind}: dataset overrides {sorted(overrides)} apply to video only")
    if d.kind == "tensor_file":
        return TensorFileDataset(d.root, split)
    if d.kind == "image":
        return _build_image_dataset(cfg, split)
    from videored.data import VideoClipDataset

    csv = Path(d.root) / f"{split}.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"data.root={d.root}: no {split}.csv list there")
    kwargs: dict[str, Any] = dict(
        mode=split, num_frames=cfg.model.num_frames, sampling_rate=d.sampling_rate,
        target_fps=d.target_fps, crop_size=cfg.model.img_size,
        train_jitter_scales=tuple(d.train_jitter_scales), num_spatial_crops=d.num_spatial_crops,
        num_temporal_views=d.num_temporal_views, backend=d.decoder, sampling=d.sampling,
        mean=norm.mean, std=norm.std, output="uint8",
        num_classes=cfg.model.num_classes)  # a label outside the head is a malformed line
    if split == "train":
        kwargs["clips_per_video"] = d.clips_per_video
    return VideoClipDataset(str(csv), **{**kwargs, **overrides})


def _build_image_dataset(cfg: DictConfig, split: str) -> Dataset:
    from videored.data import build_imagenet_dataset

    norm = config_normalization(cfg)
    return build_imagenet_dataset(cfg.data.root, split=split, input_size=cfg.model.img_size,
                                  mean=norm.mean, std=norm.std)


def unpack_batch(batch: Any, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) from a dict batch ({"video"|"image", "label"}) or an (x, y) pair, on
    `device` (None: where they are).

    uint8 video (the video loaders' output) is normalized on the device here
    (`videored.normalization.model_input`). A video batch of B items with K clips each
    (`data.clips_per_video`: video (B, K, C, T, H, W)) becomes B*K clips (B*K, C, T, H, W), the
    clips of one video next to each other, and each label is repeated K times."""
    if isinstance(batch, dict):
        x, y = model_input(batch, device), batch["label"]
        if "video" in batch and x.dim() == 6:
            x, y = x.flatten(0, 1), y.repeat_interleave(x.shape[1])
    else:
        x, y = batch[0], batch[1]
    if device is not None:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x, y


def loader_workers(cfg: DictConfig, num_workers: int | None = None) -> dict[str, Any]:
    """DataLoader keyword arguments for the workers of every loader of a run (train, validation,
    evaluation): `num_workers` (default data.num_workers) and, with workers, their start method
    (data.multiprocessing_context) and data.loader_timeout, so a hung decoder raises instead of
    stalling the job (in the main process nothing can interrupt it)."""
    n = cfg.data.num_workers if num_workers is None else num_workers
    if not n:
        return {"num_workers": 0}
    return {"num_workers": n, "timeout": cfg.data.loader_timeout,
            "multiprocessing_context": cfg.data.multiprocessing_context}


def batches_or_hang_error(loader: Iterable, batch_items: Callable[[int], list[int]], dataset: Any,
                          start: int, timeout: float) -> Iterator[Any]:
    """The batches of `loader`; when a worker sends nothing for `timeout` seconds
    (data.loader_timeout, see `loader_workers`: a hung decoder) a RuntimeError naming the videos
    of the batch it was loading. batch_items(k): the dataset indices of the k-th batch the loader
    yields; start: the epoch step of the first batch (for the message)."""
    received = 0
    try:
        for batch in loader:
            yield batch
            received += 1
    except RuntimeError as err:
        if "DataLoader timed out" not in str(err):
            raise
        paths = getattr(dataset, "paths", None)
        names = [paths[i] if paths is not None else f"item {i}" for i in batch_items(received)]
        raise RuntimeError(
            f"no training batch for step {start + received} of the epoch after {timeout:g} s "
            f"(data.loader_timeout): a DataLoader worker stopped answering while loading one of "
            f"{', '.join(names)}. A decoder hang (decord can); check the file with `videored data "
            "scan`, remove it from the list, or use data.decoder=pyav") from err


def num_items(batch: Any) -> int:
    """Dataset items in a batch (videos, not their clips)."""
    return len(batch["label"] if isinstance(batch, dict) else batch[1])


def param_groups(model: nn.Module, params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases, norms, tokens and embeddings are not decayed (timm)."""
    wanted = {id(p) for p in params}
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if id(p) not in wanted:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, params: Iterable[nn.Parameter], cfg: DictConfig, lr: float,
                    kind: str = "", lr_scales: dict[int, float] | None = None
                    ) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW of `cfg.optim` over `params` (the stage's trainable parameters);
    interpreter stages use `optim.interpreter_optimizer` when it is set.

    lr_scales {id(parameter): multiple} (`stages.lr_scales`: a learned pruner's selectors):
    those parameters get their own param groups at lr · multiple, after the stage-lr groups
    (group 0 stays at the stage lr, which `build_scheduler` reads as the peak; the schedule
    multiplies every group by the same factor)."""
    o = cfg.optim
    params = list(params)
    scales = {id(p): lr_scales[id(p)] for p in params if lr_scales and id(p) in lr_scales}
    groups = param_groups(model, [p for p in params if id(p) not in scales], o.weight_decay)
    for scale in sorted(set(scales.values())):
        mine = [p for p in params if scales.get(id(p)) == scale]
        groups += [{**g, "lr": lr * scale} for g in param_groups(model, mine, o.weight_decay)]
    name = o.interpreter_optimizer if kind == "interpreter" and o.interpreter_optimizer else o.name
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=tuple(o.betas))


def stage_lr(cfg: DictConfig, kind: str, global_batch: int) -> float:
    """Peak lr of a stage: `optim.lr` (or `optim.interpreter_lr`), linearly scaled by
    global_batch / optim.reference_batch when a reference batch is configured."""
    o = cfg.optim
    lr = o.interpreter_lr if kind == "interpreter" and o.interpreter_lr is not None else o.lr
    if o.reference_batch:
        lr = lr * global_batch / o.reference_batch
    return lr


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warm-up then cosine decay from the peak lr to `optim.min_lr` (SGDR, [35])."""
    peak = optimizer.param_groups[0]["lr"]
    floor = cfg.optim.min_lr / peak if peak > 0 else 0.0
    warmup = int(round(cfg.optim.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

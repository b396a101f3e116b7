"""Model names: `create_model(name, **kwargs)` and the same architectures in timm's registry.

Architectures are data (`ARCHITECTURES`); every constructor argument can be overridden by kwargs,
as in timm. The TimeSformer names are registered in timm under the same names. Our DeiT names
are registered in timm with a `videored_` prefix: overwriting timm's own `deit_*` entries would
silently change `timm.create_model` for every other user in the process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import logging

from timm.models import register_model

from videored.atomic_io import WriteHook, atomic_save
from videored.normalization import Normalization, default_normalization
from videored.torch_io import load_torch_file

from .pretrained import load_pretrained
from .vit import TokenReductionViT

log = logging.getLogger(__name__)

_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}

# name -> constructor defaults. Video: 8 frames of 224² -> 8·196 = 1568 patch tokens, one input-
# level selection (D = 1, paper Sec. 4). Images: D = 3 groups of 4 blocks (paper Sec. 4).
ARCHITECTURES: dict[str, dict[str, Any]] = {}
for _size, _dims in _SIZES.items():
    ARCHITECTURES[f"timesformer_jointst_{_size}_patch16_224"] = dict(
        img_size=224, patch_size=16, num_frames=8, num_classes=400, groups=1, **_dims)
    ARCHITECTURES[f"deit_{_size}_patch16_224"] = dict(
        img_size=224, patch_size=16, num_frames=None, num_classes=1000, groups=3, **_dims)


def list_models() -> list[str]:
    return sorted(ARCHITECTURES)


def create_model(name: str, *, pretrained_path: str | None = None,
                 time_embed_resize: str = "linear", **kwargs: Any) -> TokenReductionViT:
    """Build a registered model; kwargs override any constructor argument.

    pretrained_path: a local checkpoint (mmaction2 / facebookresearch TimeSformer, timm / DeiT
    in any release format, or a videored file) loaded with `load_pretrained` (nothing is ever
    downloaded); its input normalization becomes `model.normalization`.
    time_embed_resize: "linear" or "nearest" (TimeSformer's loader) when the file's frame count
    differs from the model's.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = TokenReductionViT(**{**ARCHITECTURES[name], **kwargs})
    model.model_config = {"name": name, **kwargs}  # enough to rebuild it: see save_model_file
    model.normalization = default_normalization(video=model.embed.num_frames is not None)
    if pretrained_path:
        report = load_pretrained(model, pretrained_path, time_embed_resize=time_embed_resize)
        log.info("%s: %s; input normalization %s", pretrained_path, report, model.normalization)
    return model


def _timm_entrypoint(name: str, timm_name: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> TokenReductionViT:
        if pretrained:
            raise ValueError(f"{timm_name}: no weights are downloaded; pass "
                             "pretrained_path='/local/file.pth' instead")
        for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(timm_only, None)
        return create_model(name, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = timm_name
    entrypoint.__module__ = __name__
    return entrypoint


for _name in ARCHITECTURES:
    _timm_name = _name if _name.startswith("timesformer") else f"videored_{_name}"
    globals()[_timm_name] = register_model(_timm_entrypoint(_name, _timm_name))


def save_model_file(model: TokenReductionViT, path: str | Path, write_hook: Optional[WriteHook] = None,
                    **extra: Any) -> None:
    """Write weights + how to rebuild them + their input normalization (`model.pt`), atomically
    (temp file + rename, signals held until the rename); write_hook: see
    `videored.atomic_io.atomic_save`."""
    atomic_save({"model": model.state_dict(), "model_config": model.model_config,
                 "normalization": model.normalization.to_dict(), **extra}, path, hook=write_hook)


def load_model_file(path: str | Path, **overrides: Any) -> TokenReductionViT:
    """Rebuild a model saved by `save_model_file` (overrides e.g. selector=..., threshold=...)."""
    obj = load_torch_file(path, what="model file")
    if not isinstance(obj, dict) or "model_config" not in obj:
        raise ValueError(f"{path} has no 'model_config': it is not a videored model file "
                         "(use create_model(..., pretrained_path=...) for foreign checkpoints)")
    config = dict(obj["model_config"])
    name = config.pop("name")
    model = create_model(name, **{**config, **overrides})
    state = obj["model"]
    if model.interpreters is None:  # a baseline-only model: interpreter weights are not needed
        state = {k: v for k, v in state.items() if not k.startswith("interpreters.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {name} with {overrides}: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    if "normalization" in obj:  # older files hold none: the default they were trained with
        model.normalization = Normalization.from_dict(obj["normalization"])
    return model

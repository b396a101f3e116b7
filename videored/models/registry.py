"""Model names: `create_model(name, **kwargs)` and the same architectures in timm's registry.

Architectures are data (`ARCHITECTURES`); every constructor argument can be overridden by kwargs,
as in timm. The TimeSformer names are registered in timm under the same names. Our DeiT names
are registered in timm with a `videored_` prefix: overwriting timm's own `deit_*` entries would
silently change `timm.create_model` for every other user in the process.
"""
from __future__ import annotations

from typing import Any

from timm.models import register_model

from .pretrained import load_pretrained
from .vit import TokenReductionViT

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


def create_model(name: str, *, pretrained_path: str | None = None, **kwargs: Any) -> TokenReductionViT:
    """Build a registered model; kwargs override any constructor argument.

    pretrained_path: a local checkpoint (DeiT/ViT ImageNet, TimeSformer, or a videored training
    checkpoint) loaded with `load_pretrained` (nothing is ever downloaded).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = TokenReductionViT(**{**ARCHITECTURES[name], **kwargs})
    if pretrained_path:
        load_pretrained(model, pretrained_path)
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

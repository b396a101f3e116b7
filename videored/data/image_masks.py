"""Images with object masks for the interpretability metric (ImageNet-Segmentation style).

Layout: `root/images/<name>.<jpg|jpeg|png|...>` and `root/masks/<name>.png` (any non-zero pixel is
object). The image goes through DeiT's evaluation transform; the mask through the same geometry
(short side -> int(size / 0.875), centre crop) with nearest-neighbour resizing.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from videored.normalization import IMAGENET, Normalization

log = logging.getLogger(__name__)

# image files the readers of single images take (`videored visualize`, this folder)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class ImageMaskFolder(Dataset):
    """Items: {"image" (3, S, S) float, "mask" (S, S) bool, "failed" bool, "path" str}.

    `normalization`: the model's own (`videored.normalization.model_normalization(model)`).
    Images without a mask file are listed in `missing_masks` and left out; an unreadable image or
    mask gives `failed=True` (all-zero tensors), is logged once and counted by the metric.
    """

    def __init__(self, root: str | Path, img_size: int = 224, eval_crop_ratio: float = 0.875,
                 normalization: Normalization = IMAGENET):
        from torchvision import transforms

        from videored.data import build_imagenet_transform

        root = Path(root)
        image_dir, mask_dir = root / "images", root / "masks"
        if not image_dir.is_dir() or not mask_dir.is_dir():
            raise FileNotFoundError(f"{root}: expected folders images/ and masks/")
        self.img_size = img_size
        self.transform = build_imagenet_transform(False, img_size, eval_crop_ratio,
                                                  normalization.mean, normalization.std)
        self.mask_transform = transforms.Compose([
            transforms.Resize(int(img_size / eval_crop_ratio),
                              interpolation=transforms.InterpolationMode.NEAREST),
            transforms.CenterCrop(img_size)])
        self.samples: list[tuple[Path, Path]] = []
        self.missing_masks: list[Path] = []
        for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            mask = mask_dir / f"{image.stem}.png"
            (self.samples.append((image, mask)) if mask.is_file()
             else self.missing_masks.append(image))
        if self.missing_masks:
            log.warning("%s: %d images have no mask in masks/ and are left out (first: %s)",
                        root, len(self.missing_masks), self.missing_masks[0].name)
        if not self.samples:
            raise ValueError(f"{root}: no image with a matching masks/<name>.png")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        from PIL import Image

        image_path, mask_path = self.samples[index]
        try:
            with Image.open(image_path) as im:
                size = im.size
                image = self.transform(im.convert("RGB"))
            with Image.open(mask_path) as m:
                if m.size != size:
                    raise ValueError(f"mask {mask_path.name} is {m.size}, image is {size}")
                mask = np.asarray(self.mask_transform(m.convert("L"))) > 0
        except Exception as e:  # unreadable file: counted as failed by the metric
            log.warning("bad image/mask pair %s: %s: %s", image_path, type(e).__name__, e)
            S = self.img_size
            return {"image": torch.zeros(3, S, S), "mask": torch.zeros(S, S, dtype=torch.bool),
                    "failed": True, "path": str(image_path)}
        return {"image": image, "mask": torch.from_numpy(mask.copy()), "failed": False,
                "path": str(image_path)}


__all__ = ["ImageMaskFolder"]

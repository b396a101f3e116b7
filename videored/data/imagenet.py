"""ImageNet-style folders (`root/{train,val}/<class>/<image>`) with DeiT's transforms, for the image models.

Transforms are DeiT's `build_transform` (deit/datasets.py) built from timm:
train: RandomResizedCrop(input_size, bicubic) + flip + RandAugment `rand-m9-mstd0.5-inc1` +
colour jitter 0.4 + random erasing (p=0.25, mode "pixel"); eval: resize the short side to
int(input_size / 0.875) (bicubic), centre crop input_size; normalized with the weights' mean/std
(ImageNet's for DeiT; `videored.normalization`).
"""
from __future__ import annotations

import logging
import os

import torch
from typing import Sequence

from PIL import Image
from timm.data import auto_augment, create_transform
from torchvision import datasets, transforms

from videored.data.rng import seeded_draws
from videored.normalization import IMAGENET

log = logging.getLogger(__name__)


def build_imagenet_transform(is_train: bool, input_size: int = 224, eval_crop_ratio: float = 0.875,
                             mean: Sequence[float] = IMAGENET.mean, std: Sequence[float] = IMAGENET.std):
    """DeiT's train or eval transform (PIL image -> (3, input_size, input_size) float), normalized
    with `mean` / `std` on [0, 1] pixels (the weights' own: videored.normalization)."""
    if is_train:
        transform = create_transform(
            input_size=input_size,
            is_training=True,
            mean=tuple(mean),
            std=tuple(std),
            color_jitter=0.4,
            auto_augment="rand-m9-mstd0.5-inc1",
            interpolation="bicubic",
            re_prob=0.25,
            re_mode="pixel",
            re_count=1,
        )
        if input_size <= 32:  # DeiT: CIFAR-sized inputs use a padded random crop instead
            transform.transforms[0] = transforms.RandomCrop(input_size, padding=4)
        _posterize_zero_bits_to_black(transform)
        return transform
    return transforms.Compose(
        [
            transforms.Resize(int(input_size / eval_crop_ratio), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(input_size),
            transforms.ToTensor(),
            transforms.Normalize(tuple(mean), tuple(std)),
        ]
    )


def _posterize_zero_bits_to_black(transform: transforms.Compose) -> None:
    """RandAugment "inc1" posterizes to 4 - int(m / 10 * 4) bits: 0 bits when the drawn magnitude
    m (gauss(9, 0.5), clipped to 10) reaches 10. Older Pillow returned a black image for 0 bits,
    which is what DeiT trained with; Pillow 13 (what a fresh install gets) raises ValueError, so
    about 0.2 % of the train transform's calls (42 in 20,000 measured) would fail and a good image
    would be counted as unreadable and substituted. Give the black image again."""
    for step in transform.transforms:
        for op in getattr(step, "ops", ()):  # timm's RandAugment: AugmentOp list
            if op.aug_fn is auto_augment.posterize:
                op.aug_fn = _posterize_or_black


def _posterize_or_black(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)  # every bit dropped: all zeros
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


class ImageFolderDataset(datasets.ImageFolder):
    """torchvision's ImageFolder returning dicts like `VideoClipDataset`.

    Item: `image` (3, S, S) float, `label`, `index`, `failed`, `path` (train: also `bad_path`,
    `bad_reason`: the image asked for when a substitute served it, else ""). A file that cannot be read
    is logged once; in train it is counted in `skipped` and replaced by the next image (at most
    `max_substitutes` tries); in eval it gives `failed=True` and an all-zero image.
    """

    def __init__(self, root: str | os.PathLike, transform, is_train: bool, input_size: int, max_substitutes: int = 20):
        super().__init__(str(root), transform=transform)
        self.is_train = is_train
        self.input_size = input_size
        self.max_substitutes = max_substitutes
        self.skipped = 0  # per process (DataLoader workers keep their own count)
        self._bad: dict[int, str] = {}  # index -> reason
        self.epoch_seed: int | None = None  # train: see set_epoch_seed

    def set_epoch_seed(self, seed: int | None) -> None:
        """Train: draw item i's augmentation (crop, flip, RandAugment, jitter, erasing) from
        (seed, i) alone (`videored.data.rng`), whatever DataLoader worker loads it, so a resumed
        run replays its batches exactly with any worker count; the trainer sets one seed per
        epoch. None (the default): the loading process's own random streams."""
        self.epoch_seed = seed

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, index: int) -> dict:
        if self.is_train:
            with seeded_draws(self.epoch_seed, index):
                return self._item(index)
        return self._item(index)

    def _item(self, index: int) -> dict:
        candidate = index
        for _ in range(self.max_substitutes + 1 if self.is_train else 1):
            path, label = self.samples[candidate]
            try:
                image = self.transform(self.loader(path))
                item = {"image": image, "label": label, "index": candidate, "failed": False, "path": path}
                if self.is_train:  # like VideoClipDataset: the trainer counts substitutions from these
                    bad = candidate != index
                    item.update(bad_path=self.samples[index][0] if bad else "",
                                bad_reason=self._bad.get(index, "?") if bad else "")
                return item
            except Exception as e:  # unreadable/corrupt image file
                if candidate not in self._bad:
                    self._bad[candidate] = f"{type(e).__name__}: {e}"
                    log.warning("bad image %s: %s: %s", path, type(e).__name__, e)
            if not self.is_train:
                zeros = torch.zeros(3, self.input_size, self.input_size)
                return {"image": zeros, "label": label, "index": index, "failed": True, "path": path}
            self.skipped += 1
            candidate = (candidate + 1) % len(self.samples)
        raise RuntimeError(f"{self.root}: {self.max_substitutes + 1} unreadable images in a row from index {index}")


def build_imagenet_dataset(root: str | os.PathLike, split: str = "train", input_size: int = 224,
                           mean: Sequence[float] = IMAGENET.mean,
                           std: Sequence[float] = IMAGENET.std) -> ImageFolderDataset:
    """`root/<split>/<class>/*` with DeiT's transform (train augmentation for split "train")."""
    is_train = split == "train"
    folder = os.path.join(str(root), split)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"ImageNet split folder not found: {folder}")
    transform = build_imagenet_transform(is_train, input_size, mean=mean, std=std)
    return ImageFolderDataset(folder, transform, is_train, input_size)

"""ImageNet-Segmentation (Guillaumin et al., IJCV 2014): `gtsegs_ijcv.mat`, 4,276 images with
binary object masks, the set of paper Table 1.

The file is MATLAB v7.3, i.e. HDF5 (read with `h5py`: `pip install videored[seg]`). Its layout,
as the public evaluation code of transformer-explainability work reads it:

    /value/img   (N, 1) object references; image i = file[img[i, 0]], stored (3, W, H) uint8
                 (MATLAB is column-major), so `.transpose(2, 1, 0)` gives (H, W, 3) RGB
    /value/gt    (N, 1) object references to a (1, 1) MATLAB cell; its one reference points at
                 mask i, stored (W, H), so `.T` gives (H, W); values 0 (background) / 1 (object)

Geometry: "resize" (default) scales the whole image to S x S (bilinear) and the mask with it
(nearest), as that public evaluation does, so every annotated pixel is scored; "crop" is DeiT's
evaluation view (short side int(S / 0.875), centre crop, as `ImageMaskFolder`). Normalization:
the weights' own (`normalization=`, `videored.normalization.model_normalization(model)`;
default ImageNet's, DeiT's).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from videored.normalization import IMAGENET, Normalization

log = logging.getLogger(__name__)

GEOMETRIES = ("resize", "crop")


def _h5py():
    try:
        import h5py
    except ImportError as e:  # an extra, not a core dependency
        raise ImportError("reading gtsegs_ijcv.mat (MATLAB v7.3 = HDF5) needs h5py: "
                          "pip install 'videored[seg]' (or pip install h5py)") from e
    return h5py


def read_item(f, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8, mask (H, W) bool) of item `index` of an open gtsegs file."""
    image = np.asarray(f[f["value/img"][index, 0]])
    image = image.T if image.ndim == 2 else image.transpose(2, 1, 0)  # (H, W[, 3])
    if image.ndim == 2:  # a grey image stored without a channel axis
        image = np.repeat(image[..., None], 3, axis=-1)
    cell = f[f["value/gt"][index, 0]]  # the (1, 1) MATLAB cell around the mask
    mask = np.asarray(f[cell[0, 0]]).T != 0
    if image.shape[:2] != mask.shape:
        raise ValueError(f"item {index}: mask {mask.shape} and image {image.shape[:2]} differ")
    return np.ascontiguousarray(image, dtype=np.uint8), mask


class ImageNetSegmentation(Dataset):
    """Items: {"image" (3, S, S) float, "mask" (S, S) bool, "failed" bool, "path" "file#i"}.

    The HDF5 file is opened on first use in each process (DataLoader workers open their own). An
    item that cannot be read (bad reference, mask and image sizes differ) is logged and returned
    with `failed=True` and zero tensors; the metric counts it.
    """

    def __init__(self, path: str | os.PathLike, img_size: int = 224, geometry: str = "resize",
                 normalization: Normalization = IMAGENET):
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.path, self.img_size, self.geometry = Path(path), img_size, geometry
        self.normalization = normalization
        if not self.path.is_file():
            raise FileNotFoundError(f"ImageNet-Segmentation file not found: {self.path}")
        h5py = _h5py()
        try:
            with h5py.File(self.path, "r") as f:
                for key in ("value/img", "value/gt"):
                    if key not in f:
                        raise KeyError(f"{self.path}: no '/{key}' dataset (found top-level "
                                       f"keys {sorted(f.keys())}); is this gtsegs_ijcv.mat?")
                n_img, n_gt = len(f["value/img"]), len(f["value/gt"])
        except OSError as e:  # not HDF5: e.g. a MATLAB v5 file or a truncated download
            raise ValueError(f"{self.path}: not an HDF5 (MATLAB v7.3) file: {e}") from e
        if n_img != n_gt:
            raise ValueError(f"{self.path}: {n_img} images but {n_gt} masks")
        self.num_items = n_img
        self._file = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}  # an open HDF5 handle does not travel

    def __len__(self) -> int:
        return self.num_items

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored (image (H, W, 3) uint8, mask (H, W) bool) of item `index`, untransformed."""
        if self._file is None:
            self._file = _h5py().File(self.path, "r")
        return read_item(self._file, index)

    def transform(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's view: image (3, S, S) normalized, mask (S, S) bool, same geometry."""
        from PIL import Image
        from torchvision import transforms as tv

        from .imagenet import build_imagenet_transform

        S, norm = self.img_size, self.normalization
        nearest = tv.InterpolationMode.NEAREST
        if self.geometry == "resize":
            image_tf = tv.Compose([tv.Resize((S, S), interpolation=tv.InterpolationMode.BILINEAR),
                                   tv.ToTensor(), tv.Normalize(norm.mean, norm.std)])
            mask_tf = tv.Resize((S, S), interpolation=nearest)
        else:  # DeiT's evaluation view
            image_tf = build_imagenet_transform(False, S, mean=norm.mean, std=norm.std)
            mask_tf = tv.Compose([tv.Resize(int(S / 0.875), interpolation=nearest),
                                  tv.CenterCrop(S)])
        x = image_tf(Image.fromarray(image))
        m = np.asarray(mask_tf(Image.fromarray(mask.astype(np.uint8) * 255))) > 0
        return x, torch.from_numpy(m.copy())

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_items:
            raise IndexError(f"index {index} outside [0, {self.num_items})")
        name = f"{self.path}#{index}"
        try:
            x, mask = self.transform(*self.raw(index))
        except Exception as e:  # a bad item is counted, not fatal
            log.warning("%s: unreadable item: %s: %s", name, type(e).__name__, e)
            S = self.img_size
            return {"image": torch.zeros(3, S, S), "mask": torch.zeros(S, S, dtype=torch.bool),
                    "failed": True, "path": name}
        return {"image": x, "mask": mask, "failed": False, "path": name}


__all__ = ["GEOMETRIES", "ImageNetSegmentation", "read_item"]

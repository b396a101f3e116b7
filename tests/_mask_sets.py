"""Tiny mask sets written in the layouts of the real ones (shared by the mask-set tests)."""
import numpy as np
from PIL import Image


def _write_gtsegs(path, images, masks):
    """A MATLAB v7.3-style file: /value/img and /value/gt hold (N, 1) object references; images
    are stored (3, W, H), masks (W, H) behind a (1, 1) cell of references (column-major)."""
    import h5py

    ref = h5py.special_dtype(ref=h5py.Reference)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        img_refs = np.empty((len(images), 1), dtype=object)
        gt_refs = np.empty((len(images), 1), dtype=object)
        for i, (im, m) in enumerate(zip(images, masks)):
            img_refs[i, 0] = refs.create_dataset(f"img{i}", data=im.transpose(2, 1, 0)).ref
            mask = refs.create_dataset(f"mask{i}", data=m.T.astype(np.uint8))
            cell = refs.create_dataset(f"cell{i}", shape=(1, 1), dtype=ref)
            cell[0, 0] = mask.ref
            gt_refs[i, 0] = cell.ref
        value = f.create_group("value")
        value.create_dataset("img", data=img_refs, dtype=ref)
        value.create_dataset("gt", data=gt_refs, dtype=ref)


def _frame(i, h=16, w=24):
    """Distinct content per frame and position (a gradient plus the frame number)."""
    y, x = np.mgrid[:h, :w]
    return np.stack([(x * 9 + i * 7) % 256, (y * 13 + i * 3) % 256,
                     np.full((h, w), 20 * i % 256)], -1).astype(np.uint8)


def _write_davis(root, videos, *, resolution="480p", skip_annotation=None):
    for name, length in videos.items():
        frames = root / "JPEGImages" / resolution / name
        annots = root / "Annotations" / resolution / name
        frames.mkdir(parents=True)
        annots.mkdir(parents=True)
        for i in range(length):
            Image.fromarray(_frame(i)).save(frames / f"{i:05d}.png")  # lossless: exact checks
            ids = np.zeros((16, 24), np.uint8)
            ids[2 + i % 3:8, 1:6] = 1  # object 1
            ids[10:14, 12 + i:18 + i] = 2  # object 2: also foreground
            im = Image.fromarray(ids, mode="P")
            im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
            if (name, i) != skip_annotation:
                im.save(annots / f"{i:05d}.png")

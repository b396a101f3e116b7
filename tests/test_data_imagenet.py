"""ImageNet folders with DeiT's transforms: eval transform against a plain PIL computation."""
import numpy as np
import pytest
import torch
from PIL import Image

from videored.data import build_imagenet_dataset, build_imagenet_transform

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (50 + 10 * i, 70, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return tmp_path


def test_eval_transform_is_resize_256_center_224_normalize(folder):
    """DeiT eval at input 32: bicubic short side int(32 / 0.875) = 36, centre crop 32, ImageNet stats."""
    img = Image.open(folder / "val" / "n02" / "1.png").convert("RGB")  # 70 x 60
    out = build_imagenet_transform(False, 32)(img)
    # plain PIL reference: short side 60 -> 36, long 70 -> int(36 * 70 / 60) = 42; crop offsets
    # round((42 - 32) / 2) = 5, round((36 - 32) / 2) = 2
    small = np.asarray(img.resize((42, 36), Image.BICUBIC), dtype=np.float64) / 255
    ref = (small[2:34, 5:37] - MEAN) / STD
    assert out.shape == (3, 32, 32)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_datasets_items_and_train_augmentation(folder):
    train = build_imagenet_dataset(folder, "train", input_size=32)
    val = build_imagenet_dataset(folder, "val", input_size=32)
    assert train.num_classes == val.num_classes == 2 and len(train) == len(val) == 4
    item = val[3]
    assert set(item) == {"image", "label", "index", "failed", "path"}
    assert item["label"] == 1 and item["path"].endswith("n02/1.png") and not item["failed"]
    torch.manual_seed(0)
    a, b = train[0]["image"], train[0]["image"]
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)  # random augmentation
    assert torch.equal(val[0]["image"], val[0]["image"])  # eval is deterministic
    with pytest.raises(FileNotFoundError, match="split folder not found"):
        build_imagenet_dataset(folder, "test")


def test_unreadable_image_failed_in_eval_substituted_in_train(folder):
    for split in ("train", "val"):
        (folder / split / "n01" / "0.png").write_bytes(b"not a png")
    val = build_imagenet_dataset(folder, "val", input_size=32)
    bad = val[0]
    assert bad["failed"] and torch.count_nonzero(bad["image"]) == 0 and bad["label"] == 0
    train = build_imagenet_dataset(folder, "train", input_size=32)
    item = train[0]
    assert not item["failed"] and item["index"] == 1 and train.skipped == 1


def test_randaugment_posterize_to_zero_bits_gives_a_black_image_not_an_error():
    """DeiT's RandAugment (inc1) keeps 4 - int(m / 10 * 4) bits, 0 at magnitude 10; Pillow 13
    raises for 0 bits, older Pillow gave a black image (what DeiT trained with)."""
    import random

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    rand_augment = next(s for s in build_imagenet_transform(True, 32).transforms if hasattr(s, "ops"))
    posterize = next(op for op in rand_augment.ops if op.name == "PosterizeIncreasing")
    posterize.prob, posterize.magnitude_std = 1.0, 0.0
    posterize.magnitude = 10  # 4 - 4 = 0 bits
    black = posterize(img)
    assert black.size == img.size and black.mode == "RGB" and not np.asarray(black).any()
    posterize.magnitude = 5  # 4 - int(2.0) = 2 bits: the top two bits of every byte
    np.testing.assert_array_equal(np.asarray(posterize(img)), np.asarray(img) & 0b11000000)
    # the whole RandAugment, as the train transform draws it: about 1 call in 500 posterizes to 0 bits
    rand_augment = next(s for s in build_imagenet_transform(True, 32).transforms if hasattr(s, "ops"))
    random.seed(0)
    np.random.seed(0)
    for _ in range(3000):
        rand_augment(img)

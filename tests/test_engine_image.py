"""Training on an ImageNet-style folder (DeiT's train transforms) survives a kill exactly."""
import numpy as np
import pytest
import torch
from PIL import Image

from _engine_utils import assert_same_weights, kill_then_resume
from videored.engine.config import load_config
from videored.engine.trainer import train


@pytest.fixture
def image_root(tmp_path):
    """8 noise images of 40-54 x 48 pixels in 2 classes (train) and 2 (val)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 1)):
        for cls in ("n01", "n02"):
            d = tmp_path / "images" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40 + 2 * i, 48, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return tmp_path / "images"


def _cfg(root):
    # DeiT-tiny layout at 32 px: 4 patch tokens, width 32, 2 blocks; 8 images / batch 4 = 2 steps an epoch
    return load_config(None, [
        "model.name=deit_tiny_patch16_224", "model.num_classes=2", "model.img_size=32", "model.depth=2",
        "model.kwargs={embed_dim: 32, num_heads: 2}", "data.kind=image", f"data.root={root}",
        "data.batch_size=4", "data.num_workers=0", "schedule.stages=[supervised]",
        "schedule.supervised_epochs=2", "run.ckpt_every_steps=1", "run.progress=false", "run.log_every=1",
        "optim.lr=0.05"])


def test_killed_image_run_with_workers_resumes_to_the_main_process_weights(image_root, tmp_path):
    """Each image's crop, flip, RandAugment (numpy's stream), jitter and erasing come from
    (epoch seed, index) alone, so a run loading with 2 workers, killed after 3 of its 4 steps
    and resumed, ends bit-identical to an uninterrupted run that loaded in the main process."""
    cfg = _cfg(image_root)
    summary = train(cfg, tmp_path / "ref")
    assert summary["global_steps"] == 2 * 2
    run = kill_then_resume(cfg, tmp_path, 3, "data.num_workers=2")
    assert_same_weights(tmp_path / "ref" / "model.pt", run / "model.pt")


def test_image_augmentation_is_a_function_of_epoch_seed_and_index(image_root):
    """Same (seed, index): the same augmented image, whatever was drawn before; another seed:
    another image; the caller's random, numpy and torch streams are left as they were."""
    import random

    from videored.data import build_imagenet_dataset

    train_set = build_imagenet_dataset(image_root, "train", input_size=32)
    train_set.set_epoch_seed(11)
    first = train_set[3]["image"]
    state = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    for i in range(4):  # other items in between, as another worker's order would give
        train_set[i]
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), state[2])
    assert torch.equal(train_set[3]["image"], first)
    train_set.set_epoch_seed(12)
    assert not torch.equal(train_set[3]["image"], first)

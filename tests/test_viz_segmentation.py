"""Interpretability metric: confusion counts and Table 1 metrics on hand-made masks, and the
dataset-level table against a plain reference built from the model's own keep decisions."""
import numpy as np
import pytest
import torch

from videored.models import create_model
from videored.interpretability import (confusion_counts, interpretability_table, keep_to_pixels,
                                       segmentation_metrics)
from videored.models.methods import METHODS


def _frame_a():
    target = torch.zeros(4, 4, dtype=torch.bool)
    target[:2, :2] = True  # object: top-left 2x2
    pred = torch.zeros(4, 4, dtype=torch.bool)
    pred[0] = True  # predicted: the top row
    return pred, target


def test_metrics_on_a_hand_made_mask():
    pred, target = _frame_a()
    conf = confusion_counts(pred, target)
    assert conf.tolist() == [[10, 2], [2, 2]]  # [[TN, FP], [FN, TP]]
    m = segmentation_metrics(conf)
    assert m["pixel_acc"] == pytest.approx(100 * 12 / 16)  # 75
    assert m["mean_acc"] == pytest.approx(100 * (2 / 4 + 10 / 12) / 2)  # 66.67
    assert m["miou"] == pytest.approx(100 * (2 / 6 + 10 / 14) / 2)  # 52.38


def test_counts_accumulate_over_frames_not_per_frame_averages():
    pred_a, target_a = _frame_a()
    empty = torch.zeros(4, 4, dtype=torch.bool)  # frame B: no object, nothing predicted
    conf = confusion_counts(torch.stack([pred_a, empty]), torch.stack([target_a, empty]))
    assert conf.tolist() == [[26, 2], [2, 2]]
    m = segmentation_metrics(conf)
    assert m["pixel_acc"] == pytest.approx(100 * 28 / 32)
    assert m["miou"] == pytest.approx(100 * (2 / 6 + 26 / 30) / 2)  # 60.0
    per_frame = (segmentation_metrics(confusion_counts(pred_a, target_a))["miou"]
                 + segmentation_metrics(confusion_counts(empty, empty))["miou"]) / 2
    assert per_frame == pytest.approx((100 * (2 / 6 + 10 / 14) / 2 + 100) / 2)  # 76.19: not used
    assert m["miou"] != pytest.approx(per_frame)


def test_absent_classes_are_left_out_of_the_means():
    empty = torch.zeros(4, 4, dtype=torch.bool)
    m = segmentation_metrics(confusion_counts(empty, empty))  # only background, all right
    assert m == pytest.approx({"pixel_acc": 100.0, "mean_acc": 100.0, "miou": 100.0})
    m = segmentation_metrics(confusion_counts(~empty, empty))  # everything predicted object
    assert m == pytest.approx({"pixel_acc": 0.0, "mean_acc": 0.0, "miou": 0.0})
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_counts(empty, empty[:2])


def test_keep_to_pixels_upsamples_each_patch_decision():
    grid, p = (2, 2, 3), 3
    keep = torch.rand(2, 12) > 0.5
    px = keep_to_pixels(keep, grid, p)
    assert px.shape == (2, 2, 6, 9)
    for b in range(2):
        for t in range(2):
            for y in range(6):
                for x in range(9):
                    assert px[b, t, y, x] == keep[b, t * 6 + (y // p) * 3 + x // p]


def test_matched_keep_ratio():
    setting_for = METHODS["random"].setting_for
    assert setting_for(0.3, 1) == pytest.approx(0.3)
    assert setting_for(0.125, 3) == pytest.approx(0.5)  # 0.5 per selection, 3 times
    assert setting_for(1.0, 3) == 1.0


def _tiny_video_model(**kw):
    return create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=2,
                        depth=1, num_classes=3, selector="interpreter", **kw).eval()


def _items(n=3, failed_at=None):
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        mask = torch.zeros(2, 32, 32, dtype=torch.bool)
        mask[:, 4 + i:20 + i, 8:30 - i] = True  # objects not aligned with the 16 px patches
        items.append({"video": torch.randn(3, 2, 32, 32, generator=g), "mask": mask,
                      "label": 0, "failed": i == failed_at})
    return items


def _reference(model, items, selector, keep_ratio=None):
    """Plain numpy reference: per item, np.kron-upsampled keep grid vs mask, summed counts."""
    tp = fp = fn = tn = 0
    for it in items:
        if it["failed"]:
            continue
        with torch.no_grad():
            out = model(it["video"][None], selector=selector, keep_ratio=keep_ratio)
        keep = out.keep[-1][0].numpy().reshape(2, 2, 2)
        pred = np.stack([np.kron(k, np.ones((16, 16))) > 0 for k in keep])
        m = it["mask"].numpy()
        tp += (pred & m).sum(); fp += (pred & ~m).sum(); fn += (~pred & m).sum(); tn += (~pred & ~m).sum()
    return {"pixel_acc": 100 * (tp + tn) / (tp + fp + fn + tn),
            "mean_acc": 100 * (tp / (tp + fn) + tn / (tn + fp)) / 2,
            "miou": 100 * (tp / (tp + fp + fn) + tn / (tn + fp + fn)) / 2}


def test_table_matches_a_plain_reference_and_counts_failures():
    model = _tiny_video_model(threshold=0.5)
    items = _items(4, failed_at=2)
    table = interpretability_table(model, items, ["original", "interpreter", "random"],
                                   kept_ratio=0.5, batch_size=2)
    assert set(table) == {"original", "interpreter", "random"}
    ref = _reference(model, items, "interpreter")
    for key in ("pixel_acc", "mean_acc", "miou"):
        assert table["interpreter"][key] == pytest.approx(ref[key])
    assert table["interpreter"]["samples"] == 3 and table["interpreter"]["failed"] == 1
    # original keeps everything: TP = object pixels, FP = background, no negatives
    obj = sum(int(it["mask"].sum()) for i, it in enumerate(items) if i != 2)
    total = 3 * 2 * 32 * 32
    assert table["original"]["pixel_acc"] == pytest.approx(100 * obj / total)
    assert table["original"]["mean_acc"] == pytest.approx(50.0)
    assert table["original"]["miou"] == pytest.approx(100 * obj / total / 2)
    assert table["original"]["kept"] == 1.0
    assert table["random"]["kept"] == pytest.approx(0.5)  # 4 of 8 patches per clip


def test_baselines_match_the_interpreters_kept_fraction_input_by_input():
    model = _tiny_video_model()
    with torch.no_grad():  # move the threshold so that the interpreter keeps a mixed fraction
        scores = torch.cat([model(it["video"][None]).scores[0] for it in _items(4)])
    model.interpreters[0].threshold = float(scores.median())
    items = _items(4)
    table = interpretability_table(model, items, ["interpreter", "attention",
                                                  "temporal_difference"], kept_ratio=None)
    kept = table["interpreter"]["kept"]
    assert 0 < kept < 1
    assert table["attention"]["kept"] == pytest.approx(kept)
    assert table["temporal_difference"]["kept"] == pytest.approx(kept)
    baseline = _tiny_video_model()
    baseline.interpreters = None  # no interpreter: nothing to match, a ratio is required
    with pytest.raises(ValueError, match="kept_ratio is needed"):
        interpretability_table(baseline, items, ["random"], kept_ratio=None)


def test_keep_ratio_one_equals_original():
    model = _tiny_video_model()
    items = _items(2)
    table = interpretability_table(model, items, ["original", "random"], kept_ratio=1.0)
    assert table["random"] == pytest.approx(table["original"])


def test_table_on_real_synthetic_videos_with_masks(tmp_path):
    """Decoded synthetic mp4 + masks through VideoClipDataset(return_masks=True)."""
    from videored.data import VideoClipDataset, render_video, save_masks, write_video

    rows = []
    for label in range(2):
        frames, masks = render_video(label, 4, np.random.default_rng([7, label]))
        path = tmp_path / f"v{label}.mp4"
        write_video(path, frames, fps=30)
        save_masks(path, masks)
        rows.append(f"{path.name} {label}\n")
    (tmp_path / "missing.mp4").write_bytes(b"")  # an empty file: a failed item, counted
    rows.append("missing.mp4 1\n")
    (tmp_path / "test.csv").write_text("".join(rows))
    ds = VideoClipDataset(tmp_path / "test.csv", mode="test", num_frames=2, sampling_rate=8,
                          crop_size=32, num_spatial_crops=1, return_masks=True, num_classes=4)
    model = _tiny_video_model()
    table = interpretability_table(model, ds, ["original", "interpreter"], kept_ratio=None,
                                   batch_size=3)
    assert table["original"]["samples"] == 2 and table["original"]["failed"] == 1
    good = [ds[i] for i in range(2)]
    obj = sum(int(it["mask"].sum()) for it in good)
    assert 0 < obj < 2 * 2 * 32 * 32
    assert table["original"]["pixel_acc"] == pytest.approx(100 * obj / (2 * 2 * 32 * 32))
    ref = _reference(model, good, "interpreter")
    for key in ("pixel_acc", "mean_acc", "miou"):
        assert table["interpreter"][key] == pytest.approx(ref[key])
    # decoded in 2 DataLoader workers with a hang timeout (what `videored eval` passes): the same
    in_workers = interpretability_table(model, ds, ["original", "interpreter"], kept_ratio=None,
                                        batch_size=3, num_workers={"num_workers": 2, "timeout": 60})
    assert in_workers == table


def test_image_mask_folder_geometry_and_image_table(tmp_path):
    from PIL import Image

    from videored.data import build_imagenet_transform
    from videored.data.image_masks import ImageMaskFolder

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8))
    image.save(tmp_path / "images" / "a.png")
    mask = np.zeros((80, 100), np.uint8)
    mask[:, :47] = 255  # the left 47 of 100 columns
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    image.save(tmp_path / "images" / "no_mask.png")  # left out, listed
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(mask).save(tmp_path / "masks" / "broken.png")
    ds = ImageMaskFolder(tmp_path, img_size=32)
    assert len(ds) == 2 and [p.name for p in ds.missing_masks] == ["no_mask.png"]
    item = ds[0]
    assert not item["failed"]
    torch.testing.assert_close(item["image"], build_imagenet_transform(False, 32)(image))
    # short side 80 -> int(32 / 0.875) = 36: 100 px -> 45 px wide, centre crop starts at x = 6;
    # resized column j is object iff its nearest source column floor((j + 0.5) * 100 / 45) < 47,
    # i.e. j <= 20 -> crop columns 0..14
    assert item["mask"][:, :15].all() and not item["mask"][:, 15:].any()
    assert ds[1]["failed"]
    model = create_model("deit_tiny_patch16_224", img_size=32, depth=3, num_classes=3,
                         selector="interpreter").eval()
    table = interpretability_table(model, ds, ["original", "interpreter", "random"],
                                   kept_ratio=None)
    assert table["original"]["failed"] == 1 and table["original"]["samples"] == 1
    assert table["original"]["pixel_acc"] == pytest.approx(100 * 15 / 32)
    assert 0 < table["random"]["kept"] <= 1

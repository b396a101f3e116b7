"""`videored eval --interpretability --masks`: paper Table 1 on an ImageNet-Segmentation-layout
file (image model) and a DAVIS-style folder (video model), each number checked against a plain
reference computed here from the model's decisions and the stored masks."""
import json

import numpy as np
import pytest
import torch

from videored import cli
from videored.models import create_model, save_model_file

from _mask_sets import _write_davis, _write_gtsegs


def _metrics(pred, target):
    """Pixel acc / mAcc / mIoU in percent from flat bool arrays (counts over all pixels)."""
    tp, tn = np.sum(pred & target), np.sum(~pred & ~target)
    fp, fn = np.sum(pred & ~target), np.sum(~pred & target)
    return {"pixel_acc": 100 * (tp + tn) / pred.size,
            "mean_acc": 100 * (tp / (tp + fn) + tn / (tn + fp)) / 2,
            "miou": 100 * (tp / (tp + fp + fn) + tn / (tn + fn + fp)) / 2}


def _pixels(keep, grid, p):  # (N,) bool -> (T, gh*p, gw*p)
    return np.kron(keep.reshape(grid), np.ones((1, p, p), bool)).astype(bool)


def test_table1_on_an_imagenet_segmentation_file(tmp_path, capsys):
    pytest.importorskip("h5py")
    from videored.data.imagenet_seg import ImageNetSegmentation
    from videored.models.explanations import EXPLANATIONS, explanation_scores

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(5)]
    masks = []
    for i in range(5):
        m = np.zeros((40, 36), bool)
        m[5 + i:25 + i, 4:20 + 2 * i] = True
        masks.append(m)
    mat = tmp_path / "gtsegs_ijcv.mat"
    _write_gtsegs(mat, images, masks)
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, groups=3,
                         num_classes=4, selector="interpreter", embed_dim=24, num_heads=3,
                         threshold=0.5).eval()
    for interp in model.interpreters:  # a spread of scores around the threshold
        torch.nn.init.normal_(interp.policy_token, std=3.0)
    save_model_file(model, tmp_path / "model.pt")
    cfg = tmp_path / "deit.yaml"
    cfg.write_text("model: {name: deit_tiny_patch16_224, img_size: 32, depth: 3, groups: 3, "
                   "num_classes: 4, kwargs: {patch_size: 8, embed_dim: 24, num_heads: 3}}\n"
                   "data: {kind: image, root: unused, batch_size: 2, num_workers: 0}\n"
                   "run: {device: cpu, progress: false}\n")
    out = tmp_path / "out"
    assert cli.main(["eval", "--config", str(cfg), "--checkpoint", str(tmp_path / "model.pt"),
                     "--out", str(out), "--interpretability", "--masks", str(mat),
                     "--protocol", "kept"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["samples"] == 5 and res["failed"] == 0 and res["protocol"] == "kept"
    methods = res["methods"]
    assert list(methods) == ["interpreter", "attention", "random", "temporal_difference",
                             *EXPLANATIONS]
    assert [m for m, r in methods.items() if r["explanation_only"]] == list(EXPLANATIONS)
    # reference: the model's own decisions, upsampled, against the stored masks resized
    ds = ImageNetSegmentation(mat, img_size=32)
    x = torch.stack([ds[i]["image"] for i in range(5)])
    target = np.stack([ds[i]["mask"].numpy() for i in range(5)])[:, None]  # (5, 1, 32, 32)
    grid, N = (1, 4, 4), 16
    with torch.no_grad():
        interp = model(x, selector="interpreter").keep[-1].numpy()
    f = interp.mean(1)  # (5,) the interpreter's kept fraction on each image
    assert methods["interpreter"]["kept"] == pytest.approx(f.mean())
    assert 0 < f.mean() < 1 and len(set(f)) > 1  # fractions differ: matching is per image
    pred = np.stack([_pixels(k, grid, 8) for k in interp])
    assert {k: methods["interpreter"][k] for k in ("pixel_acc", "mean_acc", "miou")} == \
        pytest.approx(_metrics(pred.ravel(), target.ravel()))
    # explanations keep, image by image, the interpreter's fraction in one selection
    ks = [max(1, round(fb * N)) for fb in f]
    for m in EXPLANATIONS:
        s = explanation_scores(model, x, m).numpy()
        keep = np.zeros_like(s, bool)
        for b in range(5):
            keep[b, np.argsort(-s[b], kind="stable")[:ks[b]]] = True
        pred = np.stack([_pixels(kb, grid, 8) for kb in keep])
        assert methods[m]["kept"] == pytest.approx(np.mean(ks) / N)
        assert methods[m]["miou"] == pytest.approx(_metrics(pred.ravel(), target.ravel())["miou"])
    # baselines: f_b^(1/3) per selection over D = 3 groups, image by image (hand formula)
    with torch.no_grad():
        att = np.concatenate([model(x[b:b + 1], selector="attention",
                                    keep_ratio=float(f[b]) ** (1 / 3)).keep[-1].numpy()
                              for b in range(5)])
    pred = np.stack([_pixels(kb, grid, 8) for kb in att])
    assert methods["attention"]["kept"] == pytest.approx(att.mean())
    assert {k: methods["attention"][k] for k in ("pixel_acc", "mean_acc", "miou")} == \
        pytest.approx(_metrics(pred.ravel(), target.ravel()))
    assert res["budget"] == {"match": "ratio", "reference": "interpreter"}
    md = (out / "results.md").read_text()
    assert ("| metric | interpreter (ours) | attention | random | temporal_difference | "
            "raw_attention † | rollout † | attn_gradcam † | lrp † | transformer_attribution † | "
            "feature_gradcam † | chefer_iccv21 † |") in md
    for label in ("| pixel accuracy |", "| mAcc |", "| mIoU |", "| kept % |", "49.42", "41.31",
                  "Protocol: **kept**"):
        assert label in md and label in printed
    assert "| mAP |" not in md  # no soft map is scored in the kept protocol

    # the default protocol: the public benchmark's, on every map (the interpreter's informative
    # scores with its dropped tokens 0, the explanations' relevance), mAP included
    from videored.interpretability import SegmentationScore

    bench = tmp_path / "bench"
    assert cli.main(["eval", "--config", str(cfg), "--checkpoint", str(tmp_path / "model.pt"),
                     "--out", str(bench), "--interpretability", "--masks", str(mat)]) == 0
    res = json.loads((bench / "results.json").read_text())
    assert res["protocol"] == "benchmark"
    with torch.no_grad():
        out_i = model(x, selector="interpreter")
    from videored.models.explanations import explanation_pixels

    maps = {"interpreter": out_i.scores[-1] * out_i.keep[-1],
            **{m: explanation_scores(model, x, m) for m in EXPLANATIONS},
            "lrp": explanation_pixels(model, x, "lrp")}  # full LRP: scored at the pixels
    assert maps["lrp"].shape == (5, 1, 32, 32)
    for m, scored in maps.items():
        ref = SegmentationScore()
        ref.add_benchmark(scored, torch.tensor(target), (1, 4, 4), 8)
        want = ref.metrics("benchmark")
        assert {k: res["methods"][m][k] for k in want} == pytest.approx(want), m
        assert 0 <= want["map"] <= 100
    assert np.isnan(res["methods"]["rollout"]["kept"])  # explanations keep no fraction here
    md = (bench / "results.md").read_text()
    for label in ("| mAP |", "Protocol: **benchmark**", "Chefer et al. CVPR'21", "79.70",
                  "GradCAM (= attn_gradcam)"):
        assert label in md


def test_table1_on_a_davis_folder_counts_unreadable_videos(tmp_path):
    _write_davis(tmp_path / "davis", {"bear": 8, "car": 8, "dog": 8},
                 skip_annotation=("dog", 2))
    torch.manual_seed(0)
    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=16, patch_size=8,
                         num_frames=2, depth=2, num_classes=3, embed_dim=24, num_heads=3,
                         selector="interpreter")
    save_model_file(model, tmp_path / "model.pt")
    cfg = tmp_path / "v.yaml"
    cfg.write_text("model: {name: timesformer_jointst_tiny_patch16_224, img_size: 16, "
                   "num_frames: 2, depth: 2, num_classes: 3, "
                   "kwargs: {patch_size: 8, embed_dim: 24, num_heads: 3}}\n"
                   "data: {root: unused, batch_size: 2, num_workers: 0, sampling_rate: 2, "
                   "target_fps: 24}\nrun: {device: cpu, progress: false}\n")
    out = tmp_path / "out"
    assert cli.main(["eval", "--config", str(cfg), "--checkpoint", str(tmp_path / "model.pt"),
                     "--out", str(out), "--interpretability", "--masks", str(tmp_path / "davis"),
                     "--methods", "interpreter,attention,rollout,chefer"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["samples"] == 2 and res["failed"] == 1  # dog lacks one annotation
    # "chefer": the old name of chefer_iccv21
    assert set(res["methods"]) == {"interpreter", "attention", "rollout", "chefer_iccv21"}
    assert all(0 <= r["miou"] <= 100 for r in res["methods"].values())
    assert "paper_table1_deit_s" not in res
    # wrong pairings and explanation methods without --masks are refused with a reason
    assert cli.main(["eval", "--config", str(cfg), "--checkpoint", str(tmp_path / "model.pt"),
                     "--out", str(out), "--methods", "rollout"]) == 2
    bad = tmp_path / "x.mat"
    bad.write_bytes(b"")
    assert cli.main(["eval", "--config", str(cfg), "--checkpoint", str(tmp_path / "model.pt"),
                     "--out", str(out), "--interpretability", "--masks", str(bad)]) == 2


def test_davis_frame_not_sampled_may_lack_its_annotation(tmp_path):
    """Only the sampled frames' annotations are read: a missing PNG elsewhere in the sequence
    does not drop it; a missing PNG of a sampled frame still fails (counted) with its name."""
    from videored.data.davis_set import davis_clips
    from videored.data.davis import load_annotations

    _write_davis(tmp_path, {"bear": 12, "car": 12}, skip_annotation=("bear", 11))
    (tmp_path / "Annotations/480p/car/00005.png").unlink()
    ds = davis_clips(tmp_path, num_frames=2, sampling_rate=1, target_fps=24, crop_size=16,
                     num_spatial_crops=1)
    bear, car = ds[0], ds[1]
    assert not bear["failed"] and car["failed"]  # the centre clip of 12 frames: frames 5, 6
    frames = tmp_path / "JPEGImages/480p/bear"
    want = load_annotations(frames, [5, 6])[:, :, 4:20]
    assert torch.equal(bear["mask"], torch.from_numpy(want))
    with pytest.raises(FileNotFoundError, match="00011.png"):
        load_annotations(frames)  # every frame: names the missing one

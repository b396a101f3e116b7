"""Evaluation: aggregation by hand, distributed == single process, failed videos, matched ratios."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _engine_utils import free_port
from videored.engine.evaluation import ViewPrediction, aggregate
from videored.models import create_model, save_model_file

MODEL = dict(name="timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=2, depth=2,
             num_classes=3)


def view(video, spatial, label, probs, failed=False):
    return ViewPrediction(index=video * 3 + spatial, video_index=video, spatial_index=spatial,
                          temporal_index=0, label=label, probs=torch.tensor(probs), failed=failed,
                          kept_ratio=0.5, gflops=1.0, path=f"v{video}.mp4")


def test_aggregate_hand_computed():
    views = [
        # video 0, label 0: centre crop wrong (argmax 1), mean of crops right (0: 0.5 vs 0.4)
        view(0, 0, 0, [0.9, 0.1, 0.0]), view(0, 1, 0, [0.2, 0.7, 0.1]), view(0, 2, 0, [0.4, 0.4, 0.2]),
        # video 1, label 2: centre right, mean right
        view(1, 0, 2, [0.1, 0.2, 0.7]), view(1, 1, 2, [0.0, 0.3, 0.7]), view(1, 2, 2, [0.3, 0.3, 0.4]),
        # video 2, label 1: centre right (0.5), mean wrong (0 wins: 0.6 vs 0.3)
        view(2, 0, 1, [1.0, 0.0, 0.0]), view(2, 1, 1, [0.4, 0.5, 0.1]), view(2, 2, 1, [0.4, 0.4, 0.2]),
        # video 3 failed in one view: counted, listed, not scored
        view(3, 0, 0, [1, 0, 0]), view(3, 1, 0, [1, 0, 0], failed=True), view(3, 2, 0, [1, 0, 0]),
    ]
    r = aggregate(views, num_classes=3)
    assert r["num_videos"] == 4 and r["num_scored"] == 3 and r["failed_videos"] == ["v3.mp4"]
    assert r["clip1_err"] == pytest.approx(100 / 3)  # videos 1, 2 right at the centre crop
    assert r["video1_err"] == pytest.approx(100 / 3)  # videos 0, 1 right on averaged scores
    assert r["video1_top5_err"] == 0.0 and r["clip1_top5_err"] == 0.0  # 3 classes < 5
    assert r["per_class_video1_acc"] == [100.0, 0.0, 100.0]


def test_aggregate_top5_and_single_view():
    probs = torch.arange(10, dtype=torch.float32).softmax(0).tolist()  # ranking 9 > 8 > ... > 0
    views = [ViewPrediction(index=i, video_index=i, spatial_index=0, temporal_index=0, label=lab,
                            probs=torch.tensor(probs), failed=False, kept_ratio=1.0, gflops=2.0)
             for i, lab in enumerate([9, 5, 4, 0])]
    r = aggregate(views, num_classes=10)
    assert r["clip1_err"] == r["video1_err"] == 75.0  # only label 9 is top-1
    assert r["clip1_top5_err"] == 50.0  # labels 9 and 5 are in the top 5 (9..5)
    assert r["gflops"] == 2.0 and r["kept_ratio"] == 1.0


def _setup_run(tmp_path: Path, n_test: int = 7) -> tuple[Path, Path]:
    torch.manual_seed(0)
    x = torch.randn(n_test, 3, 2, 32, 32)
    y = torch.randint(0, 3, (n_test,))
    torch.save({"test": {"x": x, "y": y}}, tmp_path / "data.pt")
    model = create_model(MODEL["name"], **{k: v for k, v in MODEL.items() if k != "name"},
                         selector="interpreter")
    for interp in model.interpreters:  # spread scores so kept counts differ between clips
        torch.nn.init.normal_(interp.query.weight, std=0.3)
    save_model_file(model, tmp_path / "model.pt")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"""
model: {{name: {MODEL['name']}, img_size: 32, num_frames: 2, depth: 2, num_classes: 3}}
data: {{kind: tensor_file, root: {tmp_path / 'data.pt'}, batch_size: 2, num_workers: 0}}
run: {{device: cpu, progress: false}}
""")
    return cfg, tmp_path / "model.pt"


def _eval_cmd(cfg: Path, ckpt: Path, out: Path) -> list[str]:
    return ["-m", "videored.cli", "eval", "--config", str(cfg), "--checkpoint", str(ckpt),
            "--out", str(out), "--speed-runs", "1"]


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "SLURM_"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_eval_cli_matched_keep_ratio_and_reports(tmp_path):
    cfg, ckpt = _setup_run(tmp_path)
    subprocess.run([sys.executable, *_eval_cmd(cfg, ckpt, tmp_path / "one")], check=True,
                   env=_clean_env(), timeout=300)
    res = json.loads((tmp_path / "one" / "results.json").read_text())
    assert res["num_videos"] == 7 and res["failed_videos"] == []
    methods = res["methods"]
    # the default list on a video model: every method that needs no trained selectors of its own
    assert set(methods) == {"original", "interpreter", "random", "attention", "temporal_difference",
                            "tome", "evit", "rlt", "rlt_threshold"}
    interp_ratio = methods["interpreter"]["kept_ratio"]
    assert 0.05 < interp_ratio < 0.95
    n = 2 * 2 * 2  # patch tokens: 2 frames of a 2x2 grid
    assert res["budget"] == {"match": "ratio", "reference": "interpreter"}
    for m in ("random", "attention", "temporal_difference", "tome", "evit"):
        assert methods[m]["budget"] == {"match": "ratio", "reference": "interpreter"}
        # D = 1 (and the in-block reducers' setting is the kept ratio itself): the setting is
        # the interpreter's kept ratio, clip by clip, and keeps the same token count (at least 1
        # where the interpreter kept none; EViT one fewer where its first stage's fused token
        # is kept as attentive at the second)
        assert methods[m]["per_selection_keep_ratio"] == pytest.approx(interp_ratio)
        assert methods[m]["kept_ratio"] == pytest.approx(interp_ratio,
                                                         abs=(2 if m == "evit" else 1) / n)
    assert methods["original"]["kept_ratio"] == 1.0
    assert all(methods[m]["clips_per_s"] > 0 for m in methods)
    md = (tmp_path / "one" / "results.md").read_text()
    assert "| method | clips/s | kept % | GFLOPs | clip-1 err | video-1 err |" in md


def test_two_process_eval_equals_one_process(tmp_path):
    """7 clips over 2 ranks: the DistributedSampler pads to 8; the duplicate must be dropped."""
    cfg, ckpt = _setup_run(tmp_path, n_test=7)
    env = _clean_env()
    subprocess.run([sys.executable, *_eval_cmd(cfg, ckpt, tmp_path / "one")], check=True,
                   env=env, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(free_port()), *_eval_cmd(cfg, ckpt, tmp_path / "two")],
                   check=True, env=env, timeout=300)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2 and two["num_videos"] == one["num_videos"] == 7
    for m, r in one["methods"].items():
        for key in ("clip1_err", "video1_err", "clip1_top5_err", "kept_ratio", "gflops",
                    "per_class_video1_acc"):
            assert two["methods"][m][key] == pytest.approx(r[key], abs=1e-6), (m, key)


def test_eval_refuses_checkpoint_without_interpreter(tmp_path):
    cfg, _ = _setup_run(tmp_path)
    dense = create_model(MODEL["name"], **{k: v for k, v in MODEL.items() if k != "name"})
    save_model_file(dense, tmp_path / "dense.pt")
    proc = subprocess.run([sys.executable, *_eval_cmd(cfg, tmp_path / "dense.pt", tmp_path / "o")],
                          env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no trained interpreter weights" in proc.stderr


def test_eval_uses_config_stored_in_checkpoint(tmp_path):
    cfg, ckpt = _setup_run(tmp_path)
    from videored.engine.config import load_config, to_dict
    obj = torch.load(ckpt, weights_only=True)
    obj["config"] = to_dict(load_config(cfg))
    torch.save(obj, ckpt)
    cmd = [a for a in _eval_cmd(cfg, ckpt, tmp_path / "o") if a not in ("--config", str(cfg))]
    subprocess.run([sys.executable, *cmd, "--methods", "original,interpreter"], check=True,
                   env=_clean_env(), timeout=300)
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert set(res["methods"]) == {"original", "interpreter"} and res["num_videos"] == 7


def test_failed_video_is_listed_and_counted(tmp_path):
    """Real decoded videos, one of them truncated on disk: scored, listed, never dropped."""
    from videored.data import write_synthetic_dataset
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_classes=2, videos_per_class=1, val_per_class=1,
                            test_per_class=2, seed=0)
    rows = (data / "test.csv").read_text().split("\n")
    broken = data / rows[1].split()[0]
    broken.write_bytes(broken.read_bytes()[:300])  # truncated mp4
    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=64, num_frames=4,
                         depth=1, num_classes=2, selector="interpreter")
    save_model_file(model, tmp_path / "model.pt")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"""
model: {{name: timesformer_jointst_tiny_patch16_224, img_size: 64, num_frames: 4, depth: 1, num_classes: 2}}
data: {{kind: video, root: {data}, batch_size: 3, num_workers: 0, sampling_rate: 8,
        train_jitter_scales: [64, 80]}}
run: {{device: cpu, progress: false}}
""")
    subprocess.run([sys.executable, *_eval_cmd(cfg, tmp_path / "model.pt", tmp_path / "o"),
                    "--methods", "original,interpreter"], check=True, env=_clean_env(), timeout=300)
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["num_videos"] == 4
    assert len(res["failed_videos"]) == 1 and res["failed_videos"][0].endswith(broken.name)
    reason = res["failure_reasons"][res["failed_videos"][0]]  # the decoder's words, not C++ locations
    assert reason and ".cc:" not in reason and "failure_reasons" not in res["methods"]["original"], reason
    assert res["methods"]["original"]["num_scored"] == 3
    assert "1 failed to decode" in (tmp_path / "o" / "results.md").read_text()


def test_image_eval_table2_layout(tmp_path):
    """DeiT on an ImageNet-style folder: top-1 / top-5 in the Table 2 layout, every image scored."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "img" / "val" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                tmp_path / "img" / "val" / c / f"{i}.png")
    model = create_model("deit_tiny_patch16_224", img_size=32, depth=3, num_classes=2,
                         selector="interpreter")
    save_model_file(model, tmp_path / "model.pt")
    cfg = tmp_path / "img.yaml"
    cfg.write_text(f"""
model: {{name: deit_tiny_patch16_224, img_size: 32, depth: 3, groups: 3, num_classes: 2}}
data: {{kind: image, root: {tmp_path / 'img'}, batch_size: 4, num_workers: 0}}
run: {{device: cpu, progress: false}}
""")
    subprocess.run([sys.executable, *_eval_cmd(cfg, tmp_path / "model.pt", tmp_path / "o"),
                    "--split", "val"], check=True, env=_clean_env(), timeout=300)
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["num_videos"] == 6 and res["video"] is False
    for r in res["methods"].values():
        assert r["clip1_err"] == r["video1_err"]  # one view per image
        assert r["clip1_top5_err"] == 0.0  # 2 classes
    assert "| method | img/s | kept % | GFLOPs | top-1 acc | top-5 acc |" in (
        tmp_path / "o" / "results.md").read_text()

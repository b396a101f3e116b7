"""Training on real decoded video files: the shipped quickstart config on a small synthetic set."""
import json

import pytest
import torch

from _engine_utils import REPO
from videored.engine.builders import build_dataset
from videored.engine.config import load_config
from videored.engine.trainer import train


def _cfg(root, *extra):
    shrink = [f"data.root={root}", "model.num_classes=2", "model.num_frames=4", "model.depth=1",
              "model.kwargs={embed_dim: 48, num_heads: 2}", "data.batch_size=2", "data.num_workers=0",
              "data.sampling_rate=14", "run.progress=false", "run.log_every=1"]
    return load_config(REPO / "configs/quickstart/jointst_tiny_synth.yaml", shrink + list(extra))


def test_build_dataset_video_splits(synth_root):
    from videored.engine.builders import build_model
    from videored.normalization import resolve_normalization

    cfg = _cfg(synth_root)
    with pytest.raises(ValueError, match="not resolved"):  # never a guessed normalization
        build_dataset(cfg, "train")
    resolve_normalization(cfg, build_model(cfg))  # a new model: videored's video default
    assert cfg.data.mean == [0.45] * 3 and cfg.data.std == [0.225] * 3
    train_set = build_dataset(cfg, "train")
    item = train_set[0]
    assert item["video"].shape == (3, 4, 64, 64) and item["label"] in (0, 1)
    assert len(build_dataset(cfg, "val", num_spatial_crops=3)) == 2 * 3  # videos x crops
    masked = build_dataset(cfg, "val", return_masks=True)
    assert masked[0]["mask"].shape == (4, 64, 64)
    with pytest.raises(FileNotFoundError, match="nosplit.csv"):
        build_dataset(cfg, "nosplit")


def test_train_on_decoded_videos(synth_root, tmp_path):
    cfg = _cfg(synth_root, "schedule.supervised_epochs=1", "schedule.interpreter_epochs=1",
               "schedule.finetune_epochs=1")
    summary = train(cfg, tmp_path)
    assert [s["stage"] for s in summary["stages"]] == ["supervised", "interpreter0", "finetune0"]
    assert summary["global_steps"] == 3 * 2  # 4 training videos / batch 2, three stages
    for stage in summary["stages"]:
        assert stage["val"]["samples"] == 2 and stage["val"]["failed"] == 0
        assert all(isinstance(v, float) and v == v for v in stage["train"].values())  # no NaN
    assert summary["stages"][0]["val"]["kept"] == 1.0  # supervised: dense
    stored = torch.load(tmp_path / "model.pt", weights_only=True)
    assert stored["config"]["data"]["root"] == str(synth_root)
    assert json.loads((tmp_path / "summary.json").read_text())["global_steps"] == 6

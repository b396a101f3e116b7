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


def test_two_clips_per_video_train_and_resume_exactly(synth_root, tmp_path):
    """data.clips_per_video 2: every step the model sees batch_size clips, two from each video;
    an epoch visits every video once (4 videos, 2 a step: 2 steps). A run with 2 DataLoader
    workers, killed mid-epoch and resumed, ends with the weights of an uninterrupted run that
    loaded everything in the main process: each item's draws depend on (epoch, index) only."""
    from _engine_utils import assert_same_weights, kill_then_resume
    from videored.engine.builders import build_model
    from videored.engine.trainer import seed_everything

    cfg = _cfg(synth_root, "data.batch_size=4", "data.clips_per_video=2", "schedule.stages=[supervised]",
               "schedule.supervised_epochs=2", "run.ckpt_every_steps=1")
    seed_everything(cfg.run.seed)  # what train() does before it builds the model
    model = build_model(cfg)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    summary = train(cfg, tmp_path / "ref", model=model)
    assert summary["global_steps"] == 2 * 2
    assert seen[:4] == [4, 4, 4, 4]  # training forwards: 4 clips = 2 videos x 2 clips
    assert [e["items"] for e in summary["substitutions"]["epochs"]] == [4, 4]  # videos, every one once

    run = kill_then_resume(cfg, tmp_path, 3, "data.num_workers=2")
    assert_same_weights(tmp_path / "ref" / "model.pt", run / "model.pt")

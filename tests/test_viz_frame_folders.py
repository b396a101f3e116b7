"""`videored visualize` on frame folders (DAVIS-style) and with the explanation baselines."""
import numpy as np
import torch

from videored import cli
from videored.models import create_model, load_model_file, save_model_file

from _mask_sets import _write_davis


def _setup(tmp_path):
    _write_davis(tmp_path / "davis", {"bear": 8, "car": 6})
    torch.manual_seed(0)
    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=16, patch_size=8,
                         num_frames=2, depth=2, num_classes=3, embed_dim=24, num_heads=3,
                         selector="interpreter")
    save_model_file(model, tmp_path / "m.pt",
                    config={"data": {"sampling_rate": 2, "target_fps": 24}})
    return tmp_path / "davis" / "JPEGImages" / "480p", tmp_path / "m.pt"


def test_a_frame_folder_is_drawn_as_the_dataset_sees_it(tmp_path, capsys):
    from videored.data.davis_set import davis_clips
    from videored.viz.inputs import prepare_input

    frames, ckpt = _setup(tmp_path)
    model = load_model_file(ckpt).eval()
    prepared = prepare_input(frames / "bear", model, sampling_rate=2, target_fps=24)
    item = davis_clips(tmp_path / "davis", num_frames=2, sampling_rate=2, target_fps=24,
                       crop_size=16, num_spatial_crops=1)[0]
    assert torch.equal(prepared.x, item["video"]) and torch.equal(prepared.mask, item["mask"])
    out = tmp_path / "figs"
    assert cli.main(["visualize", "--checkpoint", str(ckpt), "-p", str(frames / "bear"),
                     "-o", str(out)]) == 0
    assert (out / "bear_interpreter.png").is_file()
    # a folder of frame folders: every video, here with an explanation baseline
    assert cli.main(["visualize", "--checkpoint", str(ckpt), "-p", str(frames),
                     "-o", str(out), "--method", "chefer"]) == 0
    assert sorted(p.name for p in out.glob("*_chefer.png")) == ["bear_chefer.png",
                                                               "car_chefer.png"]


def test_explanations_keep_the_interpreters_fraction_in_visualize(tmp_path):
    from videored.commands.visualize import _run_methods
    from videored.viz.inputs import prepare_input

    frames, ckpt = _setup(tmp_path)
    model = load_model_file(ckpt).eval()
    x = prepare_input(frames / "car", model, sampling_rate=2, target_fps=24).x
    with torch.no_grad():
        res, notes, merged, _ = _run_methods(model, x, ["interpreter", "rollout", "gradcam"], None)
    assert not merged  # no in-block reducer among them: no merged-token groups to draw
    kept = res["interpreter"][1][-1].sum()
    n = model.num_patches
    for m in ("rollout", "gradcam"):
        scores, keep = res[m][0][-1], res[m][1][-1]
        assert keep.sum() == max(1, round(kept / n * n))
        assert scores[keep].min() >= scores[~keep].max()
        assert "explanation-only" in notes[m]
    assert np.all(res["rollout"][0] >= 0)

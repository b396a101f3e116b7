"""What SPViT, SViT and RLT do beyond keep / drop, drawn from their outputs: SPViT's package
token, SViT's reactivated tokens (distinct colours), RLT's runs over time (each kept token by its
run length). Hand-computed cases for the data, pixel values for the drawing, and the files
`videored visualize` writes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from videored import cli
from videored.data.synthetic import render_video, write_video
from videored.models import create_model, save_model_file
from videored.models.svit import reactivated
from videored.viz import figures
from videored.viz.heatmap import colormap_lut, tint
from videored.viz.panels import method_panels


def test_reactivated_by_hand():
    # gate 0 keeps {0, 1}; gate 1 keeps {1, 2}; gate 2 keeps {0, 3}
    keep = [torch.tensor([[1, 1, 0, 0]]), torch.tensor([[0, 1, 1, 0]]),
            torch.tensor([[1, 0, 0, 1]])]
    keep = [k.bool() for k in keep]
    # 0: pruned at gate 1, back at gate 2; 1: never back; 2: pruned at 0, back at 1; 3: at 2
    assert reactivated(keep).tolist() == [[True, False, True, True]]
    assert reactivated([torch.ones(1, 4, dtype=torch.bool)] * 3).tolist() == [[False] * 4]


def test_tint_blends_towards_the_colour_only_where_marked():
    frames = np.full((1, 2, 2, 3), 100, np.uint8)
    where = np.array([[[True, False], [False, False]]])
    out = tint(frames, where, (255, 0, 255), alpha=0.6)
    assert out[0, 0, 0].tolist() == [193, 40, 193]  # 0.4 * 100 + 0.6 * (255, 0, 255)
    assert (out[0, 1] == 100).all() and (out[0, 0, 1] == 100).all()


def _static_square_clip():
    """(1, 3, 4, 32, 32): a static random background; the top-left patch changes every frame."""
    x = torch.randn(1, 3, 1, 32, 32, generator=torch.Generator().manual_seed(0)).repeat(1, 1, 4, 1, 1)
    for t in range(4):
        x[0, :, t, :16, :16] += float(t)
    return x


def test_panel_marks_are_the_methods_own_data():
    torch.manual_seed(0)
    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=4,
                         depth=4, num_classes=3, pruners=["spvit", "svit"]).eval()
    x = _static_square_clip()
    with torch.no_grad():
        outputs = {m: model(x, selector=m, **({"setting": 0.5} if m in ("spvit", "svit") else {}))
                   for m in ("rlt_threshold", "spvit", "svit")}
    _, _, groups, marks = method_panels(model, outputs)
    kind, runs = marks["rlt_threshold"]
    # patch 0 changes every frame: four runs of 1; the other 3 positions: one run of 4 at t = 0
    assert kind == "runs" and runs.shape == (4, 2, 2)
    assert runs[:, 0, 0].tolist() == [1, 1, 1, 1]
    assert runs[0].reshape(-1)[1:].tolist() == [4, 4, 4] and (runs[1:].reshape(3, -1)[:, 1:] == 0).all()
    kind, package = marks["spvit"]
    assert kind == "package"
    np.testing.assert_array_equal(package.reshape(-1), ~outputs["spvit"].keep[-1][0].numpy())
    assert package.sum() == 16 - 8  # budget 0.5 of 16 patches: 8 folded into the package
    assert "spvit" in groups  # the package's patches are one merged group (its source row)
    kind, back = marks["svit"]
    assert kind == "reactivated"
    np.testing.assert_array_equal(back.reshape(-1), reactivated(outputs["svit"].keep)[0].numpy())


def test_marks_figure_pixels(tmp_path):
    frames = np.full((2, 32, 32, 3), 100, np.uint8)
    package = np.zeros((2, 2, 2), bool)
    package[1, 1, 1] = True  # frame 1, bottom-right patch (the corner text sits top-left)
    layout = figures.marks_figure(tmp_path / "p.png", frames, "package", package, 16)
    with Image.open(tmp_path / "p.png") as im:
        png = np.asarray(im.convert("RGB"))
    top, left = layout.offsets[1][1]
    panel = png[top:top + 32, left:left + 32]
    assert (panel[20:28, 20:28] == [193, 40, 193]).all()  # 0.4 * 100 + 0.6 * magenta
    assert (panel[20:28, 4:12] == 100).all()
    top, left = layout.offsets[1][0]
    assert (png[top + 18:top + 30, left + 18:left + 30] == 100).all()  # frame 0: nothing marked
    top, left = layout.offsets[0][1]  # row 1: the frame as it is
    assert (png[top + 18:top + 30, left + 18:left + 30] == 100).all()
    runs = np.array([[[1, 1], [2, 1]], [[1, 1], [0, 1]]])  # frame-1 bottom-left: dropped (run 0)
    layout = figures.marks_figure(tmp_path / "r.png", frames, "runs", runs, 16)
    with Image.open(tmp_path / "r.png") as im:
        png = np.asarray(im.convert("RGB"))
    top, left = layout.offsets[1][1]
    # dropped (run 0): the jet colour of 0 over the frame, faded to grey (render_overlays)
    heated = np.rint(0.5 * 100 + 0.5 * colormap_lut("jet")[0].astype(np.float32))
    grey = np.rint(0.2 * heated + 0.8 * 128)
    assert (png[top + 20:top + 28, left + 4:left + 12] == grey).all()
    top, left = layout.offsets[1][0]
    long_run, short_run = png[top + 24, left + 8], png[top + 24, left + 24]
    assert not np.array_equal(long_run, short_run)  # run 2 and run 1 in different colours
    with pytest.raises(ValueError, match="unknown mark kind"):
        figures.marks_figure(tmp_path / "x.png", frames, "halo", package, 16)


def test_visualize_writes_the_marks_of_each_method(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=4,
                         depth=4, num_classes=4, selector="interpreter", pruners=["spvit", "svit"])
    save_model_file(model, tmp_path / "m.pt", config={"data": {"sampling_rate": 4,
                                                               "target_fps": 30}})
    frames, _ = render_video(1, 4, np.random.default_rng(0))
    write_video(tmp_path / "synth.mp4", frames, fps=30)
    out = tmp_path / "out"
    assert cli.main(["visualize", "--checkpoint", str(tmp_path / "m.pt"), "-p",
                     str(tmp_path / "synth.mp4"), "-o", str(out), "--method", "all",
                     "--kept-ratio", "0.5"]) == 0
    names = {p.name for p in out.glob("*.png")}
    for name in ("synth_spvit_package.png", "synth_spvit_native_package.png",
                 "synth_svit_reactivated.png", "synth_svit_native_reactivated.png",
                 "synth_rlt_runs.png", "synth_rlt_threshold_runs.png", "synth_spvit_groups.png"):
        assert name in names, (name, sorted(names))
    with Image.open(out / "synth_spvit_package.png") as im:
        assert im.format == "PNG"
    bare = create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=4,
                        depth=1, num_classes=4, selector="interpreter")
    save_model_file(bare, tmp_path / "bare.pt")
    with pytest.raises(SystemExit, match="spvit decides with trained spvit selectors"):
        cli.main(["visualize", "--checkpoint", str(tmp_path / "bare.pt"), "-p",
                  str(tmp_path / "synth.mp4"), "-o", str(out), "--method", "spvit"])

"""`videored visualize` end to end on real video files (decord) and images."""
import numpy as np
import pytest
import torch
from PIL import Image

from videored import cli
from videored.data import VideoClipDataset, render_video, save_masks, write_video
from videored.models import create_model, save_model_file
from videored.viz import figures
from videored.viz.heatmap import mask_outline, patch_grid, render_overlays
from videored.viz.inputs import prepare_input, video_frames_uint8

METHODS = ("interpreter", "random", "attention", "temporal_difference", "tome", "evit")
MERGING = ("tome", "evit")  # also write <stem>_<method>_groups.png


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz_cmd")
    torch.manual_seed(0)
    video_model = create_model("timesformer_jointst_tiny_patch16_224", img_size=32,
                               num_frames=4, depth=1, num_classes=4, selector="interpreter")
    save_model_file(video_model, root / "video.pt",
                    config={"data": {"sampling_rate": 4, "target_fps": 30}})
    image_model = create_model("deit_tiny_patch16_224", img_size=32, depth=3, num_classes=5,
                               selector="interpreter")
    save_model_file(image_model, root / "image.pt")
    frames, masks = render_video(1, 4, np.random.default_rng(0))  # landscape, 30 fps
    write_video(root / "synth.mp4", frames, fps=30)
    save_masks(root / "synth.mp4", masks)
    portrait = np.random.default_rng(1).integers(0, 256, (20, 96, 64, 3), dtype=np.uint8)
    write_video(root / "portrait.mp4", portrait, fps=25)
    narrow = np.random.default_rng(1).integers(0, 256, (12, 64, 48, 3), dtype=np.uint8)
    write_video(root / "narrow.mp4", narrow, fps=24)  # 48 px wide: decord 0.6 cannot read it
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
                    ).save(root / "photo.png")
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    return root


def _run(*argv):
    return cli.main(["visualize", *map(str, argv)])


def _layout_of(png, rows, cols, panel, label_px=0):
    """The layout that fits the PNG's height (the title's line count is the unknown)."""
    extra = png.shape[0] - figures.GAP - rows * (panel + figures.GAP)
    assert extra % figures.LINE_PX == 0 and extra > 0, "height is not title + panel rows"
    lay = figures.grid_layout(rows, cols, (panel, panel), title_lines=extra // figures.LINE_PX,
                              label_px=label_px, colorbar_px=56)
    assert png.shape[1] == lay.width
    return lay


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_video_all_methods_writes_the_expected_files(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run("--checkpoint", files / "video.pt", "-p", files / "synth.mp4", "-o", out,
                "--method", "all", "--gif") == 0
    printed = capsys.readouterr().out.split()
    video_only = ("rlt", "rlt_threshold")  # a video model without trained pruners: RLT too
    expected = [out / f"synth_{m}.{ext}" for m in (*METHODS, *video_only) for ext in ("png", "gif")]
    expected += [out / f"synth_{m}_groups.png" for m in MERGING] + [out / "synth_all.png"]
    expected += [out / f"synth_{m}_runs.png" for m in video_only]  # RLT's runs over time
    assert sorted(printed) == sorted(map(str, expected))
    assert all(p.is_file() for p in expected)
    with Image.open(out / "synth_interpreter.gif") as gif:
        assert gif.n_frames == 4
    all_png = _png(out / "synth_all.png")
    assert all_png.shape[0] > 4 * 32  # four method rows


def test_video_figure_shows_the_models_decisions(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run("--checkpoint", files / "video.pt", "-p", files / "portrait.mp4", "-o", out) == 0
    png = _png(out / "portrait_interpreter.png")
    lay = _layout_of(png, 2, 4, 32)
    # reference: the same input through the model, rendered by the pure functions
    from videored.models import load_model_file
    model = load_model_file(files / "video.pt").eval()
    prepared = prepare_input(files / "portrait.mp4", model, sampling_rate=4, target_fps=30)
    with torch.no_grad():
        res = model(prepared.x[None], selector="interpreter")
    scores, keep = patch_grid(res.scores[0][0], model.grid), patch_grid(res.keep[0][0], model.grid)
    heated, greyed, _ = render_overlays(video_frames_uint8(prepared), scores, keep, 16)
    for t in range(4):
        for row, expected in ((0, heated[t]), (1, greyed[t])):
            top, left = lay.offsets[row][t]
            np.testing.assert_array_equal(png[top + 16:top + 32, left:left + 32], expected[16:])


def test_video_input_is_the_test_datasets_centre_clip(files, tmp_path):
    """Any size / orientation / fps: the same frames, resize and crop as VideoClipDataset."""
    from videored.models import load_model_file
    model = load_model_file(files / "video.pt")
    prepared = prepare_input(files / "portrait.mp4", model, sampling_rate=4, target_fps=30)
    (tmp_path / "one.csv").write_text(f"{files / 'portrait.mp4'} 0\n")
    ds = VideoClipDataset(tmp_path / "one.csv", mode="test", num_frames=4, sampling_rate=4,
                          target_fps=30, crop_size=32, num_spatial_crops=1)
    torch.testing.assert_close(prepared.x, ds[0]["video"], rtol=0, atol=0)
    assert prepared.description == ("centre 32x32 crop (short side -> 32), centred clip of 4 "
                                    "frames, stride 4 at 30 fps")


def test_object_masks_beside_the_video_are_cropped_like_the_dataset(files, tmp_path, capsys):
    from videored.models import load_model_file
    model = load_model_file(files / "video.pt")
    prepared = prepare_input(files / "synth.mp4", model, sampling_rate=4, target_fps=30)
    (tmp_path / "one.csv").write_text(f"{files / 'synth.mp4'} 1\n")
    ds = VideoClipDataset(tmp_path / "one.csv", mode="test", num_frames=4, sampling_rate=4,
                          target_fps=30, crop_size=32, num_spatial_crops=1, return_masks=True)
    assert prepared.mask is not None and prepared.mask.any()
    torch.testing.assert_close(prepared.mask, ds[0]["mask"], rtol=0, atol=0)
    assert prepare_input(files / "portrait.mp4", model, sampling_rate=4,
                         target_fps=30).mask is None
    out = tmp_path / "out"
    assert _run("--checkpoint", files / "video.pt", "--csv", tmp_path / "one.csv", "-o", out) == 0
    png = _png(out / "synth_interpreter.png")
    lay = _layout_of(png, 2, 4, 32)
    outline = mask_outline(prepared.mask.numpy())
    assert outline[:, 16:].any()  # the checked rows (below the corner label) hold outline pixels
    for t in range(4):
        top, left = lay.offsets[1][t]
        panel = png[top:top + 32, left:left + 32]
        assert (panel[16:][outline[t][16:]] == 255).all()


def test_decord_failures_fall_back_to_pyav(files, tmp_path):
    from videored.models import load_model_file
    model = load_model_file(files / "video.pt")
    prepared = prepare_input(files / "narrow.mp4", model, sampling_rate=4, target_fps=30)
    (tmp_path / "one.csv").write_text(f"{files / 'narrow.mp4'} 0\n")
    ds = VideoClipDataset(tmp_path / "one.csv", mode="test", num_frames=4, sampling_rate=4,
                          target_fps=30, crop_size=32, num_spatial_crops=1, backend="pyav")
    torch.testing.assert_close(prepared.x, ds[0]["video"], rtol=0, atol=0)


def test_csv_mode_skips_bad_videos_and_renders_the_rest(files, tmp_path, capsys):
    csv = tmp_path / "list.csv"
    csv.write_text(f"{files / 'broken.mp4'} 0\n{files / 'synth.mp4'} 1\n"
                   f"{files / 'missing.mp4'} 2\n{files / 'portrait.mp4'} 3\n")
    out = tmp_path / "out"
    assert _run("--checkpoint", files / "video.pt", "--csv", csv, "--limit", 3, "-o", out,
                "--method", "random", "--keep-ratio", "0.25") == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / "synth_random.png")]
    assert "skipped" in captured.err and "broken.mp4" in captured.err
    assert "missing.mp4" in captured.err and "skipped 2 inputs" in captured.err


def test_baselines_default_to_the_interpreters_kept_fraction(files):
    from videored.commands.visualize import _run_methods
    from videored.models import load_model_file
    model = load_model_file(files / "video.pt").eval()
    model.interpreters[0].threshold = 0.5  # a mixed keep pattern on this random model
    x = prepare_input(files / "synth.mp4", model, sampling_rate=4, target_fps=30).x
    with torch.no_grad():
        matched, notes, _, _ = _run_methods(model, x, list(METHODS), None)
        fixed, _, _, _ = _run_methods(model, x, ["random"], 0.25)
    kept = matched["interpreter"][1].mean()
    for m in METHODS[1:]:
        # one block of ToMe at most halves the 16 patches: it cannot keep fewer than 8
        assert matched[m][1].mean() == pytest.approx(max(kept, 0.5) if m == "tome" else kept)
        assert "the interpreter's kept ratio" in notes[m]
    assert fixed["random"][1].mean() == pytest.approx(0.25)  # 4 of 16 patches


def test_image_model_one_panel_per_group(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run("--checkpoint", files / "image.pt", "-p", files / "photo.png", "-o", out,
                "--method", "all", "--zoom", 2) == 0
    png = _png(out / "photo_interpreter.png")
    _layout_of(png, 2, 3, 64)  # row 1: scores of groups 1..3, row 2: after each group (x2)
    assert (out / "photo_all.png").is_file() and not (out / "photo_random.gif").exists()


def test_bad_inputs_give_clear_errors(files, tmp_path, capsys):
    assert _run("--checkpoint", files / "video.pt", "-p", files / "photo.png",
                "-o", tmp_path) == 1
    assert "is an image but the model is a video model" in capsys.readouterr().err
    baseline = create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=4,
                            depth=1, num_classes=4, selector="random")
    save_model_file(baseline, tmp_path / "baseline.pt")
    with pytest.raises(SystemExit, match="no interpreter"):
        _run("--checkpoint", tmp_path / "baseline.pt", "-p", files / "synth.mp4", "-o", tmp_path)
    assert _run("--checkpoint", tmp_path / "baseline.pt", "-p", files / "synth.mp4",
                "-o", tmp_path, "--method", "all") == 0  # baselines only
    names = sorted(p.name for p in tmp_path.glob("synth_*.png"))
    assert names == ["synth_all.png", "synth_attention.png", "synth_evit.png",
                     "synth_evit_groups.png", "synth_random.png", "synth_rlt.png",
                     "synth_rlt_runs.png", "synth_rlt_threshold.png", "synth_rlt_threshold_runs.png",
                     "synth_temporal_difference.png", "synth_tome.png", "synth_tome_groups.png"]
    from videored.commands.visualize import _run_methods
    from videored.models import load_model_file
    model = load_model_file(tmp_path / "baseline.pt").eval()
    x = prepare_input(files / "synth.mp4", model, sampling_rate=4, target_fps=30).x
    with torch.no_grad():
        results, notes, _, _ = _run_methods(model, x, ["random"], None)
    assert notes["random"] == "keep ratio 0.500 per selection (model default)"  # nothing to match
    assert results["random"][1].mean() == pytest.approx(0.5)


def test_tome_groups_figure_paints_the_merged_groups(files, tmp_path, capsys):
    """`--method tome` draws the final tokens' patch groups from the source tracking."""
    from videored.commands.visualize import _run_methods
    from videored.models import load_model_file
    from videored.viz.heatmap import group_edges, group_mean_colours, paint
    from videored.viz.inputs import video_frames_uint8

    out = tmp_path / "out"
    assert _run("--checkpoint", files / "video.pt", "-p", files / "synth.mp4", "-o", out,
                "--method", "tome", "--kept-ratio", "0.5") == 0
    model = load_model_file(files / "video.pt").eval()
    prepared = prepare_input(files / "synth.mp4", model, sampling_rate=4, target_fps=30)
    with torch.no_grad():
        _, _, groups, _ = _run_methods(model, prepared.x, ["tome"], 0.5)
    grid = groups["tome"]  # (T, gh, gw): 16 patches merged into 8 tokens
    assert grid.shape == (4, 2, 2) and len(np.unique(grid)) == 8
    png = _png(out / "synth_tome_groups.png")
    extra = png.shape[0] - figures.GAP - 2 * (32 + figures.GAP)
    lay = figures.grid_layout(2, 4, (32, 32), title_lines=extra // figures.LINE_PX)
    frames = video_frames_uint8(prepared)
    flat = paint(group_mean_colours(frames, grid, 16), group_edges(grid, 16), (0, 0, 0))
    for t in range(4):
        top, left = lay.offsets[1][t]
        np.testing.assert_array_equal(png[top + 16:top + 32, left:left + 32], flat[t][16:])


def test_benchmark_rows_are_offered_by_name(files, tmp_path, capsys):
    """The explanation rows named like the paper's / benchmark's are drawn by name."""
    out = tmp_path / "out"
    for m in ("raw_attention", "attn_gradcam", "lrp", "transformer_attribution"):
        assert _run("--checkpoint", files / "video.pt", "-p", files / "synth.mp4", "-o", out,
                    "--method", m, "--kept-ratio", "0.5") == 0
        assert (out / f"synth_{m}.png").is_file()
    assert "explanation-only, top 0.500" not in capsys.readouterr().err

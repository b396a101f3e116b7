"""Pure heatmap rendering: patch order, upsampling, colours, overlays, greyed-out patches."""
import numpy as np
import pytest
import torch

from videored.viz.heatmap import (colorize, grey_out, kept_ratio_per_frame, mask_outline,
                                  overlay_heatmap, paint, patch_grid, render_overlays,
                                  to_uint8_frames, upsample_patches)


def test_patch_grid_follows_the_documented_token_order():
    grid = (2, 3, 4)  # T, gh, gw
    g = patch_grid(torch.arange(24), grid)
    for t in range(2):
        for r in range(3):
            for c in range(4):
                assert g[t, r, c] == t * 12 + r * 4 + c  # n -> (n // 12, (n % 12) // 4, n % 4)
    with pytest.raises(ValueError, match="do not fit"):
        patch_grid(torch.arange(23), grid)


def test_known_score_pattern_renders_to_the_expected_nearest_heatmap():
    T, gh, gw, p = 2, 2, 3, 4
    scores = np.arange(T * gh * gw) / (T * gh * gw)  # patch n has score n / 12
    heat = upsample_patches(patch_grid(scores, (T, gh, gw)), p)
    assert heat.shape == (T, gh * p, gw * p)
    for t in range(T):  # every pixel has its patch's value (plain loop reference)
        for y in range(gh * p):
            for x in range(gw * p):
                assert heat[t, y, x] == pytest.approx(scores[t * gh * gw + (y // p) * gw + x // p])
    assert heat[1, 5, 9] == pytest.approx(11 / 12)  # frame 1, patch row 1, col 2: n = 6 + 3 + 2


def test_bilinear_upsampling_interpolates_between_patch_centres():
    heat = upsample_patches(np.array([[0.0, 1.0]]), 4, mode="bilinear")  # (4, 8)
    # pixel x samples source (x + 0.5) / 4 - 0.5, clamped to the two patch centres
    expected = [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1]
    np.testing.assert_allclose(heat, np.tile(expected, (4, 1)), atol=1e-6)
    flat = upsample_patches(np.full((2, 3, 3), 0.3), 16, mode="bilinear")
    np.testing.assert_allclose(flat, 0.3, atol=1e-6)
    with pytest.raises(ValueError, match="upsampling mode"):
        upsample_patches(np.zeros((2, 2)), 4, mode="cubic")


def test_colorize_reads_the_matplotlib_colour_map():
    out = colorize(np.array([0.0, 1.0]), "jet")
    assert out.tolist() == [[0, 0, 128], [128, 0, 0]]  # jet: (0, 0, .5) at 0, (.5, 0, 0) at 1
    import matplotlib
    ref = np.rint(np.asarray(matplotlib.colormaps["viridis"](100 / 255))[:3] * 255)
    assert colorize(np.array(100 / 255), "viridis").tolist() == ref.tolist()


def test_overlay_blends_the_colour_with_the_frame():
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    frames[...] = (100, 50, 200)
    heat = np.zeros((1, 8, 8))
    heat[0, :4, 4:] = 1.0  # the top-right 4x4 block is hot
    out = overlay_heatmap(frames, heat, alpha=0.5, cmap="jet")
    # hot: 0.5 * (100, 50, 200) + 0.5 * (128, 0, 0); cold: + 0.5 * (0, 0, 128)
    assert out[0, 1, 6].tolist() == [114, 25, 100]
    assert out[0, 6, 1].tolist() == [50, 25, 164]
    assert (out[0, :4, 4:] == [114, 25, 100]).all() and (out[0, 4:] == [50, 25, 164]).all()


def test_grey_out_fades_only_dropped_pixels():
    frames = np.full((2, 4, 4, 3), 100, np.uint8)
    frames[1] = 10
    keep = np.zeros((2, 4, 4), bool)
    keep[0, :2] = True
    out = grey_out(frames, keep, strength=0.8, grey=128)
    assert (out[0, :2] == 100).all()  # kept: unchanged
    assert (out[0, 2:] == 122).all()  # round(0.2 * 100 + 0.8 * 128) = round(122.4)
    assert (out[1] == 104).all()  # round(0.2 * 10 + 0.8 * 128) = round(104.4)


def test_kept_ratio_per_frame():
    keep = np.zeros((3, 2, 2), bool)
    keep[0] = True
    keep[1, 0, 0] = True
    np.testing.assert_allclose(kept_ratio_per_frame(keep), [1.0, 0.25, 0.0])


def test_to_uint8_frames_inverts_the_dataset_normalization():
    from videored.data import transforms as T
    from videored.data.video_dataset import KINETICS_MEAN, KINETICS_STD

    frames = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    x = T.normalize(T.to_float_cthw(frames), KINETICS_MEAN, KINETICS_STD)  # (3, T, H, W)
    np.testing.assert_array_equal(to_uint8_frames(x, KINETICS_MEAN, KINETICS_STD), frames)
    assert to_uint8_frames(x[:, 0], KINETICS_MEAN, KINETICS_STD).shape == (1, 5, 7, 3)


def test_model_scores_land_on_the_perturbed_patch():
    """Interpreter scores are per token, so changing the pixels of one patch (frame 2, row 1,
    col 3) must change the upsampled heatmap exactly on that frame's 16x16 block."""
    from videored.models import create_model

    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=64, num_frames=4,
                         depth=1, num_classes=3, selector="interpreter").eval()
    x = torch.randn(1, 3, 4, 64, 64)
    x2 = x.clone()
    x2[:, :, 2, 16:32, 48:64] += 3.0
    with torch.no_grad():
        maps = [upsample_patches(patch_grid(model(v).scores[0][0], model.grid), 16)
                for v in (x, x2)]
    changed = np.abs(maps[0] - maps[1]) > 1e-6  # (T, 64, 64)
    expected = np.zeros_like(changed)
    expected[2, 16:32, 48:64] = True
    np.testing.assert_array_equal(changed, expected)


def test_render_overlays_shapes_and_consistency():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    scores = rng.random((2, 2, 2))
    keep = scores > 0.5
    heated, greyed, kept_heat = render_overlays(frames, scores, keep, 16)
    keep_px = upsample_patches(keep, 16) > 0.5
    np.testing.assert_array_equal(greyed[keep_px], frames[keep_px])
    np.testing.assert_array_equal(kept_heat[keep_px], heated[keep_px])
    np.testing.assert_array_equal(kept_heat[~keep_px], grey_out(heated, keep_px)[~keep_px])


def test_mask_outline_and_paint():
    mask = np.zeros((1, 6, 6), bool)
    mask[0, 1:5, 1:5] = True  # a 4x4 square
    outline = mask_outline(mask)
    expected = mask.copy()
    expected[0, 2:4, 2:4] = False  # the 2x2 interior has all four neighbours inside
    np.testing.assert_array_equal(outline, expected)
    edge = np.zeros((1, 3, 3), bool)
    edge[0, :, 0] = True  # touching the frame border: still outlined
    np.testing.assert_array_equal(mask_outline(edge), edge)
    frames = np.zeros((1, 6, 6, 3), np.uint8)
    out = paint(frames, outline, (255, 0, 7))
    assert (out[outline] == [255, 0, 7]).all() and (out[~outline] == 0).all()
    assert (frames == 0).all()  # the input is not modified

"""PNG / GIF layouts: valid files whose panels are, pixel for pixel, the rendered arrays."""
import numpy as np
import pytest
from PIL import Image

from videored.viz import figures
from videored.viz.heatmap import mask_outline, paint, render_overlays

TEXT_PX = 16  # the corner label covers at most the top 16 rows of a panel


def _read_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _assert_panel(png, layout, r, c, expected):
    top, left = layout.offsets[r][c]
    h, w = layout.panel_hw
    got = png[top:top + h, left:left + w]
    np.testing.assert_array_equal(got[TEXT_PX:], expected[TEXT_PX:])


def _case(T=3, size=48, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8)
    g = size // 16
    scores = rng.random((T, g, g))
    return frames, scores, scores > 0.5


def test_grid_layout_geometry():
    lay = figures.grid_layout(2, 3, (10, 20), title_lines=2, label_px=30, colorbar_px=50)
    g = figures.GAP
    assert lay.offsets[0][0] == (g + 2 * figures.LINE_PX, g + 30)
    assert lay.offsets[1][2] == (g + 2 * figures.LINE_PX + 10 + g, g + 30 + 2 * (20 + g))
    assert lay.width == g + 30 + 3 * (20 + g) + 50
    assert lay.height == g + 2 * figures.LINE_PX + 2 * (10 + g)


def test_video_figure_layout_and_pixels(tmp_path):
    frames, scores, keep = _case()
    lay = figures.video_figure(tmp_path / "v.png", frames, scores, keep, 16,
                               title="interpreter | clip.mp4", threshold=0.5)
    png = _read_png(tmp_path / "v.png")
    assert png.shape == (lay.height, lay.width, 3)
    assert len(lay.offsets) == 2 and len(lay.offsets[0]) == 3
    heated, greyed, _ = render_overlays(frames, scores, keep, 16)
    for t in range(3):
        _assert_panel(png, lay, 0, t, heated[t])  # row 1: heatmap overlay
        _assert_panel(png, lay, 1, t, greyed[t])  # row 2: dropped patches greyed
    # the colour bar sits right of the first row: jet's dark red (score 1) near its top
    top, left = lay.offsets[0][-1]
    bar = png[top:top + 48, left + 48:].reshape(-1, 3).astype(int)
    assert (np.abs(bar - [128, 0, 0]).sum(1) < 40).any()
    # the kept ratio is written in the top-left corner of each heatmap panel: not the panel
    assert not np.array_equal(png[top:top + TEXT_PX, left:left + 48], heated[2][:TEXT_PX])


def test_object_mask_is_outlined_on_the_greyed_row(tmp_path):
    frames, scores, keep = _case(T=2)
    mask = np.zeros((2, 48, 48), bool)
    mask[:, 20:40, 10:30] = True
    lay = figures.video_figure(tmp_path / "o.png", frames, scores, keep, 16, object_mask=mask)
    png = _read_png(tmp_path / "o.png")
    heated, greyed, _ = render_overlays(frames, scores, keep, 16)
    outlined = paint(greyed, mask_outline(mask))
    for t in range(2):
        _assert_panel(png, lay, 0, t, heated[t])
        _assert_panel(png, lay, 1, t, outlined[t])
    top, left = lay.offsets[1][0]
    assert (png[top + 20, left + 10:left + 30] == 255).all()  # the top edge of the object


def test_zoom_enlarges_panels_by_pixel_repetition(tmp_path):
    frames, scores, keep = _case(T=2, size=32)
    lay = figures.video_figure(tmp_path / "z.png", frames, scores, keep, 16, zoom=3)
    assert lay.panel_hw == (96, 96)
    heated, _, _ = render_overlays(frames, scores, keep, 16)
    _assert_panel(_read_png(tmp_path / "z.png"), lay, 0, 1, heated[1].repeat(3, 0).repeat(3, 1))
    with pytest.raises(ValueError, match="zoom"):
        figures.video_figure(tmp_path / "bad.png", frames, scores, keep, 16, zoom=0)


def test_smooth_video_figure_uses_bilinear_heatmaps(tmp_path):
    frames, scores, keep = _case(T=2)
    lay = figures.video_figure(tmp_path / "s.png", frames, scores, keep, 16, smooth=True)
    heated, _, _ = render_overlays(frames, scores, keep, 16, smooth=True)
    _assert_panel(_read_png(tmp_path / "s.png"), lay, 0, 1, heated[1])


def test_image_groups_figure(tmp_path):
    frames, scores, keep = _case(T=3)
    image = frames[0]
    lay = figures.image_groups_figure(tmp_path / "i.png", image, scores, keep, 16, title="img")
    png = _read_png(tmp_path / "i.png")
    assert png.shape == (lay.height, lay.width, 3)
    heated, greyed, _ = render_overlays(np.repeat(image[None], 3, 0), scores, keep, 16)
    for j in range(3):  # one column per group
        _assert_panel(png, lay, 0, j, heated[j])
        _assert_panel(png, lay, 1, j, greyed[j])


def test_methods_figure_has_one_row_per_method(tmp_path):
    frames, scores, keep = _case(T=2)
    results = {"interpreter": (scores, keep), "random": (scores[::-1], keep[::-1]),
               "attention": (1 - scores, ~keep)}
    lay = figures.methods_figure(tmp_path / "m.png", frames, results, 16, title="all")
    png = _read_png(tmp_path / "m.png")
    assert len(lay.offsets) == 3 and png.shape == (lay.height, lay.width, 3)
    for r, (s, k) in enumerate(results.values()):
        _, _, kept_heat = render_overlays(frames, s, k, 16)
        for t in range(2):
            _assert_panel(png, lay, r, t, kept_heat[t])
    # row labels take room on the left
    assert lay.offsets[0][0][1] > figures.GAP + 6 * len("interpreter")


def test_mismatched_panels_are_rejected(tmp_path):
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="panel \\(0, 1\\)"):
        figures.save_panels(tmp_path / "x.png", [[a, np.zeros((8, 9, 3), np.uint8)]])


def test_gif_has_one_frame_per_sampled_frame(tmp_path):
    _, scores, keep = _case(T=4, size=32)
    rng = np.random.default_rng(3)  # one colour per patch: few colours, so the palette is exact
    frames = rng.integers(0, 256, (4, 2, 2, 3), dtype=np.uint8).repeat(16, 1).repeat(16, 2)
    path = figures.video_gif(tmp_path / "v.gif", frames, scores, keep, 16)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 4
        assert im.size == (2 * 32 + figures.GAP, 32)
        im.seek(3)
        rgb = np.asarray(im.convert("RGB"))
    _, greyed, _ = render_overlays(frames, scores, keep, 16)
    # right half = frame 3 with dropped patches greyed
    np.testing.assert_array_equal(rgb[TEXT_PX:, 32 + figures.GAP:], greyed[3][TEXT_PX:])


def test_merged_groups_by_hand_and_figure(tmp_path):
    """ToMe's picture: each group painted in its mean colour, outlines where groups meet."""
    from videored.viz.heatmap import group_edges, group_mean_colours

    frames = np.zeros((2, 2, 2, 3), np.uint8)  # 2 frames of 2 x 2 patches, patch_size 1
    frames[0, :, :, 0] = [[10, 20], [30, 41]]
    frames[1, :, :, 0] = [[50, 60], [70, 80]]
    groups = np.array([[[0, 0], [1, 2]], [[2, 2], [3, 3]]])  # group 2 spans both frames
    painted = group_mean_colours(frames, groups, 1)[..., 0]
    # group 0: (10 + 20) / 2 = 15; 1: 30; 2: (41 + 50 + 60) / 3 = 50.33 -> 50; 3: 75
    np.testing.assert_array_equal(painted, [[[15, 15], [30, 50]], [[50, 50], [75, 75]]])
    edges = group_edges(groups, 1)
    np.testing.assert_array_equal(edges[0], [[True, True], [True, True]])
    np.testing.assert_array_equal(edges[1], [[True, True], [True, True]])
    # patch_size 2, group 1 = the bottom-right patch: the pixels on both sides of its border
    edges = group_edges(np.array([[[0, 0], [0, 1]]]), 2)[0]
    np.testing.assert_array_equal(edges, [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1], [0, 1, 1, 0]])

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    grid = rng.integers(0, 3, (2, 2, 2))
    layout = figures.groups_figure(tmp_path / "g.png", video, grid, 16)
    png = _read_png(tmp_path / "g.png")
    e = group_edges(grid, 16)
    for t in range(2):
        _assert_panel(png, layout, 0, t, paint(video, e)[t])
        _assert_panel(png, layout, 1, t, paint(group_mean_colours(video, grid, 16), e, (0, 0, 0))[t])

"""PNG and GIF layouts of the redundancy heatmaps (paper Fig. 3 / 4 / 8).

Panels are placed pixel-exactly with `Figure.figimage` (no resampling), so a panel in the PNG is
the very array `videored.viz.heatmap` rendered (tests compare them). Matplotlib is used through
`Figure` + the Agg canvas directly, inside the functions: no pyplot, no global backend switch.

Layouts (returned as `Layout`, pixel offsets of every panel):
- video: row 1 = the T frames with the score heatmap (colour bar at the right, the frame's kept
  ratio in its corner), row 2 = the same frames with dropped patches greyed out.
- image with D groups: row 1 = group j's scores, row 2 = the image after group j's selection
  (kept ratio in the corner), as in paper Fig. 4.
- methods: one row per method, each panel the heatmap on kept patches, dropped ones greyed.
Given an object mask (the synthetic data has them), its outline is drawn in white on the greyed
panels, so what was kept can be compared with where the object is.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .heatmap import (group_edges, group_mean_colours, kept_ratio_per_frame, mask_outline, paint,
                      render_overlays, tint, upsample_patches)

# the marks of `marks_figure`: colour and legend of the bool kinds
MARKS = {"package": ((255, 0, 255), "magenta: the patches folded into SPViT's package token"),
         "reactivated": ((0, 255, 0), "green: patches a gate pruned and a later SViT gate "
                                      "reactivated")}

GAP = 4  # px between panels
FONT = 8  # pt
LINE_PX = 13  # px per title line at FONT pt and 100 dpi


@dataclass
class Layout:
    """Pixel geometry of a saved figure: `offsets[r][c]` = (top, left) of panel (r, c)."""
    width: int
    height: int
    panel_hw: tuple[int, int]
    offsets: list[list[tuple[int, int]]]


def grid_layout(rows: int, cols: int, panel_hw: tuple[int, int], *, title_lines: int = 0,
                label_px: int = 0, colorbar_px: int = 0) -> Layout:
    """Panels of `panel_hw` in a rows x cols grid, GAP px apart, with room for a title (top),
    row labels (left) and a colour bar (right)."""
    h, w = panel_hw
    top0 = GAP + title_lines * LINE_PX
    left0 = GAP + label_px
    offsets = [[(top0 + r * (h + GAP), left0 + c * (w + GAP)) for c in range(cols)]
               for r in range(rows)]
    width = left0 + cols * (w + GAP) + colorbar_px
    height = top0 + rows * (h + GAP)
    return Layout(width=width, height=height, panel_hw=(h, w), offsets=offsets)


def _wrap(title: str, width_px: int) -> list[str]:
    chars = max(20, width_px // 6)  # ~6 px per character at FONT pt, 100 dpi
    return [line for part in title.split("\n") for line in textwrap.wrap(part, chars) or [""]]


def save_panels(path: str | Path, panels: list[list[np.ndarray]], *, title: str = "",
                row_labels: list[str] | None = None,
                corner_texts: list[list[str]] | None = None,
                colorbar: dict | None = None, zoom: int = 1, dpi: int = 100) -> Layout:
    """Write a PNG of uint8 (H, W, 3) panels, all the same size, rows x cols.

    zoom: integer nearest-neighbour enlargement of every panel (small inputs, e.g. 64 px).

    colorbar: {"cmap", "label", "rows": (first, last) panel rows it spans, "threshold": float or
    None (a line at the interpreter's keep threshold)}.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if zoom < 1:
        raise ValueError(f"zoom must be a positive integer, got {zoom}")
    if zoom > 1:
        panels = [[p.repeat(zoom, axis=0).repeat(zoom, axis=1) for p in row] for row in panels]
    rows, cols = len(panels), len(panels[0])
    h, w = panels[0][0].shape[:2]
    label_px = 8 + 6 * max((len(s) for s in row_labels), default=0) if row_labels else 0
    colorbar_px = 56 if colorbar else 0
    base = grid_layout(rows, cols, (h, w), label_px=label_px, colorbar_px=colorbar_px)
    lines = _wrap(title, base.width) if title else []
    layout = grid_layout(rows, cols, (h, w), title_lines=len(lines), label_px=label_px,
                         colorbar_px=colorbar_px)
    W, H = layout.width, layout.height
    fig = Figure(figsize=(W / dpi, H / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            if panel.shape[:2] != (h, w):
                raise ValueError(f"panel ({r}, {c}) is {panel.shape[:2]}, expected {(h, w)}")
            top, left = layout.offsets[r][c]
            # figimage offsets count from the bottom-left corner, in device pixels
            fig.figimage(panel, xo=left, yo=H - top - h, origin="upper", resize=False, zorder=1)
            if corner_texts and corner_texts[r][c]:
                fig.text((left + 2) / W, 1 - (top + 2) / H, corner_texts[r][c], ha="left",
                         va="top", fontsize=FONT - 1, color="white", zorder=3,
                         bbox=dict(facecolor="black", alpha=0.6, pad=1.2, linewidth=0))
        if row_labels:
            top, left = layout.offsets[r][0]
            fig.text((left - 6) / W, 1 - (top + h / 2) / H, row_labels[r], ha="right",
                     va="center", fontsize=FONT)
    for i, line in enumerate(lines):
        fig.text(GAP / W, 1 - (GAP + i * LINE_PX) / H, line, ha="left", va="top", fontsize=FONT)
    if colorbar:
        first, last = colorbar.get("rows", (0, rows - 1))
        y_top = layout.offsets[first][0][0]
        y_bottom = layout.offsets[last][0][0] + h
        x = layout.offsets[0][-1][1] + w + GAP + 4
        cax = fig.add_axes([x / W, 1 - y_bottom / H, 10 / W, (y_bottom - y_top) / H])
        fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colorbar.get("cmap", "jet")), cax=cax)
        cax.tick_params(labelsize=FONT - 2, length=2)
        cax.set_ylabel(colorbar.get("label", "score"), fontsize=FONT - 2, labelpad=1)
        if colorbar.get("threshold") is not None:
            cax.axhline(colorbar["threshold"], color="white", linewidth=1.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", facecolor="white")
    return layout


def video_figure(path: str | Path, frames: np.ndarray, scores_grid: np.ndarray,
                 keep_grid: np.ndarray, patch_size: int, *, title: str = "",
                 smooth: bool = False, threshold: float | None = None,
                 object_mask: np.ndarray | None = None, zoom: int = 1,
                 cmap: str = "jet") -> Layout:
    """Two rows x T frames: heatmap overlay (kept ratio in the corner), dropped patches greyed.

    frames (T, H, W, 3) uint8, scores_grid (T, gh, gw) in [0, 1], keep_grid (T, gh, gw) bool,
    object_mask (T, H, W) bool or None: outlined on the second row.
    """
    heated, greyed, _ = render_overlays(frames, scores_grid, keep_grid, patch_size,
                                        smooth=smooth, cmap=cmap)
    if object_mask is not None:
        greyed = paint(greyed, mask_outline(object_mask))
    ratios = kept_ratio_per_frame(keep_grid)
    T = len(frames)
    corner = [[f"{r:.2f}" for r in ratios], [f"t={t}" for t in range(T)]]
    return save_panels(path, [list(heated), list(greyed)], title=title, corner_texts=corner,
                       colorbar=dict(cmap=cmap, label="informative score", rows=(0, 0),
                                     threshold=threshold), zoom=zoom)


def image_groups_figure(path: str | Path, image: np.ndarray, scores_groups: np.ndarray,
                        keep_groups: np.ndarray, patch_size: int, *, title: str = "",
                        smooth: bool = False, threshold: float | None = None,
                        zoom: int = 1, cmap: str = "jet") -> Layout:
    """Two rows x D groups for an image (paper Fig. 4): row 1 = group j's scores, row 2 = the
    image after group j's selection (kept ratio in the corner).

    image (H, W, 3) uint8, scores_groups / keep_groups (D, gh, gw).
    """
    D = len(scores_groups)
    frames = np.repeat(np.asarray(image)[None], D, axis=0)  # one copy per group
    heated, greyed, _ = render_overlays(frames, scores_groups, keep_groups, patch_size,
                                        smooth=smooth, cmap=cmap)
    ratios = kept_ratio_per_frame(keep_groups)
    corner = [[f"group {j + 1}" for j in range(D)], [f"{r:.2f}" for r in ratios]]
    return save_panels(path, [list(heated), list(greyed)], title=title, corner_texts=corner,
                       colorbar=dict(cmap=cmap, label="informative score", rows=(0, 0),
                                     threshold=threshold), zoom=zoom)


def methods_figure(path: str | Path, frames: np.ndarray, results: dict[str, tuple],
                   patch_size: int, *, title: str = "", smooth: bool = False,
                   kept: dict[str, float] | None = None,
                   object_mask: np.ndarray | None = None, zoom: int = 1,
                   cmap: str = "jet") -> Layout:
    """One row per method: the heatmap on the kept patches, dropped patches greyed.

    frames (T, H, W, 3) uint8; results: method -> (scores_grid (T, gh, gw), keep_grid (T, gh, gw)).
    kept: the kept fraction printed beside each method (default: the mean over the panels).
    object_mask: (T, H, W) bool or None, outlined on every panel.
    """
    outline = None if object_mask is None else mask_outline(object_mask)
    panels, corner, labels = [], [], []
    for method, (scores, keep) in results.items():
        _, _, kept_heat = render_overlays(frames, scores, keep, patch_size, smooth=smooth,
                                          cmap=cmap)
        panels.append(list(kept_heat if outline is None else paint(kept_heat, outline)))
        corner.append([f"{r:.2f}" for r in kept_ratio_per_frame(keep)])
        fraction = kept[method] if kept else float(np.asarray(keep).mean())
        labels.append(f"{method} ({fraction:.2f})")
    return save_panels(path, panels, title=title, row_labels=labels, corner_texts=corner,
                       colorbar=dict(cmap=cmap, label="score", rows=(0, len(panels) - 1)),
                       zoom=zoom)


def groups_figure(path: str | Path, frames: np.ndarray, group_grid: np.ndarray,
                  patch_size: int, *, title: str = "", object_mask: np.ndarray | None = None,
                  zoom: int = 1) -> Layout:
    """Merged groups (ToMe, EViT's fused token): row 1 = the frames with the group outlines in
    white, row 2 = every group painted in its mean colour; the number of groups (tokens) of each
    frame in its corner. frames (T, H, W, 3) uint8, group_grid (T, gh, gw) int.
    """
    edges = group_edges(group_grid, patch_size)
    outlined = paint(frames, edges)
    flat = paint(group_mean_colours(frames, group_grid, patch_size), edges, (0, 0, 0))
    if object_mask is not None:
        outlined = paint(outlined, mask_outline(object_mask), (255, 255, 0))
    tokens = [len(np.unique(np.asarray(g))) for g in group_grid]
    corner = [[f"{n} groups" for n in tokens], [f"t={t}" for t in range(len(frames))]]
    return save_panels(path, [list(outlined), list(flat)], title=title, corner_texts=corner,
                       zoom=zoom)


def marks_figure(path: str | Path, frames: np.ndarray, kind: str, grid: np.ndarray,
                 patch_size: int, *, title: str = "", object_mask: np.ndarray | None = None,
                 zoom: int = 1) -> Layout:
    """Two rows x T frames: the frames as they are, then what a method does beyond keep / drop
    (`viz.panels.method_panels`' marks): "package" / "reactivated" (bool (T, gh, gw)) tint
    those patches in their colour (`MARKS`), their count per frame in the corner; "runs" (int (T, gh, gw) run lengths, RLT)
    colours each kept token by its run length / T on a jet scale, dropped patches greyed, so a
    static patch kept at frame t shows as one warm token followed by grey ones."""
    grid = np.asarray(grid)
    T = len(frames)
    if kind == "runs":
        _, _, shown = render_overlays(frames, grid / T, grid > 0, patch_size)
        corner = [[f"{int((grid[t] > 0).sum())} kept" for t in range(T)]]
        colorbar = dict(cmap="jet", label=f"run length / {T} frames", rows=(1, 1))
    elif kind in MARKS:
        colour, legend = MARKS[kind]
        shown = tint(frames, upsample_patches(grid, patch_size) > 0.5, colour)
        corner = [[f"{int(grid[t].sum())} {kind}" for t in range(T)]]
        title, colorbar = f"{title} | {legend}", None
    else:
        raise ValueError(f"unknown mark kind {kind!r}; choose runs, {', '.join(MARKS)}")
    if object_mask is not None:
        shown = paint(shown, mask_outline(object_mask))
    return save_panels(path, [list(frames), list(shown)], title=title,
                       corner_texts=[[f"t={t}" for t in range(T)], *corner], colorbar=colorbar,
                       zoom=zoom)


def video_gif(path: str | Path, frames: np.ndarray, scores_grid: np.ndarray,
              keep_grid: np.ndarray, patch_size: int, *, smooth: bool = False,
              frame_ms: int = 400, object_mask: np.ndarray | None = None,
              zoom: int = 1, cmap: str = "jet") -> Path:
    """Animated GIF, one frame per sampled frame: heatmap overlay | dropped greyed (object
    outlined when a mask is given), kept ratio written in the corner. 256-colour palette (GIF),
    loops forever."""
    from PIL import Image, ImageDraw

    heated, greyed, _ = render_overlays(frames, scores_grid, keep_grid, patch_size,
                                        smooth=smooth, cmap=cmap)
    if object_mask is not None:
        greyed = paint(greyed, mask_outline(object_mask))
    ratios = kept_ratio_per_frame(keep_grid)
    if zoom > 1:  # (T, H, W, 3) -> (T, zoom*H, zoom*W, 3)
        heated = heated.repeat(zoom, axis=1).repeat(zoom, axis=2)
        greyed = greyed.repeat(zoom, axis=1).repeat(zoom, axis=2)
    T, h, w = heated.shape[:3]
    images = []
    for t in range(T):
        canvas = np.full((h, 2 * w + GAP, 3), 255, np.uint8)
        canvas[:, :w], canvas[:, w + GAP:] = heated[t], greyed[t]
        img = Image.fromarray(canvas)
        ImageDraw.Draw(img).text((3, 2), f"t={t} kept {ratios[t]:.2f}", fill=(255, 255, 255),
                                 stroke_width=1, stroke_fill=(0, 0, 0))
        images.append(img.quantize(colors=256, method=Image.Quantize.MEDIANCUT))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=frame_ms, loop=0)
    return path


def input_figures(out: Path, stem: str, name: str, description: str, frames: np.ndarray,
                  panels: tuple[dict, dict, dict], patch_size: int, *, video: bool,
                  threshold: float, learned: Callable[[str], bool],
                  label: int | None = None, object_mask: np.ndarray | None = None,
                  all_methods: bool = False, gif: bool = False, smooth: bool = False,
                  zoom: int = 1) -> Iterator[Path]:
    """`videored visualize`'s figures of one input, yielding each path as it is written:
    `<stem>_<method>.png` (video: `video_figure`; image: one panel per group), the merged groups
    of in-block reducers (`<stem>_<method>_groups.png`), a method's marks
    (`<stem>_<method>_{package,reactivated,runs}.png`, `marks_figure`), a GIF per method (video, `gif`), and with
    `all_methods` the `<stem>_all.png` comparison. panels: `viz.panels.method_panels`' output;
    frames (T, H, W, 3) uint8 (T = 1 for an image); object_mask (T, H, W) bool or None;
    learned(method): its scores are drawn against the keep threshold."""
    results, notes, groups, marks = panels
    truth = "" if label is None else f", label {label}"
    if object_mask is not None:
        truth += " | white outline: object mask"
    for m, (scores, keep, pred, prob) in results.items():
        title = (f"{m} ({notes[m]}) | {Path(name).name}: {description} | kept "
                 f"{keep[-1].mean():.2f} of the patches | predicted class {pred} "
                 f"(p={prob:.2f}){truth}")
        png = out / f"{stem}_{m}.png"
        thr = threshold if learned(m) else None
        if video:
            video_figure(png, frames, scores[-1], keep[-1], patch_size, title=title,
                         smooth=smooth, threshold=thr, object_mask=object_mask, zoom=zoom)
        else:  # image: one panel per group (paper Fig. 4)
            image_groups_figure(png, frames[0], scores[:, 0], keep[:, 0], patch_size,
                                title=title, smooth=smooth, threshold=thr, zoom=zoom)
        yield png
        if m in groups:  # merged groups: outlines + each group in its mean colour
            png = out / f"{stem}_{m}_groups.png"
            tokens = len(np.unique(groups[m]))
            groups_figure(png, frames, groups[m], patch_size, zoom=zoom,
                          object_mask=object_mask if video else None,
                          title=f"{m} ({notes[m]}) | {Path(name).name}: the {tokens} tokens of "
                                f"the last block and the patches each covers{truth}")
            yield png
        if m in marks:  # SPViT's package, SViT's reactivations, RLT's runs over time
            kind, grid = marks[m]
            png = out / f"{stem}_{m}_{kind}.png"
            marks_figure(png, frames, kind, grid, patch_size, zoom=zoom,
                         object_mask=object_mask if video else None,
                         title=f"{m} ({notes[m]}) | {Path(name).name}: {kind}{truth}")
            yield png
        if gif and video:
            yield video_gif(out / f"{stem}_{m}.gif", frames, scores[-1], keep[-1], patch_size,
                            smooth=smooth, object_mask=object_mask, zoom=zoom)
    if all_methods:
        if video:
            rows = {m: (s[-1], k[-1]) for m, (s, k, _, _) in results.items()}
            shown = frames
        else:  # columns = groups
            rows = {m: (s[:, 0], k[:, 0]) for m, (s, k, _, _) in results.items()}
            shown = np.repeat(frames, next(iter(results.values()))[0].shape[0], axis=0)
        png = out / f"{stem}_all.png"
        kept = {m: float(k[-1].mean()) for m, (_, k, _, _) in results.items()}
        methods_figure(png, shown, rows, patch_size, kept=kept,
                       title=f"{Path(name).name}: {description}", smooth=smooth, zoom=zoom,
                       object_mask=object_mask if video else None)
        yield png


__all__ = ["Layout", "MARKS", "grid_layout", "groups_figure", "image_groups_figure", "input_figures", "marks_figure",
           "methods_figure", "save_panels", "video_figure", "video_gif"]

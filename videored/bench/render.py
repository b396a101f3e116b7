"""Rendering time and file size of the figure layouts: `python -m videored.bench.render`.

Frames are a real synthetic clip (`videored.data.render_video`) resized like the test transform;
scores are random. Prints a markdown table (the numbers in docs/visualization.md).
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np


def main(sizes: tuple[int, ...] = (64, 224), num_frames: int = 8) -> str:
    from videored.data import render_video
    from videored.data import transforms as T
    from videored.viz import figures

    video, _ = render_video(0, 4, np.random.default_rng(0))  # (60, H, W, 3) uint8
    idx = np.linspace(0, len(video) - 1, num_frames).astype(int)
    lines = ["| layout | frames | seconds | file KiB |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            clip = T.short_side_resize(T.to_float_cthw(video[idx]), size)  # (3, T, H', W')
            top, left = T.spatial_crop_offsets(clip.shape[-2], clip.shape[-1], size, 0, 1)
            frames = (T.crop(clip, top, left, size).permute(1, 2, 3, 0).numpy() * 255
                      ).round().astype(np.uint8)  # (T, size, size, 3)
            g = size // 16
            scores = np.random.default_rng(0).random((num_frames, g, g))
            keep = scores > 0.5
            jobs = {
                "video_figure (png)": lambda p: figures.video_figure(
                    p, frames, scores, keep, 16, title="title"),
                "methods_figure, 4 methods (png)": lambda p: figures.methods_figure(
                    p, frames, {m: (scores, keep) for m in "abcd"}, 16),
                "video_gif (gif)": lambda p: figures.video_gif(p, frames, scores, keep, 16),
            }
            figures.video_figure(os.path.join(tmp, "warm.png"), frames, scores, keep, 16)
            for name, job in jobs.items():
                path = os.path.join(tmp, f"{size}_{name.split()[0]}.{name[-4:-1]}")
                start = time.perf_counter()
                job(path)
                seconds = time.perf_counter() - start
                lines.append(f"| {name} | {num_frames} x {size}² | {seconds:.2f} | "
                             f"{os.path.getsize(path) / 1024:.0f} |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()

"""Loader benchmark: training clips per CPU-second of ONE worker, per reader, before/after.

What a GPU needs from its loader is clips per second from all its workers; each worker is one
process on one core, so the number that sizes a node is clips per CPU-second of a worker process
(`time.process_time`: its own CPU, every thread of it, whatever else runs on the machine). Wall
clock is reported too, but on a shared machine it measures the neighbours.

Loaders compared, all in one process, interleaved round by round (the best round kept, as
`timeit` does); item i of every round and loader draws its clips from seed i, so all decode the
same clips:
  today       the loader before the selective decode: decord, float normalization in the worker
              (`VideoClipDataset(backend="decord", output="float")`)
  <reader>    decord / pyav / torchcodec with uint8 output (normalized later on the device);
              `pyav` is the selective path (keyframe runs, non-reference frames skipped)
Two numbers per loader: `decode` (open + decode the item's frames) and `item` (a full training
item: decode + scale jitter + crop + flip [+ normalize]). `clips_per_video` K: K clips per decoded
video, rates per clip. `vs_today`: item clips per CPU-second over today's loader's with one clip
per video on the same video. `cores_per_gpu` at a model speed M clips/s: M / (item clips per
CPU-second), the workers one GPU needs.

Run: `videored data bench` (`--csv LIST` for your own videos); results in docs/data.md.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from videored.data.decoding import backend_available
from videored.data.encoding import write_video
from videored.data.rng import seeded_draws
from videored.data.synthetic import SynthConfig, render_video, write_synthetic_dataset
from videored.data.video_dataset import VideoClipDataset

# Kinetics-400 training clips (the paper's setting): 8 frames 32 apart at 30 fps, 224 crops
K400_SAMPLING = dict(num_frames=8, sampling_rate=32, target_fps=30, crop_size=224, train_jitter_scales=(256, 320))
# clips/s of one GPU in the paper (Table 4, V100): the dense JointST <= 24, IA-RED2 >= 81
PAPER_GPU_CLIPS_PER_S = (24.0, 81.0)
# (label, reader, dataset output); "today" is the baseline every ratio divides by
TODAY = ("today", "decord", "float")
READERS = ("decord", "pyav", "torchcodec")


def make_benchmark_videos(workdir: str | os.PathLike) -> dict[str, dict]:
    """Benchmark inputs under `workdir`: the synthetic set and a 10 s 340x256 30 fps H.264 clip
    (the size of a Kinetics-400 clip after the usual short-side-256 resize). Returns
    {kind: {"csv", "sampling": dataset kwargs}}."""
    workdir = Path(workdir)
    synth = workdir / "synth"
    write_synthetic_dataset(synth, num_classes=4, videos_per_class=4, seed=0)
    cfg = SynthConfig()
    k400 = workdir / "k400like"
    k400.mkdir(parents=True, exist_ok=True)
    # 300 frames of the same moving-clutter renderer at 340x256: real texture and motion, so
    # the H.264 bitstream is as hard to decode as natural video of that size (not flat colour).
    big = SynthConfig(height=256, width=340, num_frames=300, object_travel=(60.0, 70.0))
    frames, _ = render_video(0, 4, np.random.default_rng(0), big)
    write_video(k400 / "clip_340x256_10s.mp4", frames, fps=30, crf=23)
    (k400 / "list.csv").write_text("clip_340x256_10s.mp4 0\n")
    return {
        f"synthetic {cfg.width}x{cfg.height}, {cfg.num_frames / cfg.fps:g} s": {
            "csv": synth / "train.csv",
            "sampling": dict(num_frames=8, sampling_rate=7, target_fps=30, crop_size=64, train_jitter_scales=(64, 80)),
        },
        "H.264 340x256, 10 s, 30 fps": {"csv": k400 / "list.csv", "sampling": dict(K400_SAMPLING)},
    }


def user_video_kinds(csv: str | os.PathLike, sampling: dict | None = None) -> dict[str, dict]:
    """The benchmark input for a user's own `path label` list (every listed video is used)."""
    n = sum(1 for line in Path(csv).read_text().splitlines() if line.strip())
    return {f"{Path(csv).name} ({n} videos)": {"csv": Path(csv), "sampling": dict(sampling or K400_SAMPLING)}}


def cores_per_gpu(clips_per_cpu_second: float, model_clips_per_s: float) -> float:
    """Workers (one core each) needed so the loader keeps up with the model."""
    return model_clips_per_s / clips_per_cpu_second


def loaders(readers: Sequence[str]) -> list[tuple[str, str, str]]:
    """(label, reader, output) of today's loader (when decord is installed) and each installed reader."""
    out = [TODAY] if backend_available("decord") else []
    return out + [(r, r, "uint8") for r in readers if backend_available(r)]


def _item(ds: VideoClipDataset, i: int) -> None:
    """Item i of a round: its clips drawn from seed i, so every loader and every round decodes
    the same clips (with one video, a fixed seed would time one clip position over and over)."""
    ds.set_epoch_seed(i)
    ds[i % len(ds)]


def _decode(ds: VideoClipDataset, i: int) -> None:
    """The decode of item i alone (the same clips as `_item(ds, i)`), without the transforms."""
    with seeded_draws(i, i % len(ds)):
        ds._decode(i % ds.num_videos, [0] * ds.clips_per_video)


def _timed(fn, n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of n calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return time.process_time() - cpu, time.perf_counter() - wall


def run_decode_benchmark(
    workdir: str | os.PathLike | None = None,
    backends: Sequence[str] = READERS,
    clips: int = 20,
    rounds: int = 3,
    csv: str | os.PathLike | None = None,
    model_clips_per_s: Sequence[float] = PAPER_GPU_CLIPS_PER_S,
    clips_per_video: Sequence[int] = (1, 2),
    kinds: dict[str, dict] | None = None,
) -> list[dict]:
    """Time the loaders on the benchmark videos (made in `workdir`, or a temp dir), the user's
    `csv`, or the given `kinds` ({name: {"csv", "sampling"}}).

    Returns one row per (video, loader, clips per video): {"video", "loader", "backend",
    "output", "clips_per_video", "decode_clips_per_cpu_s", "item_clips_per_cpu_s",
    "item_clips_per_s_wall", "ms_cpu_per_item_clip", "vs_today", "cores_per_gpu": {model
    clips/s: workers}, "threads": 1}.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one DataLoader worker = one thread
    tmp = None
    if workdir is None and kinds is None and csv is None:
        tmp = tempfile.TemporaryDirectory(prefix="videored_bench_")
        workdir = tmp.name
    try:
        if kinds is None:
            kinds = user_video_kinds(csv) if csv is not None else make_benchmark_videos(workdir)
        rows = []
        for kind, spec in kinds.items():
            sets = {}
            for label, backend, output in loaders(backends):
                for k in clips_per_video:
                    sets[label, k] = VideoClipDataset(spec["csv"], mode="train", backend=backend, output=output,
                                                      clips_per_video=k, pyav_fallback=False, **spec["sampling"])
            for ds in sets.values():
                _timed(lambda i, ds=ds: _item(ds, i), len(ds))  # warm-up: library init, page cache, index
            best = {key: [float("inf")] * 3 for key in sets}  # decode cpu, item cpu, item wall (s per clip)
            for _ in range(rounds):
                for key, ds in sets.items():
                    per = clips * ds.clips_per_video
                    dec, _ = _timed(lambda i, ds=ds: _decode(ds, i), clips)
                    cpu, wall = _timed(lambda i, ds=ds: _item(ds, i), clips)
                    best[key] = [min(best[key][0], dec / per), min(best[key][1], cpu / per),
                                 min(best[key][2], wall / per)]
            today = best.get((TODAY[0], 1))
            for (label, k), (dec, cpu, wall) in best.items():
                ds = sets[label, k]
                rows.append({
                    "video": kind, "loader": label, "backend": ds.backend, "output": ds.output,
                    "clips_per_video": k,
                    "decode_clips_per_cpu_s": round(1 / dec, 1),
                    "item_clips_per_cpu_s": round(1 / cpu, 1),
                    "item_clips_per_s_wall": round(1 / wall, 1),
                    "ms_cpu_per_item_clip": round(1000 * cpu, 1),
                    "vs_today": round(today[1] / cpu, 2) if today else None,
                    "cores_per_gpu": {f"{m:g}": round(cores_per_gpu(1 / cpu, m), 1) for m in model_clips_per_s},
                    "threads": 1,
                })
        return rows
    finally:
        torch.set_num_threads(threads)
        if tmp is not None:
            tmp.cleanup()


def format_table(rows: list[dict]) -> str:
    """Markdown table of `run_decode_benchmark` rows."""
    gpu = list(rows[0]["cores_per_gpu"]) if rows else []
    lines = [
        "| video | loader | clips/video | decode clips/CPU-s | item clips/CPU-s | ms CPU/clip | item clips/s (wall) "
        "| vs today |" + "".join(f" cores/GPU at {m} clips/s |" for m in gpu),
        "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(gpu),
    ]
    for r in rows:
        vs = "" if r["vs_today"] is None else f"{r['vs_today']:.2f}x"
        lines.append(
            f"| {r['video']} | {r['loader']} | {r['clips_per_video']} | {r['decode_clips_per_cpu_s']} | "
            f"{r['item_clips_per_cpu_s']} | {r['ms_cpu_per_item_clip']} | {r['item_clips_per_s_wall']} | {vs} |"
            + "".join(f" {c} |" for c in r["cores_per_gpu"].values()))
    return "\n".join(lines)


def header() -> str:
    return (f"# {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
            "1 thread per worker; rates per CPU-second of the worker process (best of the rounds)")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20, help="items per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement; the best is kept")
    parser.add_argument("--csv", default=None, help="your own `path label` list (K400 sampling)")
    parser.add_argument("--clips-per-video", default="1,2", help="comma list, e.g. 1,2")
    a = parser.parse_args()
    print(header())
    print(format_table(run_decode_benchmark(clips=a.clips, rounds=a.rounds, csv=a.csv,
                                            clips_per_video=[int(k) for k in a.clips_per_video.split(",")])))

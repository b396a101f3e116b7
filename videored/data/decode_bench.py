"""Loader benchmark: decoded clips/s of ONE worker process, decord vs PyAV.

Two numbers per video kind and backend: `decode` (open the file + decode the clip's frames) and
`item` (a full `VideoClipDataset` train item: decode + scale jitter + crop + flip + normalize).
One process with one torch thread = what each DataLoader worker delivers; multiply by the
number of workers (up to the core count) for a loader's throughput.

`clips_per_video` K (`--clips-per-video 1,2`): K training clips from each decoded video (the
frames of all K decoded in one pass, `VideoClipDataset(clips_per_video=K)`); the rates are per
clip, and `vs_one_clip` divides a row's item rate by the K = 1 row's of the same video and
backend, measured interleaved in the same run.

`--csv LIST` times the user's own videos instead (a `path label` list, Kinetics-400 sampling:
8 x 32 frames at 30 fps, jitter 256-320, 224 crops) and adds, per backend, the cores (= workers)
one GPU needs to feed a model running at the given clips/s (`cores_per_gpu`).

Run: `python -m videored.data.decode_bench` (or `videored data bench`); results in docs/data.md.
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

from videored.data.encoding import write_video
from videored.data.synthetic import SynthConfig, render_video, write_synthetic_dataset
from videored.data.video_dataset import VideoClipDataset


def make_benchmark_videos(workdir: str | os.PathLike) -> dict[str, dict]:
    """Benchmark inputs under `workdir`: the synthetic set and a 10 s 340x256 30 fps H.264 clip
    (the size of a Kinetics-400 clip after the usual short-side-256 resize). Returns
    {kind: {"csv", "sampling": dataset kwargs, "describe"}}."""
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
        "H.264 340x256, 10 s, 30 fps": {
            "csv": k400 / "list.csv",
            "sampling": dict(num_frames=8, sampling_rate=32, target_fps=30, crop_size=224, train_jitter_scales=(256, 320)),
        },
    }


# Kinetics-400 training clips (the paper's setting): 8 frames 32 apart at 30 fps, 224 crops
K400_SAMPLING = dict(num_frames=8, sampling_rate=32, target_fps=30, crop_size=224, train_jitter_scales=(256, 320))
# clips/s of one GPU in the paper (Table 4, V100): the dense JointST <= 24, IA-RED2 >= 81
PAPER_GPU_CLIPS_PER_S = (24.0, 81.0)


def user_video_kinds(csv: str | os.PathLike, sampling: dict | None = None) -> dict[str, dict]:
    """The benchmark input for a user's own `path label` list (every listed video is used)."""
    n = sum(1 for line in Path(csv).read_text().splitlines() if line.strip())
    return {f"{Path(csv).name} ({n} videos)": {"csv": Path(csv), "sampling": dict(sampling or K400_SAMPLING)}}


def cores_per_gpu(item_clips_per_s: float, model_clips_per_s: float) -> float:
    """Workers (one core each) needed so the loader keeps up with the model: model / per-worker rate."""
    return model_clips_per_s / item_clips_per_s


def _time_decode(dataset: VideoClipDataset, clips: int) -> float:
    """Seconds per clip for open + decode of `clips` items' frames, without the transforms:
    the dataset's own decode (its sampling, one pass for its clips_per_video clips)."""
    start_t = time.perf_counter()
    for i in range(clips):
        dataset._decode(i % dataset.num_videos, views=[0] * dataset.clips_per_video)
    return (time.perf_counter() - start_t) / (clips * dataset.clips_per_video)


def _time_items(dataset: VideoClipDataset, clips: int) -> float:
    """Seconds per clip of `clips` dataset items (each gives dataset.clips_per_video clips)."""
    start_t = time.perf_counter()
    for i in range(clips):
        dataset[i % len(dataset)]
    return (time.perf_counter() - start_t) / (clips * dataset.clips_per_video)


def run_decode_benchmark(
    workdir: str | os.PathLike | None = None,
    backends: Sequence[str] = ("decord", "pyav"),
    clips: int = 20,
    rounds: int = 3,
    csv: str | os.PathLike | None = None,
    model_clips_per_s: Sequence[float] = PAPER_GPU_CLIPS_PER_S,
    clips_per_video: Sequence[int] = (1,),
) -> list[dict]:
    """Time both backends on the benchmark videos (made in `workdir`, or a temp dir).

    Each measurement is repeated `rounds` times with the backends interleaved, and the fastest
    round is kept (as `timeit` does): on a shared machine, other load only ever slows a round down.
    Returns one row per (video kind, backend, clips per video): {"video", "backend",
    "clips_per_video", "decode_clips_per_s", "item_clips_per_s", "ms_per_clip_decode",
    "ms_per_clip_item", "frames_per_clip", "threads"} and, when 1 is among `clips_per_video`,
    "vs_one_clip" (item clips/s over the one-clip row's).
    With `csv` (the user's list) the rows are for those videos, plus "cores_per_gpu" {model
    clips/s: cores} at each of `model_clips_per_s`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one DataLoader worker = one thread
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="videored_bench_")
        workdir = tmp.name
    try:
        kinds = user_video_kinds(csv) if csv is not None else make_benchmark_videos(workdir)
        rows = []
        for kind, spec in kinds.items():
            datasets = {(b, k): VideoClipDataset(spec["csv"], mode="train", backend=b, clips_per_video=k,
                                                 **spec["sampling"])
                        for b in backends for k in clips_per_video}
            for ds in datasets.values():
                _time_items(ds, len(ds))  # warm-up: library init, every file in the page cache
            best = {key: [float("inf"), float("inf")] for key in datasets}  # (decode, item) s/clip
            for _ in range(rounds):
                for (b, k), ds in datasets.items():
                    best[b, k][0] = min(best[b, k][0], _time_decode(ds, clips))
                    best[b, k][1] = min(best[b, k][1], _time_items(ds, clips))
            for (b, k), (t_dec, t_item) in best.items():
                rows.append(
                    {
                        "video": kind,
                        "backend": b,
                        "clips_per_video": k,
                        "decode_clips_per_s": round(1 / t_dec, 1),
                        "item_clips_per_s": round(1 / t_item, 1),
                        "ms_per_clip_decode": round(1000 * t_dec, 1),
                        "ms_per_clip_item": round(1000 * t_item, 1),
                        "frames_per_clip": spec["sampling"]["num_frames"],
                        "threads": 1,
                    }
                )
                if (b, 1) in best:
                    rows[-1]["vs_one_clip"] = round(best[b, 1][1] / t_item, 2)
                if csv is not None:
                    rows[-1]["cores_per_gpu"] = {f"{m:g}": round(cores_per_gpu(1 / t_item, m), 2) for m in model_clips_per_s}
        return rows
    finally:
        torch.set_num_threads(threads)
        if tmp is not None:
            tmp.cleanup()


def format_table(rows: list[dict]) -> str:
    """Markdown table of `run_decode_benchmark` rows."""
    lines = [
        "| video | backend | clips/video | decode clips/s | ms/clip | full item clips/s | ms/item clip | vs 1 clip/video |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    gpu = rows[0].get("cores_per_gpu", {}) if rows else {}
    if gpu:
        lines[0] += "".join(f" cores per GPU at {m} clips/s |" for m in gpu)
        lines[1] += "---:|" * len(gpu)
    for r in rows:
        lines.append(
            f"| {r['video']} | {r['backend']} | {r['clips_per_video']} | {r['decode_clips_per_s']} | "
            f"{r['ms_per_clip_decode']} | {r['item_clips_per_s']} | {r['ms_per_clip_item']} | "
            f"{r.get('vs_one_clip', '')} |"
            + "".join(f" {c} |" for c in r.get("cores_per_gpu", {}).values())
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20, help="clips per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement; the fastest is kept")
    parser.add_argument("--clips-per-video", default="1", help="comma list, e.g. 1,2")
    a = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, 1 thread per worker")
    print(format_table(run_decode_benchmark(clips=a.clips, rounds=a.rounds,
                                            clips_per_video=[int(k) for k in a.clips_per_video.split(",")])))

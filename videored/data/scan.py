"""Integrity scan of a video list: decode every listed video in worker processes with a timeout.

Each video is checked in a separate worker process, so a decoder that hangs (decord can) or
crashes costs one per-video timeout and one restarted worker, never the whole scan. Result:
`{"checked": n, "bad": [{"path", "line", "reason"}, ...], "too_short": [...]}`: `bad` holds
what cannot be used (decode errors, malformed csv lines by line number, their `path` the raw line
text); `too_short` the videos shorter than one clip of the given sampling (`ClipSpec`, e.g. from
a training config), which the loader samples with clamped indices. A file that is both is in
both lists, and its `bad` reason names both, the decode error first.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from collections import deque
from typing import Iterable, NamedTuple, Optional

import numpy as np

from videored.data.csv_list import classes_file_for, iter_video_list, read_classes
from videored.data.decoding import open_video
from videored.data.errors import VideoDecodeError
from videored.data.sampling import clip_span


class ClipSpec(NamedTuple):
    """The clip sampling a video must hold once: `num_frames` frames every `sampling_rate`
    frames at `target_fps` (a training config's model.num_frames, data.sampling_rate/target_fps)."""
    num_frames: int
    sampling_rate: int
    target_fps: float

    def describe(self) -> str:
        return f"{self.num_frames} x {self.sampling_rate} frames at {self.target_fps:g} fps"


class Problems(NamedTuple):
    decode: Optional[str] = None  # why the video cannot be (fully) decoded
    too_short: Optional[str] = None  # why it is shorter than one clip

    def reason(self) -> Optional[str]:
        """Both reasons, the decode error first; None when the video is fine."""
        parts = [self.decode] + ([f"too short: {self.too_short}"] if self.too_short else [])
        return "; ".join(p for p in parts if p) or None


def check_video(path: str, backend: str = "auto", min_frames: int = 1, sample_frames: int | None = None,
                clip: ClipSpec | None = None) -> str | None:
    """None when `path` opens and decodes (and holds `min_frames` and one `clip`), else why not."""
    return check_video_problems(path, backend, min_frames, sample_frames, clip).reason()


def check_video_problems(path: str, backend: str = "auto", min_frames: int = 1,
                         sample_frames: int | None = None, clip: ClipSpec | None = None) -> Problems:
    """Decode errors and shortness of one video, separately.

    Decodes every frame (in chunks, nothing kept), or only `sample_frames` evenly spaced frames
    (first and last included) when given: faster, but misses damage between the samples.
    Length comes from the container's frame count, so a broken file can be both.
    """
    decode, short = None, None
    try:
        with open_video(path, backend) as video:
            n = video.num_frames
            if n < min_frames:
                short = f"only {n} frames (< {min_frames})"
            elif clip is not None:
                span = clip_span(clip.num_frames, clip.sampling_rate, clip.target_fps, video.fps)
                if n < span:
                    short = (f"{n} frames at {video.fps:g} fps, one clip ({clip.describe()}) "
                             f"needs {span:.4g}")
            try:
                if sample_frames:
                    video.get_frames(np.unique(np.linspace(0, n - 1, sample_frames).round().astype(int)))
                else:
                    decoded = video.decode_all()
                    if decoded < n:
                        decode = f"stream ends after {decoded} of {n} frames"
            except VideoDecodeError as e:
                decode = e.reason
    except VideoDecodeError as e:
        decode = e.reason
    except Exception as e:  # anything else a broken file can raise inside the decoders
        decode = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return Problems(decode, short)


def _worker_main(conn, backend: str, min_frames: int, sample_frames: int | None, clip: ClipSpec | None,
                 quiet: bool) -> None:
    if quiet:  # FFmpeg/decord print C-level errors to fd 2; the reasons are returned instead
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    while True:
        task = conn.recv()
        if task is None:
            return
        line, path = task
        conn.send((line, path, check_video_problems(path, backend, min_frames, sample_frames, clip)))


class _Worker:
    def __init__(self, ctx, args: tuple):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[int, str] | None = None
        self.deadline = 0.0

    def give(self, task: tuple[int, str], timeout: float) -> None:
        self.task, self.deadline = task, time.monotonic() + timeout
        self.conn.send(task)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def check_videos(
    tasks: Iterable[tuple[int, str]],
    backend: str = "auto",
    workers: int = 4,
    timeout: float = 60.0,
    min_frames: int = 1,
    sample_frames: int | None = None,
    quiet: bool = True,
    progress: bool = False,
    clip: ClipSpec | None = None,
) -> dict[tuple[int, str], Problems]:
    """Check `(line, path)` tasks in `workers` processes; a task running past `timeout` seconds
    (a per-video limit) has its worker killed and is reported bad. Returns {(line, path): Problems}."""
    pending = deque(tasks)
    total = len(pending)
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    args = (backend, min_frames, sample_frames, clip, quiet)
    results: dict[tuple[int, str], str | None] = {}
    pool = [_Worker(ctx, args) for _ in range(max(1, min(workers, total)))] if total else []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="scan", unit="video")
    try:
        while len(results) < total:
            for w in pool:
                if w.task is None and pending:
                    w.give(pending.popleft(), timeout)
            busy = [w for w in pool if w.task is not None]
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=wait_s)
            for i, w in enumerate(pool):
                if w.task is None:
                    continue
                reason: str
                if w.conn in ready:
                    try:
                        line, path, reason = w.conn.recv()
                        results[(line, path)] = reason
                        w.task = None
                        if bar is not None:
                            bar.update(1)
                        continue
                    except (EOFError, OSError):  # the worker died mid-task (e.g. a segfault)
                        w.proc.join(timeout=5)
                        reason = f"decoder crashed the worker (exit code {w.proc.exitcode})"
                elif time.monotonic() >= w.deadline:
                    reason = f"timeout: no result after {timeout:g} s (decoder hang)"
                else:
                    continue
                results[w.task] = Problems(decode=reason)
                if bar is not None:
                    bar.update(1)
                w.stop(kill=True)
                pool[i] = _Worker(ctx, args)
    finally:
        for w in pool:
            w.stop(kill=w.task is not None)
        if bar is not None:
            bar.close()
    return results


def scan_video_list(
    csv_path: str | os.PathLike,
    backend: str = "auto",
    workers: int = 4,
    timeout: float = 60.0,
    min_frames: int = 1,
    sample_frames: int | None = None,
    progress: bool = False,
    clip: ClipSpec | None = None,
) -> dict:
    """Scan every line of `csv_path`; returns `{"checked": n, "bad": [...], "too_short": [...]}`
    (each sorted by line; see the module notes)."""
    classes_file = classes_file_for(csv_path)
    num_classes = len(read_classes(classes_file)) if classes_file else None
    bad: list[dict] = []
    tasks: list[tuple[int, str]] = []
    for row in iter_video_list(csv_path, num_classes):
        if row.error is not None:
            bad.append({"path": row.path, "line": row.line, "reason": f"malformed line: {row.error}"})
        else:
            tasks.append((row.line, row.path))
    checked = len(tasks) + len(bad)  # bad holds the malformed lines so far
    results = check_videos(tasks, backend, workers, timeout, min_frames, sample_frames, progress=progress,
                           clip=clip)
    bad += [{"path": path, "line": line, "reason": p.reason()} for (line, path), p in results.items() if p.decode]
    short = [{"path": path, "line": line, "reason": p.too_short} for (line, path), p in results.items()
             if p.too_short]
    return {"checked": checked, "bad": sorted(bad, key=lambda b: b["line"]),
            "too_short": sorted(short, key=lambda b: b["line"])}

"""Which frames make a clip: span, start and evenly spaced indices.

A clip is `num_frames` frames taken every `sampling_rate` frames of a `target_fps` video, i.e. it
covers `num_frames * sampling_rate / target_fps` seconds. In a video with its own `fps` that is
`span = num_frames * sampling_rate * fps / target_fps` frames (a float). Frame k of the clip
(k = 0..num_frames-1) is `floor(start + k * span / num_frames)`, so with fps == target_fps the
frames are exactly `sampling_rate` apart.

- train: `start` uniform in [0, max(L - span, 0)] (pytorchvideo's `RandomClipSampler`, in seconds).
- val/test: `start = max(L - span, 0) / 2` for one temporal view (the centred clip); for V > 1
  views, view v starts at `max(L - span, 0) * v / (V - 1)` (first, ..., last clip).
- Videos shorter than the span (L < span) start at 0 and indices past the end are clamped to the
  last frame L - 1 (a 2-frame video gives [0, 1, 1, ..., 1] for rate >= 1).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from pytorchvideo.data.clip_sampling import RandomClipSampler

_EPS = 1e-6  # keeps float round-off (e.g. 29.97 fps) from flooring 32.0 to 31


def clip_span(num_frames: int, sampling_rate: int, target_fps: float, fps: float) -> float:
    """Frames of a `fps` video covered by one clip (float)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return num_frames * sampling_rate * fps / target_fps


def clip_indices(start: float, span: float, num_frames: int, video_len: int) -> np.ndarray:
    """Evenly spaced frame indices, shape (num_frames,), clamped to [0, video_len - 1]."""
    k = np.arange(num_frames)
    idx = np.floor(start + k * (span / num_frames) + _EPS).astype(np.int64)
    return np.clip(idx, 0, video_len - 1)


def centred_start(video_len: int, span: float, view: int = 0, num_views: int = 1) -> float:
    """Start frame of temporal view `view` of `num_views` (deterministic, for val/test)."""
    if not 0 <= view < num_views:
        raise ValueError(f"view {view} outside [0, {num_views})")
    delta = max(video_len - span, 0.0)
    if num_views == 1:
        return delta / 2
    return delta * view / (num_views - 1)


def random_start(video_len: int, fps: float, span: float) -> float:
    """Uniformly random start frame in [0, max(L - span, 0)] (Python's `random`, seeded per
    DataLoader worker by torch)."""
    sampler = RandomClipSampler(clip_duration=Fraction(span / fps))
    info = sampler(0.0, Fraction(video_len / fps), {})
    return float(info.clip_start_sec) * fps


def min_frames_for(num_frames: int, sampling_rate: int, target_fps: float, fps: float) -> int:
    """Smallest video length (frames) that needs no index clamping."""
    return math.ceil(clip_span(num_frames, sampling_rate, target_fps, fps) - _EPS)


# ---- the conventions of the checkpoints' own codebases, selectable by `data.sampling` ----
SAMPLING_STYLES = ("videored", "mmaction", "timesformer")


def mmaction_indices(video_len: int, num_frames: int, sampling_rate: int, train: bool,
                     view: int = 0, num_views: int = 1) -> np.ndarray:
    """mmaction2's `SampleFrames(clip_len=num_frames, frame_interval=sampling_rate)` without
    target_fps: frames exactly `sampling_rate` apart in raw frame numbers (the video's fps is
    ignored), indices past the end wrapped around (`out_of_bound_opt="loop"`).

    train: offset uniform in [0, L - T*rate] (0 when the video is shorter); test: the span is
    (T-1)*rate + 1 frames, one view offset max(L - span, 0) // 2, V views evenly spread (rounded).
    """
    import random

    if train:
        room = video_len - num_frames * sampling_rate + 1
        offset = random.randrange(room) if room > 0 else 0
    else:
        delta = max(video_len - ((num_frames - 1) * sampling_rate + 1), 0)
        offset = delta // 2 if num_views == 1 else round(delta * view / (num_views - 1))
    return (offset + np.arange(num_frames) * sampling_rate) % video_len


def timesformer_indices(video_len: int, fps: float, num_frames: int, sampling_rate: int,
                        target_fps: float, train: bool, view: int = 0,
                        num_views: int = 1) -> np.ndarray:
    """facebookresearch TimeSformer (pyslowfast decoder): a clip of `rate*T/target_fps*fps`
    frames starting at uniform(0, delta) in train and at delta*view/num_views in test (frame 0
    with one view), delta = max(L - clip, 0); T indices by `linspace(start, start + clip - 1, T)`
    clamped to the video and truncated to integers."""
    import random

    clip = clip_span(num_frames, sampling_rate, target_fps, fps)
    delta = max(video_len - clip, 0.0)
    start = random.uniform(0, delta) if train else delta * view / num_views
    idx = np.linspace(start, start + clip - 1, num_frames)
    return np.clip(idx, 0, video_len - 1).astype(np.int64)


def frame_indices(style: str, video_len: int, fps: float, *, num_frames: int, sampling_rate: int,
                  target_fps: float, train: bool, view: int = 0, num_views: int = 1) -> np.ndarray:
    """The clip's frame indices under sampling convention `style` (see SAMPLING_STYLES):
    "videored" (module doc: fps-aware span, centred test clip, clamped), "mmaction" or
    "timesformer" (the codebases that trained the public checkpoints)."""
    if style == "mmaction":
        return mmaction_indices(video_len, num_frames, sampling_rate, train, view, num_views)
    if style == "timesformer":
        return timesformer_indices(video_len, fps, num_frames, sampling_rate, target_fps, train,
                                   view, num_views)
    if style != "videored":
        raise ValueError(f"unknown sampling {style!r}; use one of {SAMPLING_STYLES}")
    span = clip_span(num_frames, sampling_rate, target_fps, fps)
    start = random_start(video_len, fps, span) if train else centred_start(video_len, span, view,
                                                                           num_views)
    return clip_indices(start, span, num_frames, video_len)

"""`VideoClipDataset`: decoded clips from a `path label` list (Kinetics-400 or the synthetic set)."""
from __future__ import annotations

import logging
import os
import random
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from videored.data import transforms as T
from videored.data.csv_list import (ListRow, classes_file_for, iter_video_list, read_classes,
                                    read_dataset_info)
from videored.data.decoding import BACKENDS, open_video
from videored.data.errors import VideoDecodeError
from videored.data.masks import load_masks
from videored.data.rng import seeded_draws
from videored.data.sampling import SAMPLING_STYLES, frame_indices
from videored.normalization import TIMESFORMER, normalize_uint8

log = logging.getLogger(__name__)

MODES = ("train", "val", "test")
# The constructor's default (TimeSformer's Kinetics normalization); the commands pass the
# weights' own (videored.normalization).
KINETICS_MEAN, KINETICS_STD = TIMESFORMER.mean, TIMESFORMER.std


class VideoClipDataset(Dataset):
    """Clips of `num_frames` RGB frames from the videos listed in `csv_path`.

    Item (a dict): `video` (3, T, H, W) float normalized (`output="float"`) or uint8 pixels
    (`output="uint8"`, what the training and evaluation loaders use: a quarter of the bytes through
    the worker queues, and the normalization runs on the device, `videored.normalization.
    model_input`, with the item's own `normalization` (2, 3) = [mean; std]), `label` int, `video_index`,
    `spatial_index`, `temporal_index` (both -1 in train: random), `failed` bool, `path` str, in
    train `bad_path` and `bad_reason` (str, see Bad input), in val/test `error` (why the item
    failed, "" when it did not), and
    with `return_masks=True` also `mask` (T, H, W) bool: the object mask of the same frames with
    the same resize/crop/flip (nearest neighbour), for the interpretability metric.

    Temporal sampling (see `videored.data.sampling`; `sampling="mmaction"` or `"timesformer"`
    follow those codebases instead of the default described here): a clip spans
    `num_frames * sampling_rate` frames at `target_fps`, i.e. `num_frames * sampling_rate * fps /
    target_fps` frames of a video with its own `fps`; its frames are evenly spaced in the span.
    Train: random start. Val/test: `num_temporal_views` deterministic clips; with one view the clip
    is centred in the video. Videos shorter than the span are sampled with indices clamped to
    the last frame.

    Val/test decode all `num_temporal_views` views of a video in one pass (their items are
    consecutive), and every crop and view of it comes from that decode.

    Spatial: train resizes the short side to a random size in `train_jitter_scales`, takes a
    random `crop_size` square and flips horizontally with p=0.5 (`train_flip`; None = yes unless
    the folder's `dataset.json` says `"hflip_preserves_label": false`, as the synthetic
    motion-direction set does). Val/test resize the short side to
    `crop_size` and take `num_spatial_crops` crops along the long side (3: left/centre/right, or
    top/centre/bottom for portrait video; 1: centre). All crops of a video come from the same
    temporal clip.

    Several clips per video (`clips_per_video` K > 1, train only): each item decodes its video
    once (the frames of all K clips in one pass) and gives K clips, each with its own random
    start, scale, crop and flip (the repeated sampling of MAE-style video training); `video` is
    then (K, 3, T, H, W) and `mask` (K, T, H, W). `engine.builders.unpack_batch` flattens such a
    batch to B*K clips. Decoding dominates the cost of an item on real video (one clip of a 10 s
    340x256 H.264 file decodes most of its frames), so K = 2 nearly doubles a worker's clips/s
    (docs/data.md).

    Length: train = number of videos; val/test = videos * num_temporal_views * num_spatial_crops,
    item i -> video i // (V*C), temporal view (i % (V*C)) // C, spatial crop i % C.

    `rows`: the video list itself (`ListRow`s, e.g. the frame folders of a DAVIS-style set, see
    `videored.data.davis`) instead of reading `csv_path`, which then only names the source in
    messages; no `classes.txt` / `dataset.json` is read.

    Decoding: `backend` ("auto", "pyav", "decord", "torchcodec"; `videored.data.decoding`): with
    decord, a video decord fails on is retried with PyAV (`pyav_fallback`) before it counts as bad.
    Test mode resizes each temporal view once for all its spatial crops.

    Bad input. Train: a video that cannot be decoded is logged once (path + reason) and replaced
    by another random video (at most `max_substitutes` tries, then an error). The item says so
    itself: `bad_path` / `bad_reason` name the video asked for and why it was replaced ("" when
    it was not), so the trainer counts substitutions from the batches, whatever process or
    DataLoader start method (fork, spawn, forkserver) loaded them; `skipped` counts them in this
    process only. Malformed csv lines are logged with their line number, counted in `malformed`
    and left out. Val/test never substitute: a bad video (or a malformed line, label -1) gives an item with
    `failed=True` and an all-zero video so the evaluation counts it instead of silently shrinking.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        mode: str = "train",
        num_frames: int = 8,
        sampling_rate: int = 32,
        target_fps: float = 30,
        crop_size: int = 224,
        train_jitter_scales: Sequence[int] = (256, 320),
        num_spatial_crops: int = 3,
        num_temporal_views: int = 1,
        backend: str = "auto",
        return_masks: bool = False,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        train_flip: bool | None = None,
        max_substitutes: int = 20,
        num_classes: int | None = None,
        pyav_fallback: bool = True,
        sampling: str = "videored",
        rows: Sequence[ListRow] | None = None,
        clips_per_video: int = 1,
        output: str = "float",
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if sampling not in SAMPLING_STYLES:
            raise ValueError(f"sampling must be one of {SAMPLING_STYLES}, got {sampling!r}")
        if output not in ("float", "uint8"):
            raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if clips_per_video < 1 or (clips_per_video > 1 and mode != "train"):
            raise ValueError(f"clips_per_video must be >= 1 and is for mode='train' only, got {clips_per_video} "
                             f"in mode {mode!r} (val/test views are num_temporal_views x num_spatial_crops)")
        if train_jitter_scales[0] > train_jitter_scales[1] or train_jitter_scales[0] < crop_size:
            raise ValueError(f"train_jitter_scales {tuple(train_jitter_scales)} must be ordered and >= crop_size {crop_size}")
        self.csv_path = str(csv_path)
        self.mode = mode
        self.num_frames = num_frames
        self.sampling_rate = sampling_rate
        self.target_fps = target_fps
        self.crop_size = crop_size
        self.train_jitter_scales = (int(train_jitter_scales[0]), int(train_jitter_scales[1]))
        self.num_spatial_crops = 1 if mode == "train" else num_spatial_crops
        self.num_temporal_views = 1 if mode == "train" else num_temporal_views
        self.clips_per_video = clips_per_video
        self.backend = backend
        self.output = output
        self.sampling = sampling
        self.return_masks = return_masks
        self.mean, self.std = tuple(mean), tuple(std)
        if train_flip is None:  # a dataset folder may declare that flipping changes the label
            info = read_dataset_info(csv_path) if rows is None else {}
            train_flip = bool(info.get("hflip_preserves_label", True))
        self.train_flip = train_flip
        self.max_substitutes = max_substitutes
        self.pyav_fallback = pyav_fallback

        classes_file = classes_file_for(csv_path) if rows is None else None
        self.class_names = read_classes(classes_file) if classes_file else None
        known_classes = num_classes if num_classes is not None else (len(self.class_names) if self.class_names else None)

        self.paths: list[str] = []
        self.labels: list[int] = []
        self.errors: list[str | None] = []  # val/test: a malformed line is kept as a failed entry
        self.malformed: list[tuple[int, str]] = []  # (line number, reason)
        for row in (iter_video_list(csv_path, known_classes) if rows is None else rows):
            if row.error is not None:
                self.malformed.append((row.line, row.error))
                log.warning("%s:%d: malformed line (%s): %r", csv_path, row.line, row.error, row.path)
                if mode == "train":
                    continue
            self.paths.append(row.path)
            self.labels.append(row.label)
            self.errors.append(None if row.error is None else f"malformed csv line {row.line}: {row.error}")
        if not self.paths:
            raise ValueError(f"{csv_path}: no usable videos ({len(self.malformed)} malformed lines)")
        self.num_classes = known_classes if known_classes is not None else max(self.labels) + 1

        self.skipped = 0  # train items served by a substitute, in this process only
        self._bad: dict[int, str] = {}  # per process: video index -> reason (logged once)
        self._cache: tuple | None = None  # val/test: the last video's decoded views, for its other items
        self._resized: tuple | None = None  # test: (video, view, resized frames, masks) for its other crops
        self.epoch_seed: int | None = None  # train: see set_epoch_seed

    def set_epoch_seed(self, seed: int | None) -> None:
        """Train: draw item i's clip starts, scales, crops, flips and substitutes from (seed, i)
        alone (`videored.data.rng`), whatever process loads it; the trainer sets one seed per
        epoch. None (the default): the loading process's own random streams."""
        self.epoch_seed = seed

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None, "_resized": None}

    @property
    def num_videos(self) -> int:
        return len(self.paths)

    def __len__(self) -> int:
        return self.num_videos * self.num_temporal_views * self.num_spatial_crops

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        if self.mode == "train":
            with seeded_draws(self.epoch_seed, index):
                return self._train_item(index)
        per_video = self.num_temporal_views * self.num_spatial_crops
        video_index = index // per_video
        temporal_index = (index % per_video) // self.num_spatial_crops
        spatial_index = index % self.num_spatial_crops
        item = {
            "label": self.labels[video_index],
            "video_index": video_index,
            "spatial_index": spatial_index,
            "temporal_index": temporal_index,
            "path": self.paths[video_index],
        }
        try:
            frames, masks = self._decode_eval(video_index, temporal_index)
        except Exception as e:  # never substitute in val/test: the evaluation counts failures
            self._note_bad(video_index, e)
            return {**item, **self._failed_tensors(), "failed": True, "error": self._bad[video_index]}
        video, mask = self._eval_transform(frames, masks, spatial_index, (video_index, temporal_index))
        return {**item, "video": video, "failed": False, "error": "", **self._norm_field(),
                **({"mask": mask} if self.return_masks else {})}

    # ----- train -----

    def _train_item(self, index: int) -> dict:
        candidate = index
        for _ in range(self.max_substitutes + 1):
            if candidate not in self._bad:
                rng = random.getstate()  # the clip start is drawn from Python's `random`
                try:
                    # train: the view number is unused (every clip has a random start)
                    frames, masks = self._decode(candidate, views=[0] * self.clips_per_video)
                except Exception as e:  # any decode/mask failure is a property of the file
                    self._note_bad(candidate, e)
                    # a failed attempt draws nothing: a video found bad now and one already known
                    # bad (skipped) leave the same RNG state, so a resumed run (empty cache)
                    # replays the uninterrupted one exactly
                    random.setstate(rng)
                else:
                    self.skipped += candidate != index
                    clips = [self._train_transform(frames[k], None if masks is None else masks[k])
                             for k in range(self.clips_per_video)]
                    video, mask = clips[0] if self.clips_per_video == 1 else (
                        torch.stack([c[0] for c in clips]),
                        None if masks is None else torch.stack([c[1] for c in clips]))
                    item = {
                        "video": video,
                        "label": self.labels[candidate],
                        "video_index": candidate,
                        "spatial_index": -1,
                        "temporal_index": -1,
                        "failed": False,
                        "path": self.paths[candidate],
                        **self._substitution_fields(index, candidate),
                        **self._norm_field(),
                    }
                    if self.return_masks:
                        item["mask"] = mask
                    return item
            candidate = int(torch.randint(0, self.num_videos, ()).item())
        raise RuntimeError(
            f"{self.csv_path}: {self.max_substitutes + 1} bad videos in a row while loading item {index}; "
            f"last: {self.paths[candidate]}: {self._bad.get(candidate, '?')}"
        )

    def _substitution_fields(self, index: int, served: int) -> dict:
        """What a train item tells the trainer about its substitution ("" when there was none)."""
        if served == index:
            return {"bad_path": "", "bad_reason": ""}
        return {"bad_path": self.paths[index], "bad_reason": self._bad.get(index, "?")}

    def _train_transform(self, frames: np.ndarray, masks: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        # resized and cropped in uint8 (a quarter of the bytes, torch's fast uint8 kernel);
        # float only for the 224x224 crop
        video = T.uint8_cthw(frames)  # (3, T, H, W) uint8
        short = T.random_short_side(self.train_jitter_scales)
        video = T.short_side_resize(video, short)
        top, left = T.random_crop_offsets(video.shape[-2], video.shape[-1], self.crop_size)
        video = T.crop(video, top, left, self.crop_size)
        flip = self.train_flip and bool(torch.rand(()) < 0.5)
        if flip:
            video = T.hflip(video)
        mask = None
        if masks is not None:  # (T, H, W) bool, same geometry as the video
            mask = T.crop(T.short_side_resize_mask(torch.from_numpy(masks), short), top, left, self.crop_size)
            mask = T.hflip(mask) if flip else mask
        return self._finish(video), None if mask is None else mask.contiguous()

    # ----- val / test -----

    def _decode_eval(self, video_index: int, temporal_index: int) -> tuple[np.ndarray, np.ndarray | None]:
        error = self.errors[video_index] or self._bad.get(video_index)
        if error is not None:  # malformed line, or a video that already failed in this process
            raise VideoDecodeError(self.paths[video_index], error)
        # Every temporal view of the video in one decoding pass; its items are consecutive
        # (all views x crops), so the other items of this video find them here.
        if self._cache is None or self._cache[0] != video_index:
            self._cache = (video_index, *self._decode(video_index, views=range(self.num_temporal_views)))
        _, frames, masks = self._cache  # (V, T, H, W, 3), (V, T, H, W) or None
        return frames[temporal_index], None if masks is None else masks[temporal_index]

    def _eval_transform(self, frames: np.ndarray, masks: np.ndarray | None, spatial_index: int,
                        view: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        # the resize is the same for every spatial crop of a view: done once, kept for the others
        if self._resized is None or self._resized[0] != view:
            video = T.short_side_resize(T.uint8_cthw(frames), self.crop_size)  # (3, T, H', W') uint8
            mask = None if masks is None else T.short_side_resize_mask(torch.from_numpy(masks), self.crop_size)
            self._resized = (view, video, mask)
        _, video, mask = self._resized
        top, left = T.spatial_crop_offsets(video.shape[-2], video.shape[-1], self.crop_size, spatial_index, self.num_spatial_crops)
        video = self._finish(T.crop(video, top, left, self.crop_size))
        if mask is not None:
            mask = T.crop(mask, top, left, self.crop_size).contiguous()
        return video, mask

    def _finish(self, video: torch.Tensor) -> torch.Tensor:
        """A (3, T, S, S) uint8 crop as the item's `video`: uint8 as it is (normalized later on
        the device), or normalized float here."""
        if self.output == "uint8":
            return video.contiguous()
        return normalize_uint8(video, self.mean, self.std)

    def _norm_field(self) -> dict:
        """uint8 items carry their normalization, (2, 3) [mean; std] on [0, 1] pixels."""
        if self.output != "uint8":
            return {}
        return {"normalization": torch.tensor([self.mean, self.std], dtype=torch.float64)}

    def _failed_tensors(self) -> dict:
        out = {"video": torch.zeros(3, self.num_frames, self.crop_size, self.crop_size,
                                    dtype=torch.uint8 if self.output == "uint8" else torch.float32),
               **self._norm_field()}
        if self.return_masks:
            out["mask"] = torch.zeros(self.num_frames, self.crop_size, self.crop_size, dtype=torch.bool)
        return out

    # ----- shared -----

    def frame_indices(self, num_video_frames: int, fps: float, temporal_index: int = 0) -> np.ndarray:
        """The frame indices this dataset decodes from a video of the given length and fps
        (val/test: deterministic view `temporal_index`; train: a fresh random start)."""
        return frame_indices(self.sampling, num_video_frames, fps, num_frames=self.num_frames,
                             sampling_rate=self.sampling_rate, target_fps=self.target_fps,
                             train=self.mode == "train", view=temporal_index,
                             num_views=self.num_temporal_views)

    def _decode(self, video_index: int, views: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """(K, T, H, W, 3) uint8 frames of K = len(views) clips (train: each with its own random
        start; val/test: temporal view views[k]) and, if asked, their (K, T, H, W) bool masks."""
        path = self.paths[video_index]
        frames, idx, num_video_frames = self._read(path, views)
        masks = None
        if self.return_masks:
            # only the sampled frames' masks: an unsampled frame may lack its annotation
            if os.path.isdir(path):
                distinct, where = np.unique(idx, return_inverse=True)
                masks = load_masks(path, distinct)[where.reshape(idx.shape)]  # (K, T, H, W)
                if masks.shape[2:] != frames.shape[2:4]:
                    raise ValueError(f"{path}: annotations {masks.shape[2:]} do not match the "
                                     f"frames {frames.shape[2:4]}")
            else:
                all_masks = load_masks(path)  # (F, H, W)
                if all_masks.shape[1:] != frames.shape[2:4] or all_masks.shape[0] < num_video_frames:
                    raise ValueError(f"{path}: masks {all_masks.shape} do not match video ({num_video_frames}, {frames.shape[2]}, {frames.shape[3]})")
                masks = all_masks[idx]
        return frames, masks

    def _read(self, path: str, views: Sequence[int]) -> tuple[np.ndarray, np.ndarray, int]:
        """(frames (K, T, H, W, 3) uint8, their indices (K, T), the video's frame count) of
        the K = len(views) clips (see `_decode`).

        The K clips' distinct frames are asked for in one call, in increasing order, each once:
        the PyAV reader decodes the keyframe-to-frame spans they need once (shared spans once),
        decord reads forward from the keyframe before the first; an index that went backwards (a
        second clip, a looped mmaction clip) would decode again from an earlier keyframe."""
        with open_video(path, self.backend, fallback=self.pyav_fallback) as video:
            idx = np.stack([self.frame_indices(video.num_frames, video.fps, view) for view in views])  # (K, T)
            distinct, where = np.unique(idx.ravel(), return_inverse=True)
            decoded = video.get_frames(distinct)  # (U, H, W, 3), U <= K*T
            return decoded[where.reshape(idx.shape)], idx, video.num_frames

    def _note_bad(self, video_index: int, error: Exception) -> None:
        if video_index not in self._bad:
            reason = error.reason if isinstance(error, VideoDecodeError) else f"{type(error).__name__}: {error}"
            self._bad[video_index] = reason
            log.warning("bad video (%s mode) %s: %s", self.mode, self.paths[video_index], reason)

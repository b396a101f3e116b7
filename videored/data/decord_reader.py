"""Reading frames by index with decord (the design's decoder, where it has wheels).

`num_threads=1`: the DataLoader's workers give the parallelism; decord's own threads
oversubscribe the cores. The decord bridge is never set: frames leave decord through
`.asnumpy()`, so importing this module changes no global state. decord applies the display-matrix
rotation itself.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .errors import VideoDecodeError, check_file, readable_error, validate_indices
from .reader import VideoReader


class DecordVideo(VideoReader):
    """An opened video read through decord."""

    def __init__(self, path: str):
        import decord  # imported here: decord is only needed when this backend is used

        check_file(path)
        self.path = path
        try:
            self._reader = decord.VideoReader(path, num_threads=1)
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as e:  # decord raises RuntimeError / DECORDError with C++ text
            raise VideoDecodeError(path, f"cannot open: {readable_error(e)}") from e
        if self.num_frames <= 0:
            raise VideoDecodeError(path, "no video frames")

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as (T, H, W, 3) uint8 RGB."""
        idx = validate_indices(self.path, indices, self.num_frames)
        try:
            frames = self._reader.get_batch(idx).asnumpy()  # (T, H, W, 3) uint8
        except Exception as e:
            raise self._located_error(idx, e) from e
        if frames.shape[0] != len(idx):
            raise VideoDecodeError(self.path, f"decoded {frames.shape[0]} of {len(idx)} frames")
        return frames

    def _located_error(self, idx: list[int], error: BaseException) -> VideoDecodeError:
        """decord's batch error does not say which frame broke, and its decoder thread reads
        ahead, so where it gives up varies from run to run. PyAV decodes the same file frame by
        frame: the first frame it cannot decode is the place (none named if PyAV reads it)."""
        from .pyav_reader import PyAVVideo

        where = ""
        try:
            with PyAVVideo(self.path) as video:
                video.decode_sequential(set(idx))
        except VideoDecodeError as located:
            m = re.match(r"decode failed (at frame \d+ of \d+)", located.reason)
            where = f" {m.group(1)}" if m else ""
        except Exception:  # PyAV failing some other way: report decord's error without a frame
            pass
        return VideoDecodeError(self.path, f"decode failed{where}: {readable_error(error)}")

    def close(self) -> None:
        self._reader = None

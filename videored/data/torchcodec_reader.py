"""Reading frames by index with torchcodec (PyTorch's decoder; `pip install videored[torchcodec]`).

torchcodec links against the system's FFmpeg libraries (4-8) instead of carrying its own, so it
needs one installed (`apt-get install ffmpeg`, `conda install ffmpeg`, `brew install ffmpeg`);
without it the import fails and `TorchCodecVideo` says so. Exact seek mode (a frame index is
the frame at that presentation rank, as for the other readers), one FFmpeg thread per worker,
frames as (T, H, W, 3) uint8 like decord and PyAV.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import VideoDecodeError, check_file, readable_error, validate_indices
from .reader import VideoReader

MISSING_FFMPEG = ("torchcodec could not be loaded ({error}). It needs FFmpeg's shared libraries "
                  "(versions 4-8) on the system: `apt-get install ffmpeg` (Debian/Ubuntu), `conda "
                  "install ffmpeg`, or `brew install ffmpeg`; or use data.decoder: pyav, which "
                  "carries its own FFmpeg")


def import_torchcodec():
    """torchcodec's VideoDecoder class, or an ImportError that says what is missing."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as e:
        raise ImportError("torchcodec is not installed: pip install 'videored[torchcodec]'") from e
    except (OSError, RuntimeError) as e:  # the package is there, its FFmpeg libraries are not
        raise ImportError(MISSING_FFMPEG.format(error=" ".join(str(e).split())[:200])) from e
    return VideoDecoder


class TorchCodecVideo(VideoReader):
    """An opened video read through torchcodec (CPU decode)."""

    def __init__(self, path: str):
        VideoDecoder = import_torchcodec()
        check_file(path)
        self.path = path
        try:
            self._decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=1,
                                         dimension_order="NHWC")
            meta = self._decoder.metadata
            self.num_frames = int(meta.num_frames)
            self.fps = float(meta.average_fps)
        except Exception as e:
            raise VideoDecodeError(path, f"cannot open: {readable_error(e)}") from e
        if self.num_frames <= 0:
            raise VideoDecodeError(path, "no video frames")

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as (T, H, W, 3) uint8 RGB."""
        idx = validate_indices(self.path, indices, self.num_frames)
        distinct, where = np.unique(idx, return_inverse=True)
        try:
            batch = self._decoder.get_frames_at(indices=distinct.tolist()).data  # (U, H, W, 3)
        except Exception as e:
            raise VideoDecodeError(self.path, f"decode failed: {readable_error(e)}") from e
        return batch.numpy()[where]

    def close(self) -> None:
        self._decoder = None

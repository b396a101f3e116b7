"""The one opener of videos: picks the reader (decord, PyAV, torchcodec, frame folder) and owns
the decord -> PyAV fallback.

Every reader has the same small interface: `num_frames`, `fps`, `get_frames(indices)` ->
(T, H, W, 3) uint8 RGB (frames numbered 0..num_frames-1 in presentation order, turned upright
by the display-matrix rotation), `decode_all()`, `close()`, and is a context manager; the same
indices give the same frames bit for bit whatever the reader (tests check this on B-frames,
long/short/open GOPs and rotated files).

Readers (each in its own module; only decord's borrows PyAV's, to name the frame a broken file
fails at):
  pyav        `pyav_reader.PyAVVideo`: decodes only the keyframe-to-frame spans the clip needs
              and skips non-reference frames no clip needs; PyAV's wheel carries FFmpeg, so it
              installs everywhere. The fastest path measured (docs/data.md).
  decord      `decord_reader.DecordVideo`: decord 0.6.0 where it has wheels (not Linux aarch64,
              not macOS arm64); unmaintained, so a video it fails on is retried with PyAV.
  torchcodec  `torchcodec_reader.TorchCodecVideo`: `pip install videored[torchcodec]` plus a
              system FFmpeg.
  auto        the first installed of `AUTO_ORDER` (PyAV is a dependency, so: pyav).
A directory is a frame folder (`frame_folder.FrameFolderVideo`) whatever the backend.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from .errors import VideoDecodeError
from .reader import VideoReader

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav", "torchcodec")
# `auto`'s preference, fastest first (clips per CPU-second, docs/data.md): the selective PyAV
# path decodes fewer frames than decord or torchcodec can be told to.
AUTO_ORDER = ("pyav", "decord", "torchcodec")

_warned_fallback: set[str] = set()  # per process: paths decord failed on and PyAV read


def backend_available(backend: str) -> bool:
    """Whether `backend`'s library imports here (torchcodec: with its FFmpeg libraries)."""
    try:
        if backend == "pyav":
            import av  # noqa: F401
        elif backend == "decord":
            import decord  # noqa: F401
        elif backend == "torchcodec":
            from .torchcodec_reader import import_torchcodec

            import_torchcodec()
        else:
            raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """`auto` -> the first installed of AUTO_ORDER; a named backend must be installed (an
    ImportError that says how to get it otherwise)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        for name in AUTO_ORDER:
            if backend_available(name):
                return name
        raise ImportError("no video decoder installed: pip install av")
    if backend == "torchcodec":
        from .torchcodec_reader import import_torchcodec

        import_torchcodec()  # raises with the reason (package or system FFmpeg missing)
    elif not backend_available(backend):
        hint = ("decord has no wheels for this platform (Linux aarch64, macOS arm64): use "
                "data.decoder: pyav or auto" if backend == "decord" else "pip install av")
        raise ImportError(f"video backend {backend!r} is not installed: {hint}")
    return backend


def open_video(path: str | os.PathLike, backend: str = "auto", fallback: bool = True):
    """Open `path` with `backend` (see the module doc); raises `VideoDecodeError` on failure.

    decord with `fallback`: a video decord cannot open or decode is read with PyAV instead
    (decord has known bugs, e.g. frame widths <= 72 px; a file PyAV decodes is not a bad video),
    logged once per path; when both fail, the error gives both reasons."""
    if os.path.isdir(path):
        from .frame_folder import FrameFolderVideo

        return FrameFolderVideo(path)
    path = str(path)
    backend = resolve_backend(backend)
    if backend == "pyav":
        from .pyav_reader import PyAVVideo

        return PyAVVideo(path)
    if backend == "torchcodec":
        from .torchcodec_reader import TorchCodecVideo

        return TorchCodecVideo(path)
    from .decord_reader import DecordVideo

    if not fallback:
        return DecordVideo(path)
    return _DecordThenPyAV(path)


class _DecordThenPyAV(VideoReader):
    """decord, switching to PyAV for good at decord's first failure on this file."""

    def __init__(self, path: str):
        from .decord_reader import DecordVideo

        self.path = path
        self.backend = "decord"
        try:
            self._video = DecordVideo(path)
        except VideoDecodeError as first:
            if first.file_problem:
                raise
            self._switch(first)
        self.num_frames, self.fps = self._video.num_frames, self._video.fps

    def _switch(self, first: VideoDecodeError) -> None:
        from .pyav_reader import PyAVVideo

        self.first_reason = first.reason
        try:
            self._video = PyAVVideo(self.path)
        except VideoDecodeError as second:
            raise self._both(second) from second
        self.backend = "pyav"
        if self.path not in _warned_fallback:
            _warned_fallback.add(self.path)
            log.warning("decord failed on %s (%s); decoded with PyAV instead", self.path, first.reason)

    def _both(self, second: VideoDecodeError) -> VideoDecodeError:
        return VideoDecodeError(self.path, f"{self.first_reason} (decord); {second.reason} (pyav)")

    def _call(self, method: str, *args):
        try:
            return getattr(self._video, method)(*args)
        except VideoDecodeError as err:
            if self.backend == "pyav":
                raise (self._both(err) if hasattr(self, "first_reason") else err) from err
            if err.file_problem:
                raise
            self._video.close()
            self._switch(err)
            try:
                return getattr(self._video, method)(*args)
            except VideoDecodeError as second:
                raise self._both(second) from second

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        return self._call("get_frames", indices)

    def decode_all(self, chunk: int = 32) -> int:
        return self._call("decode_all", chunk)

    def close(self) -> None:
        self._video.close()

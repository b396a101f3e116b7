"""Decoding frames by index with decord (default) or PyAV, behind one small interface.

Both backends number frames 0..num_frames-1 in presentation order, convert to RGB24 with
libswscale and turn the picture upright by the container's display-matrix rotation (phone videos:
decord does it itself, PyAV reports `frame.rotation` and `_upright` applies it), so the same
indices give the same frames (tests check this bit for bit, rotated files included).

decord: `num_threads=1` (the DataLoader's workers give the parallelism; decord's own threads
oversubscribe the cores). The decord bridge is never set: frames leave decord through `.asnumpy()`,
so importing this module changes no global state.
PyAV: seeks to the keyframe at or before the first wanted frame and decodes forward up to the
last one, as decord does. Frames are numbered by their presentation timestamps, read from the
container's packets (no decoding): frame i is the i-th smallest packet pts. Where that table
cannot be trusted (packets without pts, a count that disagrees with the header) or a seek does
not land where it should, it decodes from the start instead: slower, never different.
"""
from __future__ import annotations

import os
import re
from fractions import Fraction
from typing import Sequence

import numpy as np

BACKENDS = ("decord", "pyav")


class VideoDecodeError(RuntimeError):
    """A video that cannot be opened or decoded; `reason` is a short human-readable cause.
    `file_problem` is True when the file itself is absent or empty (no other decoder can help)."""

    def __init__(self, path: str, reason: str, file_problem: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.file_problem = file_problem


def _check_file(path: str) -> None:
    # Checked up front: both libraries report these cases as a vague "invalid data".
    if not os.path.exists(path):
        raise VideoDecodeError(path, "missing file", file_problem=True)
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)", file_problem=True)


class DecordVideo:
    """An opened video read through decord."""

    def __init__(self, path: str):
        import decord  # imported here: decord is only needed when this backend is used

        _check_file(path)
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
        idx = _validate(self.path, indices, self.num_frames)
        try:
            frames = self._reader.get_batch(idx).asnumpy()  # (T, H, W, 3) uint8
        except Exception as e:
            raise self._located_error(idx, e) from e
        if frames.shape[0] != len(idx):
            raise VideoDecodeError(self.path, f"decoded {frames.shape[0]} of {len(idx)} frames")
        return frames

    def decode_all(self, chunk: int = 32) -> int:
        """Decode every frame (nothing kept); returns how many decoded. For integrity scans."""
        done = 0
        for start in range(0, self.num_frames, chunk):
            done += self.get_frames(range(start, min(start + chunk, self.num_frames))).shape[0]
        return done

    def _located_error(self, idx: list[int], error: BaseException) -> VideoDecodeError:
        """decord's batch error does not say which frame broke, and its decoder thread reads
        ahead, so where it gives up varies from run to run. PyAV decodes the same file frame by
        frame: the first frame it cannot decode is the place (none named if PyAV reads it)."""
        where = ""
        try:
            with PyAVVideo(self.path) as video:
                video.get_frames(idx)
        except VideoDecodeError as located:
            m = re.match(r"decode failed (at frame \d+ of \d+)", located.reason)
            where = f" {m.group(1)}" if m else ""
        except Exception:  # PyAV failing some other way: report decord's error without a frame
            pass
        return VideoDecodeError(self.path, f"decode failed{where}: {readable_error(error)}")

    def close(self) -> None:
        self._reader = None

    def __enter__(self) -> "DecordVideo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PyAVVideo:
    """An opened video read through PyAV (FFmpeg)."""

    def __init__(self, path: str):
        import av

        _check_file(path)
        self.path = path
        try:
            self._container = av.open(path)
        except Exception as e:
            raise VideoDecodeError(path, f"cannot open: {readable_error(e)}") from e
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = self._container.streams.video[0]
            stream.codec_context.thread_count = 1  # like decord's num_threads=1: workers parallelize
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise VideoDecodeError(path, "unknown frame rate")
            self.fps = float(Fraction(rate))
            # nb_frames from the container index; 0 when the container does not store it
            # (e.g. some mkv/webm), then count packets (cheap: no decoding).
            self._pts: list[int | None] | None = None  # packet pts, read on first need
            self.frames_decoded = 0  # by get_frames so far (what a seek saves shows here)
            self.num_frames = stream.frames or len(self._packet_pts())
            if self.num_frames <= 0:
                raise VideoDecodeError(path, "no video frames")
        except BaseException:
            self._container.close()
            raise

    def _packet_pts(self) -> list[int | None]:
        """Every video packet's pts in file order (demuxed, not decoded)."""
        if self._pts is None:
            stream = self._container.streams.video[0]
            self._pts = [p.pts for p in self._container.demux(stream) if p.size]
            self._container.seek(0)
        return self._pts

    def _frame_pts(self) -> list[int] | None:
        """pts of frames 0..num_frames-1 (presentation order), or None when they cannot be
        told from the packets."""
        pts = self._packet_pts()
        if len(pts) != self.num_frames or any(p is None for p in pts) or len(set(pts)) != len(pts):
            return None
        return sorted(pts)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as (T, H, W, 3) uint8 RGB."""
        idx = _validate(self.path, indices, self.num_frames)
        found = self._seek_and_decode(set(idx)) if min(idx) > 0 else None
        if found is None:
            found = self._decode_from_start(set(idx))
        return np.stack([found[i] for i in idx])  # (T, H, W, 3)

    def _seek_and_decode(self, wanted: set[int]) -> dict[int, np.ndarray] | None:
        """The wanted frames, decoded from the keyframe before the first of them; None when
        this shortcut does not apply or fails in any way (the caller decodes from the start,
        which also names the frame a broken file fails at)."""
        pts = self._frame_pts()
        if pts is None:
            return None
        index_of = {p: i for i, p in enumerate(pts)}
        first, last = min(wanted), max(wanted)
        stream = self._container.streams.video[0]
        found: dict[int, np.ndarray] = {}
        try:
            self._container.seek(pts[first], stream=stream, backward=True, any_frame=False)
            for frame in self._container.decode(stream):
                self.frames_decoded += 1
                i = index_of.get(frame.pts)
                if i is None:
                    return None
                if i in wanted:
                    found[i] = _upright(frame)  # (H, W, 3) uint8
                if i >= last:
                    break
        except Exception:
            return None
        return found if len(found) == len(wanted) else None

    def _decode_from_start(self, wanted: set[int]) -> dict[int, np.ndarray]:
        """The wanted frames, counting decoded frames from frame 0 (no timestamps needed)."""
        last = max(wanted)
        found: dict[int, np.ndarray] = {}
        self._container.seek(0)
        stream = self._container.streams.video[0]
        done = 0  # frames decoded so far = the index of the frame being decoded
        try:
            for frame in self._container.decode(stream):
                self.frames_decoded += 1
                if done in wanted:
                    found[done] = _upright(frame)  # (H, W, 3) uint8
                done += 1
                if done > last:
                    break
        except Exception as e:
            raise VideoDecodeError(
                self.path, f"decode failed at frame {done} of {self.num_frames}: {readable_error(e)}") from e
        missing = sorted(wanted - found.keys())
        if missing:
            raise VideoDecodeError(
                self.path, f"stream ended before frame {missing[0]} (header says {self.num_frames} frames)"
            )
        return found

    def decode_all(self) -> int:
        """Decode every frame (nothing kept, no RGB conversion); returns how many decoded."""
        self._container.seek(0)
        done = 0
        try:
            for _ in self._container.decode(self._container.streams.video[0]):
                done += 1
        except Exception as e:
            raise VideoDecodeError(
                self.path, f"decode failed at frame {done} of {self.num_frames}: {readable_error(e)}") from e
        return done

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "PyAVVideo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(path: str | os.PathLike, backend: str = "decord"):
    """Open `path` with `backend` ("decord" or "pyav"); raises `VideoDecodeError` on failure.

    A directory is a frame folder (`frame_folder.FrameFolderVideo`, images in name order) whatever
    the backend: no codec is involved."""
    if os.path.isdir(path):
        from .frame_folder import FrameFolderVideo

        return FrameFolderVideo(path)
    if backend == "decord":
        return DecordVideo(str(path))
    if backend == "pyav":
        return PyAVVideo(str(path))
    raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")


def _validate(path: str, indices: Sequence[int], num_frames: int) -> list[int]:
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("no frame indices requested")
    bad = [i for i in idx if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"{path}: frame indices {bad[:4]} outside [0, {num_frames})")
    return idx


def _upright(frame) -> np.ndarray:
    """A PyAV frame as (H, W, 3) uint8 RGB, turned by its display-matrix rotation the way decord
    (and ffmpeg's autorotate) shows it. `frame.rotation` is the counter-clockwise angle in degrees
    (PyAV >= 13; older versions lack it and return rotated videos as stored)."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round(getattr(frame, "rotation", 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


# decord's C++ errors: "[04:02:57] /src/video/ffmpeg/threaded_decoder.cc:218: Check failed:
# avcodec_send_packet(dec_ctx_.get(), pkt.get()) >= 0 (-1094995529 vs. 0) Thread worker: ...",
# possibly nested and followed by a stack trace.
_CPP_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+?\.(?:cc|cpp|h):\d+: ")
_CHECK_FAILED = re.compile(r"Check failed: (\w+)\(.*?\) >= 0 \((-\d+) vs\. 0\)\s*(.*)")


def readable_error(e: BaseException, limit: int = 300) -> str:
    """The part of a decoder error a person can act on: FFmpeg's own message (PyAV's `strerror`,
    or decord's AVERROR code translated through PyAV) and the call that failed, without
    decord's timestamps, source locations and stack traces."""
    strerror, call = getattr(e, "strerror", None), getattr(e, "filename", None)
    if strerror:  # av.error.FFmpegError: "Invalid data found when processing input", "avcodec_send_packet()"
        text = f"{strerror} ({str(call).rstrip('()')})" if call else str(strerror)
    else:
        text = _CPP_PREFIX.sub("", " ".join(str(e).split()))
        text = text.split(" Stack trace:")[0].strip()
        m = _CHECK_FAILED.search(text)
        if m:
            func, code, rest = m.groups()
            text = f"{_averror_text(int(code))} ({func}{'; ' + rest if rest else ''})"
        text = text or type(e).__name__
    return text[:limit]


def _averror_text(code: int) -> str:
    try:
        import av

        av.error.err_check(code)
    except Exception as err:  # err_check raises the FFmpegError that names the code
        return getattr(err, "strerror", None) or f"FFmpeg error {code}"
    return f"FFmpeg error {code}"

"""Decoding errors and the checks every reader shares (a leaf module: imports nothing from data/).

`VideoDecodeError` is what every reader (decord, PyAV, torchcodec, frame folder) raises for a
video that cannot be read; `readable_error` turns a library's error into the part a person can
act on.
"""
from __future__ import annotations

import os
import re
from typing import Sequence


class VideoDecodeError(RuntimeError):
    """A video that cannot be opened or decoded; `reason` is a short human-readable cause.
    `file_problem` is True when the file itself is absent or empty (no other decoder can help)."""

    def __init__(self, path: str, reason: str, file_problem: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.file_problem = file_problem


def check_file(path: str) -> None:
    """Absent and empty files, named as such (the libraries report both as "invalid data")."""
    if not os.path.exists(path):
        raise VideoDecodeError(path, "missing file", file_problem=True)
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)", file_problem=True)


def validate_indices(path: str, indices: Sequence[int], num_frames: int) -> list[int]:
    """`indices` as ints, each in [0, num_frames); an error naming the file otherwise."""
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("no frame indices requested")
    bad = [i for i in idx if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"{path}: frame indices {bad[:4]} outside [0, {num_frames})")
    return idx


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

"""Writing videos with PyAV (no ffmpeg binary needed): H.264 mp4 files and short-side re-encodes.

Lossless choice: `write_video(..., lossless=True)` encodes with `libx264rgb`, pixel format `rgb24`,
`qp=0`. That skips the RGB->YUV conversion entirely, so decord and PyAV decode exactly the bytes
that were written (tests check this). The default (`libx264`, `yuv420p`, crf 18) is what real
datasets use and what every player reads.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np



def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int | Fraction = 30,
    lossless: bool = False,
    crf: int = 18,
    faststart: bool = False,
    rotation: int = 0,
    keyint: int | None = None,
) -> None:
    """Encode `frames` (T, H, W, 3) uint8 RGB to an H.264 mp4 at `path`.

    yuv420p needs even H and W (x264 rejects odd sizes); lossless rgb24 takes any size.
    `faststart` moves the index (moov atom) to the front of the file, as web videos have it.
    `rotation`: degrees counter-clockwise stored in the display matrix, as phones do (the frames
    are stored as given; players and decoders show them turned by it). Needs a PyAV with
    `VideoStream.set_display_rotation` (18.1 has it). `keyint`: at most this many frames from
    one keyframe to the next (x264's default is 250).
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if not lossless and (h % 2 or w % 2):
        raise ValueError(f"yuv420p H.264 needs even height and width, got {h}x{w}")
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=container_options) as container:
        if lossless:
            stream = container.add_stream("libx264rgb", rate=fps)
            stream.pix_fmt = "rgb24"
            stream.options = {"qp": "0", **({"x264-params": f"keyint={keyint}"} if keyint else {})}
        else:
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt = "yuv420p"
            stream.options = x264_options(crf, keyint)
        stream.width, stream.height = w, h
        if rotation:
            stream.set_display_rotation(rotation)
        stream.thread_count = 1  # deterministic output, no oversubscription
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush delayed (B-)frames
            container.mux(packet)


def x264_options(crf: int, keyint: int | None = None, fixed_gop: bool = False,
                 fastdecode: bool = False) -> dict[str, str]:
    """libx264 options for constant-quality output that is the same bytes on every run.

    x264's macroblock-tree rate control (mbtree) made single-threaded encodes of identical frames
    differ between processes (about 1 synthetic video in 4, from the third frame on); without it
    they are byte-identical. It costs a little compression at the same crf.

    `keyint`: at most this many frames between keyframes. `fixed_gop`: exactly that many (ffmpeg's
    `-g K -keyint_min K -sc_threshold 0`: no extra keyframes at scene cuts), so a clip never
    decodes more than K-1 frames before its first one. `fastdecode`: x264's `-tune fastdecode`
    (no CABAC, no deblocking, no weighted prediction: cheaper to decode, bigger files).
    """
    params = "mbtree=0" + (f":keyint={keyint}" if keyint else "")
    if fixed_gop:
        if not keyint:
            raise ValueError("fixed_gop needs keyint")
        params += f":min-keyint={keyint}:scenecut=0"
    options = {"crf": str(crf), "x264-params": params}
    if fastdecode:
        options["tune"] = "fastdecode"
    return options


# `videored data k400 resize` output: short side 320, a keyframe every 16 frames (a 32-frame
# training span then starts at most 15 frames after a keyframe; docs/data.md has the trade-off)
TRAINING_KEYINT = 16


def _even_resized_hw(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Short side -> `short_side` (must be even), long side to the nearest even size (yuv420p)."""
    if short_side % 2:
        raise ValueError(f"short side must be even for yuv420p, got {short_side}")
    if height <= width:
        return short_side, 2 * max(1, round(width * short_side / height / 2))
    return 2 * max(1, round(height * short_side / width / 2)), short_side


def reencode_short_side(src: str | os.PathLike, dst: str | os.PathLike, short_side: int | None = 320,
                        crf: int = 18, keyint: int | None = None, fastdecode: bool = False) -> tuple[int, int]:
    """Re-encode `src` to H.264 mp4 `dst` with its short side = `short_side` (PyAV, no ffmpeg CLI).

    `short_side=None` keeps the size (rounded to even: yuv420p), for re-encoding an already resized
    copy. `keyint`: a keyframe exactly every `keyint` frames (`x264_options(fixed_gop=True)`);
    None: x264's default (up to 250, plus scene cuts). `fastdecode`: `-tune fastdecode`.

    Output is constant frame rate at the source's average rate, video only (audio is dropped:
    the models do not use it). Written to a temporary name and renamed at the end, so an
    interrupted run never leaves a half file under `dst` (this is what makes resizing resumable).
    Returns the new (height, width).
    """
    import av

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.partial{os.getpid()}.mp4")
    try:
        with av.open(str(src)) as inp:
            if not inp.streams.video:
                raise ValueError(f"{src}: no video stream")
            in_stream = inp.streams.video[0]
            rate = in_stream.average_rate or in_stream.guessed_rate or Fraction(30)
            ih, iw = in_stream.codec_context.height, in_stream.codec_context.width
            h, w = (_even_resized_hw(ih, iw, short_side) if short_side is not None
                    else (ih - ih % 2, iw - iw % 2))
            with av.open(str(tmp), "w", format="mp4") as out:
                out_stream = out.add_stream("libx264", rate=rate)
                out_stream.width, out_stream.height, out_stream.pix_fmt = w, h, "yuv420p"
                out_stream.options = x264_options(crf, keyint, fixed_gop=keyint is not None,
                                                  fastdecode=fastdecode)
                out_stream.thread_count = 1
                for i, frame in enumerate(inp.decode(in_stream)):
                    # area interpolation for down-scaling (what ffmpeg users pick to avoid aliasing)
                    small = frame.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
                    small.pts, small.time_base = i, 1 / Fraction(rate)  # CFR: frame i at i / rate
                    # the source's picture types would force keyframes where the source had them
                    # (libx264 honours them): the encoder alone places keyframes, as ffmpeg's CLI does
                    small.pict_type = 0  # AV_PICTURE_TYPE_NONE
                    for packet in out_stream.encode(small):
                        out.mux(packet)
                for packet in out_stream.encode():
                    out.mux(packet)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return h, w

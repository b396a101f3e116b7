"""Reading frames by index with PyAV (FFmpeg), decoding only what the requested frames need.

Frames are numbered 0..N-1 in presentation order, converted to RGB24 by libswscale and turned
upright by the display-matrix rotation (`frame.rotation`), so they equal decord's bit for bit.

What is decoded (the loader's cost is set by which frames are decoded, not by the library):
1. The packet table (`packet_index`, cached per file) says which packet carries each frame and
   where the keyframes are.
2. Each wanted frame starts at the last keyframe before it (open GOPs: one that also shows
   before it). Overlapping spans [keyframe, wanted packet] merge into runs; between runs the
   demuxer jumps (seek, or reading packets without decoding them) and the decoder is drained
   and reset, so the reference frames between two clips' spans are never decoded.
3. Inside a run, a packet whose frame is wanted is decoded in full; any other is sent with
   `skip_frame = NONREF`: the decoder skips it when the bitstream marks it non-reference (H.264
   `nal_ref_idc == 0`, HEVC sub-layer non-reference NAL types) and decodes it otherwise. Nothing a
   wanted frame depends on is skipped, so the output is identical to decoding every frame.
   Codecs not in `SKIP_NONREF_CODECS` decode every packet of the run (correct, slower).
Where the table cannot be trusted (packets without pts, a count that disagrees with the header)
or a run does not produce exactly its frames, the request is decoded from frame 0 instead:
slower, never different.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np
from av.video.reformatter import VideoReformatter

from .errors import VideoDecodeError, check_file, readable_error, validate_indices
from .packet_index import PacketIndex, cached_index
from .reader import VideoReader

# Decoders whose NONREF skipping is checked here bit for bit against a full decode (tests).
SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})
# Packets read without decoding before a seek is cheaper (a seek costs an index lookup + refill).
SEEK_GAP = 250


class PyAVVideo(VideoReader):
    """An opened video read through PyAV (FFmpeg). `skip_nonref=False` decodes every packet of a
    run (the reference path the tests compare against is `decode_sequential`)."""

    def __init__(self, path: str, skip_nonref: bool = True):
        import av

        check_file(path)
        self.path = path
        try:
            self._container = av.open(path)
        except Exception as e:
            raise VideoDecodeError(path, f"cannot open: {readable_error(e)}") from e
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = self._stream = self._container.streams.video[0]
            stream.codec_context.thread_count = 1  # like decord's num_threads=1: workers parallelize
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise VideoDecodeError(path, "unknown frame rate")
            self.fps = float(Fraction(rate))
            self.frames_decoded = 0  # frames the decoder returned so far (what skipping saves shows here)
            # one RGB converter for every frame of this video: its libswscale context is made
            # once (frame.to_ndarray makes a new one per call; same conversion, same bytes)
            self._rgb = VideoReformatter()
            self._index: PacketIndex | None = None
            # nb_frames from the container header; 0 when it does not store it (some mkv/webm):
            # then the packet count
            self.num_frames = stream.frames or self.index.num_packets
            if self.num_frames <= 0:
                raise VideoDecodeError(path, "no video frames")
            self.skip_nonref = skip_nonref and stream.codec_context.name in SKIP_NONREF_CODECS
        except BaseException:
            self._container.close()
            raise

    @property
    def index(self) -> PacketIndex:
        if self._index is None:
            self._index = cached_index(self.path, self._container)
        return self._index

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as (T, H, W, 3) uint8 RGB."""
        idx = validate_indices(self.path, indices, self.num_frames)
        wanted = set(idx)
        found = self._decode_runs(wanted)
        if found is None:
            found = self.decode_sequential(wanted)
        return np.stack([found[i] for i in idx])  # (T, H, W, 3)

    # ----- the selective path -----

    def _runs(self, wanted: set[int]) -> list[tuple[int, int]] | None:
        """[first packet, last packet] spans to decode, in decode order; None if the table
        cannot say (the caller decodes from the start)."""
        index = self.index
        if not index.usable or index.num_packets != self.num_frames:
            return None
        frames = np.array(sorted(wanted))
        starts = index.start_packet(frames)
        if (starts < 0).any():
            return None
        ends = index.packet_of_frame[frames]
        runs: list[list[int]] = []
        for s, e in sorted(zip(starts.tolist(), ends.tolist())):
            if runs and s <= runs[-1][1]:  # already decoding through s: continue
                runs[-1][1] = max(runs[-1][1], e)
            else:
                runs.append([s, e])
        return [(s, e) for s, e in runs]

    def _decode_runs(self, wanted: set[int]) -> dict[int, np.ndarray] | None:
        runs = self._runs(wanted)
        if runs is None:
            return None
        index = self.index
        frame_of_packet = index.frame_of_packet()
        frame_of_pts = {int(p): i for i, p in enumerate(np.sort(index.pts))}
        packet_of_pts = {int(p): i for i, p in enumerate(index.pts)}
        cc = self._stream.codec_context
        found: dict[int, np.ndarray] = {}
        packets, pos = None, -1  # demux iterator and the position of its next packet
        mode = cc.skip_frame = "DEFAULT"
        try:
            for first, last in runs:
                if packets is None or not pos <= first <= pos + SEEK_GAP:
                    packets, pos = self._seek_to(int(first)), None
                for packet in packets:
                    if not packet.size:
                        continue
                    if pos is None:  # the first packet after a seek: where did it land?
                        pos = packet_of_pts.get(packet.pts, first + 1)
                        if pos > first:  # landed after the keyframe (or off the table)
                            return None
                    if pos < first:  # before the run: read, not decoded
                        pos += 1
                        continue
                    skip = "NONREF" if self.skip_nonref and frame_of_packet[pos] not in wanted else "DEFAULT"
                    if skip != mode:  # set only on change (each set goes through PyAV's property)
                        cc.skip_frame = mode = skip
                    if not self._collect(cc.decode(packet), frame_of_pts, wanted, found):
                        return None
                    pos += 1
                    if pos > last:
                        break
                cc.skip_frame = mode = "DEFAULT"
                ok = self._collect(cc.decode(None), frame_of_pts, wanted, found)  # drain delayed frames
                cc.flush_buffers()  # ready for the next run's keyframe
                if not ok:
                    return None
        except Exception:  # a broken file: the sequential decode names the frame it fails at
            return None
        finally:
            cc.skip_frame = "DEFAULT"
        return found if len(found) == len(wanted) else None

    def _seek_to(self, packet: int):
        """A demux iterator positioned at or before `packet` (a keyframe)."""
        index = self.index
        self._container.seek(int(index.dts[packet]), stream=self._stream, backward=True, any_frame=False)
        return self._container.demux(self._stream)

    def _collect(self, frames, frame_of_pts: dict[int, int], wanted: set[int],
                 found: dict[int, np.ndarray]) -> bool:
        for frame in frames:
            self.frames_decoded += 1
            i = frame_of_pts.get(frame.pts)
            if i is None:
                return False
            if i in wanted:
                found[i] = _upright(frame, self._rgb)  # (H, W, 3) uint8
        return True

    # ----- the plain path: every frame from the start -----

    def decode_sequential(self, wanted: set[int]) -> dict[int, np.ndarray]:
        """The wanted frames, decoding every frame from frame 0 and numbering them by count (no
        timestamps needed): the reference the selective path must equal, and its fallback."""
        last = max(wanted)
        found: dict[int, np.ndarray] = {}
        self._container.seek(0)
        self._stream.codec_context.flush_buffers()
        done = 0  # frames decoded so far = the index of the frame being decoded
        try:
            for frame in self._container.decode(self._stream):
                self.frames_decoded += 1
                if done in wanted:
                    found[done] = _upright(frame, self._rgb)  # (H, W, 3) uint8
                done += 1
                if done > last:
                    break
        except Exception as e:
            raise VideoDecodeError(
                self.path, f"decode failed at frame {done} of {self.num_frames}: {readable_error(e)}") from e
        missing = sorted(wanted - found.keys())
        if missing:
            raise VideoDecodeError(
                self.path, f"stream ended before frame {missing[0]} (header says {self.num_frames} frames)")
        return found

    def decode_all(self, chunk: int = 32) -> int:
        """Decode every frame in one sequential pass (nothing kept, no RGB conversion; `chunk`
        unused); returns how many decoded."""
        self._container.seek(0)
        self._stream.codec_context.flush_buffers()
        done = 0
        try:
            for _ in self._container.decode(self._stream):
                done += 1
        except Exception as e:
            raise VideoDecodeError(
                self.path, f"decode failed at frame {done} of {self.num_frames}: {readable_error(e)}") from e
        return done

    def close(self) -> None:
        self._container.close()


def _upright(frame, rgb24: VideoReformatter) -> np.ndarray:
    """A PyAV frame as (H, W, 3) uint8 RGB, turned by its display-matrix rotation the way decord
    (and ffmpeg's autorotate) shows it. `frame.rotation` is the counter-clockwise angle in degrees
    (PyAV >= 13; older versions lack it and return rotated videos as stored)."""
    rgb = rgb24.reformat(frame, format="rgb24").to_ndarray()
    quarter_turns = round(getattr(frame, "rotation", 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb

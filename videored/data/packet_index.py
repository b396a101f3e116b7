"""The packet table of a video stream (demuxed, never decoded), built once per file and cached.

A clip reader needs, before decoding anything: how many frames there are, which packet carries
frame i (frames are numbered 0..N-1 in presentation order, i.e. by packet pts), and which packets
are keyframes. Demuxing the whole file gives all three; it is cheap next to decoding but not free
(one pass over the file), so the table is kept in a per-process cache keyed by the path and
checked against the file's size and mtime on every use: a file that changed gets a new table.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# packets' worth of tables kept per process: 25 bytes a packet (pts, dts, key, frame order), so
# ~50 MB, e.g. ~6,700 ten-second 30 fps clips; the least recently used tables go first
CACHE_PACKETS = 2_000_000


@dataclass(frozen=True)
class PacketIndex:
    """Packets of one video stream in decode (file) order.

    pts, dts: (P,) int64 in the stream's time base (dts = pts where the container gives none);
    key: (P,) bool keyframe flags. `usable` is False when frames cannot be told from packets
    (a packet without pts, two packets with one pts): readers then decode from the start.
    """

    pts: np.ndarray
    dts: np.ndarray
    key: np.ndarray
    usable: bool

    @property
    def num_packets(self) -> int:
        return len(self.pts)

    @cached_property
    def packet_of_frame(self) -> np.ndarray:
        """(P,) packet position of frame i (the i-th smallest pts); kept with the index (8 bytes a
        packet). The readers' per-call lookup dicts are built per request instead (~0.1 ms)."""
        return np.argsort(self.pts, kind="stable")

    def frame_of_packet(self) -> list[int]:
        """Frame index carried by each packet."""
        out = np.empty(self.num_packets, dtype=np.int64)
        out[self.packet_of_frame] = np.arange(self.num_packets)
        return out.tolist()

    def start_packet(self, frames: np.ndarray) -> np.ndarray:
        """For each frame index, the packet to start decoding from: the last keyframe that is at
        or before the frame's packet in decode order AND shows at or before it. The second
        condition matters for open GOPs: a leading B-frame shown before its GOP's keyframe
        references the previous GOP, so its decode starts at the previous keyframe.
        Returns -1 where no keyframe qualifies."""
        pos = self.packet_of_frame[frames]  # (F,) packet of each wanted frame
        keys = np.flatnonzero(self.key)  # (K,) keyframe packet positions, increasing
        out = np.full(len(frames), -1, dtype=np.int64)
        for j, (p, t) in enumerate(zip(pos, self.pts[pos])):
            ok = keys[(keys <= p) & (self.pts[keys] <= t)]
            if len(ok):
                out[j] = ok[-1]
        return out


_cache: "OrderedDict[str, tuple[int, int, PacketIndex]]" = OrderedDict()
_cached_packets = 0


def cached_index(path: str, container) -> PacketIndex:
    """The packet table of `path`'s first video stream; `container` is the open PyAV container
    (left seeked to the start when the table is built here). Rebuilt when the file's size or
    mtime differs from the cached table's."""
    st = os.stat(path)
    key = os.path.realpath(path)
    hit = _cache.get(key)
    if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        _cache.move_to_end(key)
        return hit[2]
    global _cached_packets
    index = build_index(container)
    if hit is not None:
        _cached_packets -= _cache.pop(key)[2].num_packets
    _cache[key] = (st.st_size, st.st_mtime_ns, index)
    _cached_packets += index.num_packets
    while _cached_packets > CACHE_PACKETS and len(_cache) > 1:
        _cached_packets -= _cache.popitem(last=False)[1][2].num_packets
    return index


def build_index(container) -> PacketIndex:
    """Demux every packet of the first video stream (no decoding), then seek back to the start."""
    stream = container.streams.video[0]
    pts, dts, key = [], [], []
    for p in container.demux(stream):
        if p.size:  # the empty packet at the end flushes the decoder; it carries no frame
            pts.append(p.pts)
            dts.append(p.dts if p.dts is not None else p.pts)
            key.append(bool(p.is_keyframe))
    container.seek(0)
    usable = bool(pts) and all(p is not None for p in pts) and len(set(pts)) == len(pts)
    as_int = lambda v: np.array([-1 if x is None else x for x in v], dtype=np.int64)  # noqa: E731
    return PacketIndex(as_int(pts), as_int(dts), np.array(key, dtype=bool), usable)


def clear_cache() -> None:
    global _cached_packets
    _cache.clear()
    _cached_packets = 0

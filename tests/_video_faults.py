"""Broken video files for tests, made the way real ones break: the container is intact, the
coded frames from some packet on are garbage (ffmpeg then says "Invalid NAL unit size")."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from videored.data import write_video


def write_corrupted_video(path: Path, frames: np.ndarray, first_bad_packet: int, fps: int = 30) -> Path:
    """Encode `frames` (T, H, W, 3) uint8 like `write_video` (index in front), then overwrite the
    payload of every packet from `first_bad_packet` on (file order) with 0xff bytes."""
    import av

    good = path.with_name(path.name + ".good.mp4")
    write_video(good, frames, fps=fps, faststart=True)
    with av.open(str(good)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(good.read_bytes())
    for pos, size in packets[first_bad_packet:]:
        data[pos:pos + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    good.unlink()
    return path

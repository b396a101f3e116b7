"""Memory stays flat over 2,000 decodes (decord is known to leak on some paths)."""
import numpy as np
import pytest

from videored.data import open_video, write_video


def _rss_mib() -> float:
    """Resident set size of this process from /proc (psutil is not installed)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError("VmRSS not found in /proc/self/status")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_rss_flat_over_2000_decodes(tmp_path, backend):
    frames = np.random.default_rng(0).integers(0, 255, (16, 32, 96, 3), dtype=np.uint8)
    path = tmp_path / "tiny.mp4"
    write_video(path, frames, fps=30)
    idx = [0, 2, 4, 6]  # PyAV decodes up to the last index: keep the 2,000 calls cheap

    def decode_once():
        with open_video(path, backend) as video:
            out = video.get_frames(idx)
        assert out.shape == (4, 32, 96, 3)

    for _ in range(200):  # warm-up: allocator pools, codec tables, lazy imports
        decode_once()
    before = _rss_mib()
    for _ in range(2000):
        decode_once()
    growth = _rss_mib() - before
    # Each decode touches ~40 KiB of frames; a leak of even one frame buffer per call would add
    # 2000 * 9 KiB = 18 MiB. 8 MiB leaves room for allocator noise only.
    assert growth < 8.0, f"RSS grew by {growth:.1f} MiB over 2000 {backend} decodes"

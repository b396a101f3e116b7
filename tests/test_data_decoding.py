"""Decoding: frames written in the test come back exactly (lossless), both backends agree."""
import re

import numpy as np
import pytest

from _video_faults import write_corrupted_video
from videored.data import VideoDecodeError, open_video, write_video
from videored.data.decoding import backend_available

# the readers installed here (decord has no wheels on Linux aarch64 / macOS arm64)
INSTALLED = tuple(b for b in ("decord", "pyav") if backend_available(b))


def _random_frames(t=12, h=36, w=52, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_lossless_roundtrip_exact(tmp_path, backend):
    """libx264rgb + rgb24 + qp 0: no colour conversion anywhere, so every byte must come back."""
    frames = _random_frames()  # odd-free but not multiple-of-16 sizes; rgb24 takes any size
    path = tmp_path / "lossless.mp4"
    write_video(path, frames, fps=30, lossless=True)
    with open_video(path, backend) as video:
        assert video.num_frames == len(frames)
        assert video.fps == pytest.approx(30.0)
        decoded = video.get_frames(range(len(frames)))
        assert decoded.dtype == np.uint8 and decoded.shape == frames.shape
        np.testing.assert_array_equal(decoded, frames)
        # random access, unsorted with repeats: exactly the written frames at those positions
        idx = [9, 2, 2, 11, 0, 5]
        np.testing.assert_array_equal(video.get_frames(idx), frames[idx])


def test_decord_and_pyav_identical_on_lossy_h264(tmp_path):
    """Same indices -> the same frames bit for bit on an ordinary yuv420p H.264 file with B-frames."""
    # smooth content (4:2:0 chroma keeps it well) whose brightness changes by 4 per frame
    yy, xx = np.mgrid[0:40, 0:56]
    base = np.stack([60 + 40 * np.sin(xx / 5.0), 80 + 40 * np.cos(yy / 4.0), 70 + 30 * np.sin((xx + yy) / 6.0)], -1)
    frames = np.stack([np.clip(base + 4.0 * t, 0, 255) for t in range(45)]).astype(np.uint8)
    path = tmp_path / "lossy.mp4"
    write_video(path, frames, fps=25)
    idx = [44, 0, 17, 17, 30, 3]
    with open_video(path, "decord") as d, open_video(path, "pyav") as a:
        assert d.num_frames == a.num_frames == 45
        assert d.fps == pytest.approx(25.0) and a.fps == pytest.approx(25.0)
        fd, fa = d.get_frames(idx), a.get_frames(idx)
    np.testing.assert_array_equal(fd, fa)
    # lossy, but the right frames: each decoded frame is nearest to the written frame of its index
    dist = np.abs(fd[:, None].astype(float) - frames[None].astype(float)).mean(axis=(2, 3, 4))  # (6, 45)
    assert dist.argmin(axis=1).tolist() == idx
    assert dist.min(axis=1).max() < 3.0  # below the 4-per-frame brightness step


def test_decode_all_counts_frames(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, _random_frames(t=20, h=16, w=80), fps=30)
    for backend in INSTALLED:
        with open_video(path, backend) as video:
            assert video.decode_all() == 20


def test_out_of_range_indices_and_unknown_backend(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, _random_frames(t=4, h=16, w=80), fps=30)
    with open_video(path, "auto") as video, pytest.raises(IndexError, match=r"\[4\]"):
        video.get_frames([0, 4])
    with pytest.raises(ValueError, match="unknown video backend"):
        open_video(path, "opencv")


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_files_raise_named_errors(tmp_path, backend):
    frames = _random_frames(t=30, h=32, w=32)
    good = tmp_path / "good.mp4"
    write_video(good, frames, fps=30)
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 20)
    trunc = tmp_path / "trunc.mp4"  # moov atom at the end: cut in half, the index is gone
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {
        tmp_path / "missing.mp4": "missing file",
        zero: "empty file",
        text: "cannot open",
        trunc: "cannot open",
    }
    for path, reason in cases.items():
        with pytest.raises(VideoDecodeError) as err:
            with open_video(path, backend) as video:
                video.get_frames(range(video.num_frames))
        assert reason in err.value.reason and str(path) in str(err.value)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_truncated_with_index_in_front_fails_at_decode(tmp_path, backend):
    """faststart (moov first): the index survives and claims 30 frames, the data does not.
    PyAV opens it and fails when decoding the tail; decord already fails while indexing."""
    frames = _random_frames(t=30, h=32, w=96)
    good = tmp_path / "fs.mp4"
    write_video(good, frames, fps=30, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(VideoDecodeError, match="cannot open|decode failed|stream ended"):
        with open_video(cut, backend) as video:
            assert video.num_frames == 30
            video.get_frames(range(30))


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotated_phone_video_decodes_upright_with_both_backends(tmp_path, rotation):
    """A display matrix turning the stored picture `rotation` degrees counter-clockwise: both
    backends return the stored frames turned that way (np.rot90 is counter-clockwise), exactly."""
    frames = _random_frames(t=6, h=96, w=160)  # landscape as stored; 90/270 show portrait (decord
    # fails on widths <= 72 px, a bug of its own, so the portrait width stays above that)
    path = tmp_path / f"rot{rotation}.mp4"
    write_video(path, frames, fps=30, lossless=True, rotation=rotation)
    upright = np.rot90(frames, rotation // 90, axes=(1, 2))
    for backend in INSTALLED:
        with open_video(path, backend) as video:
            got = video.get_frames([5, 0, 3])
        assert got.shape == (3, *upright.shape[1:]) and got.flags["C_CONTIGUOUS"], backend
        np.testing.assert_array_equal(got, upright[[5, 0, 3]], err_msg=backend)


@pytest.mark.decord
def test_rotated_lossy_video_identical_across_backends(tmp_path):
    frames = np.stack([np.full((96, 160, 3), 10 * t, np.uint8) for t in range(8)])
    frames[:, :8, :16] = 250  # a bright top-left corner shows the orientation
    path = tmp_path / "rot90.mp4"
    write_video(path, frames, fps=30, rotation=90)
    with open_video(path, "decord") as d, open_video(path, "pyav") as a:
        fd, fa = d.get_frames(range(8)), a.get_frames(range(8))
    np.testing.assert_array_equal(fd, fa)
    assert fd.shape == (8, 160, 96, 3) and fd[0, -16:, :8].mean() > 200  # top-left went bottom-left


def test_decode_errors_keep_the_ffmpeg_message_and_the_frame(tmp_path):
    """Packets 12.. of 24 overwritten (container intact). "at frame N" means frames 0..N-1 came out
    before the decoder failed; its frame delay puts N a little before 12. Both backends name the
    same frame (decord's read-ahead thread gives up at a varying frame, so PyAV locates it)."""
    frames = _random_frames(t=24, h=96, w=160)
    good = tmp_path / "good.mp4"
    write_video(good, frames, fps=30, faststart=True)
    broken = write_corrupted_video(tmp_path / "broken.mp4", frames, first_bad_packet=12)
    at = {}
    for backend in INSTALLED:
        with pytest.raises(VideoDecodeError) as err:
            with open_video(broken, backend) as video:
                video.decode_all()
        reason = err.value.reason
        m = re.match(r"decode failed at frame (\d+) of 24: Invalid data found when processing input "
                     r"\(avcodec_send_packet", reason)
        assert m, (backend, reason)
        assert ".cc:" not in reason and "Check failed" not in reason, (backend, reason)
        at[backend] = int(m.group(1))
    assert at.get("decord", at["pyav"]) == at["pyav"] and 0 < at["pyav"] <= 12
    n = at["pyav"]
    with open_video(broken, "pyav") as b, open_video(good, "pyav") as g:  # the frames before it are intact
        np.testing.assert_array_equal(b.get_frames(range(n)), g.get_frames(range(n)))


@pytest.mark.parametrize("lossless", [True, False])
def test_pyav_seeks_to_the_keyframe_and_gives_the_same_frames(tmp_path, lossless):
    """A keyframe every 10 frames, B-frames in between: PyAV decodes from the keyframe before
    the first wanted frame, and every frame equals the one a decode from frame 0 gives (and
    decord's)."""
    rng = np.random.default_rng(3)
    frames = np.clip(rng.integers(0, 256, (1, 32, 96, 3)) + np.arange(60)[:, None, None, None] * 3,
                     0, 255).astype(np.uint8)  # (60, 32, 96, 3); decord fails on widths <= 72
    path = tmp_path / "gop10.mp4"
    write_video(path, frames, fps=30, lossless=lossless, keyint=10)
    starts = {i for i, key in enumerate(_keyframe_flags(path)) if key}
    assert starts == {0, 10, 20, 30, 40, 50}  # the file is what the test needs
    idx = [45, 47, 47, 52, 59]
    with open_video(path, "pyav") as a:
        seeked = a.get_frames(idx)
        assert a.frames_decoded <= 59 - 40 + 1 + 3  # keyframe 40 .. 59 (+ B-frame reordering)
        a.frames_decoded = 0
        sequential = np.stack([a.decode_sequential({i})[i] for i in idx])
        np.testing.assert_array_equal(seeked, sequential)
    if lossless:
        np.testing.assert_array_equal(seeked, frames[idx])
    if "decord" in INSTALLED:
        with open_video(path, "decord") as d:
            np.testing.assert_array_equal(seeked, d.get_frames(idx))


def test_pyav_decodes_from_the_start_when_timestamps_cannot_be_trusted(tmp_path):
    from dataclasses import replace

    frames = _random_frames(t=30)
    path = tmp_path / "gop5.mp4"
    write_video(path, frames, fps=30, lossless=True, keyint=5)
    with open_video(path, "pyav") as video:
        video._index = replace(video.index, usable=False)  # packets without pts (raw streams)
        np.testing.assert_array_equal(video.get_frames([21, 25]), frames[[21, 25]])
        assert video.frames_decoded == 26  # from frame 0
    with open_video(path, "pyav") as video:  # a table that does not match the decoded frames
        video._index = replace(video.index, pts=video.index.pts + 1)
        np.testing.assert_array_equal(video.get_frames([21, 25]), frames[[21, 25]])


def _keyframe_flags(path):
    """Per frame in presentation order: does a keyframe packet carry it (PyAV demux, no decode)."""
    import av

    with av.open(str(path)) as c:
        packets = sorted((p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size)
    return [key for _, key in packets]

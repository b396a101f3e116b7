"""`videored data k400 resize` writes files for fast training reads: a keyframe exactly every 16
frames (no scene-cut keyframes), optional -tune fastdecode, `--reencode` keeps the size."""
import numpy as np

from videored.cli import main as cli_main
from videored.data import write_video


def _keyframes(path):
    import av

    with av.open(str(path)) as c:
        packets = sorted((p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size)
        size = (c.streams.video[0].codec_context.height, c.streams.video[0].codec_context.width)
    return [i for i, (_, key) in enumerate(packets) if key], len(packets), size


def _x264_settings(path) -> str:
    """The option string x264 writes into its SEI (user data) at the start of the stream."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\x00", start)].decode("ascii", "replace")


def _scene_cuts(t=70, h=96, w=128):
    """Frames with hard cuts every 20 frames: x264's scene-cut detection would add keyframes."""
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    return np.stack([np.roll(scenes[i // 20], 2 * i, axis=1) for i in range(t)])


def test_resize_writes_fixed_gop_and_reencode_keeps_the_size(tmp_path, capsys):
    src = tmp_path / "src" / "cls"
    src.mkdir(parents=True)
    write_video(src / "a.mp4", _scene_cuts(), fps=30)
    assert cli_main(["data", "k400", "resize", "--src", str(tmp_path / "src"), "--dst", str(tmp_path / "r"),
                     "--short-side", "64", "--workers", "1"]) == 0
    keys, n, size = _keyframes(tmp_path / "r" / "cls" / "a.mp4")
    assert n == 70 and size == (64, 86) and keys == list(range(0, 70, 16))
    settings = _x264_settings(tmp_path / "r" / "cls" / "a.mp4")
    # x264 caps keyint_min at keyint / 2 + 1 (ffmpeg's -keyint_min 16 gives the same 9)
    assert "keyint=16 keyint_min=9" in settings and "scenecut=0" in settings and "cabac=1" in settings

    assert cli_main(["data", "k400", "resize", "--src", str(tmp_path / "r"), "--dst", str(tmp_path / "f"),
                     "--reencode", "--keyint", "8", "--fastdecode", "--workers", "1"]) == 0
    keys, n, size = _keyframes(tmp_path / "f" / "cls" / "a.mp4")
    assert n == 70 and size == (64, 86) and keys == list(range(0, 70, 8))
    settings = _x264_settings(tmp_path / "f" / "cls" / "a.mp4")
    assert "cabac=0" in settings and "deblock=0" in settings  # what -tune fastdecode turns off

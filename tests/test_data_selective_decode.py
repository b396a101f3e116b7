"""Every reader, and PyAV's selective path (keyframe runs + skipped non-reference frames), gives
exactly the frames of a plain PyAV decode of every frame, on files written here with B-frames,
one long GOP, short GOPs, open GOPs, a rotation, HEVC, and on ../shared/videos/ where present."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videored.data import packet_index
from videored.data.decoding import open_video, resolve_backend
from videored.data.pyav_reader import PyAVVideo
from videored.data.sampling import frame_indices

# ../shared/videos beside the checkout (VIDEORED_SHARED_VIDEOS overrides, e.g. for a worktree)
SHARED = Path(os.environ.get("VIDEORED_SHARED_VIDEOS")
              or Path(__file__).resolve().parents[1].parent / "shared" / "videos")


# ----- the reference: PyAV decoding every frame, numbered by count -----

def full_decode(path) -> np.ndarray:
    """(N, H, W, 3) uint8: every frame in output order, turned by its display rotation the way
    ffmpeg's autorotate shows it. Written from PyAV's API alone (none of videored's readers)."""
    import av

    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_count = 1
        for frame in c.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            out.append(np.ascontiguousarray(np.rot90(rgb, round(frame.rotation / 90) % 4)))
    return np.stack(out)


def encode(path, frames, *, codec="libx264", params="", rotation=0, fps=30) -> Path:
    """frames (T, H, W, 3) uint8 -> an mp4 with the given encoder parameters."""
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        key = "x264-params" if codec == "libx264" else "x265-params"
        s.options = {"crf": "28", key: params} if params else {"crf": "28"}
        s.thread_count = 1
        if rotation:
            s.set_display_rotation(rotation)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path)


def moving_texture(t: int, h: int = 80, w: int = 128, seed: int = 0) -> np.ndarray:
    """(t, h, w, 3) uint8 (decord 0.6 fails on widths <= 72, also when shown rotated): a textured pattern sliding 3 px a frame, plus noise: every frame
    differs, and a frame decoded from wrong references differs from the right one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w + 3 * t]
    base = np.stack([128 + 60 * np.sin(xx / 4.0) * np.cos(yy / 5.0), 128 + 50 * np.sin((xx + yy) / 7.0),
                     128 + 40 * np.cos(xx / 9.0)], -1)
    frames = np.stack([base[:, 3 * i:3 * i + w] for i in range(t)])
    return np.clip(frames + rng.normal(0, 6, frames.shape), 0, 255).astype(np.uint8)


# (codec, encoder params, rotation, frames): what each file exercises
CASES = {
    "bframes": ("libx264", "keyint=40:bframes=3:b-pyramid=normal:scenecut=0", 0, 100),
    "long_gop": ("libx264", "keyint=300:min-keyint=300:bframes=3:scenecut=0", 0, 150),
    "short_gop": ("libx264", "keyint=4:min-keyint=4:bframes=2:scenecut=0", 0, 60),
    "open_gop": ("libx264", "keyint=24:min-keyint=24:bframes=3:open-gop=1:scenecut=0", 0, 100),
    "rotated": ("libx264", "keyint=30:bframes=3:scenecut=0", 90, 80),
    "no_bframes": ("libx264", "keyint=50:bframes=0:scenecut=0", 0, 80),
    "hevc": ("libx265", "keyint=32:min-keyint=32:bframes=4:open-gop=0:scenecut=0:log-level=error", 0, 80),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every case's file and its full decode (written once for the module)."""
    import av

    root = tmp_path_factory.mktemp("gops")
    out = {}
    for name, (codec, params, rotation, t) in CASES.items():
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            continue  # this PyAV build has no such encoder: the case is skipped below
        path = encode(root / f"{name}.mp4", moving_texture(t, seed=len(out)), codec=codec,
                      params=params, rotation=rotation)
        out[name] = (path, full_decode(path))
    return out


def patterns(n: int, fps: float = 30.0, seed: int = 0) -> dict[str, list[int]]:
    """The frame sets the loader asks for: training clips (one, and two from one video), a dense
    clip, the 3 temporal views of test mode, and a scattered set."""
    import random

    random.seed(seed)
    train = lambda: frame_indices("videored", n, fps, num_frames=8, sampling_rate=4,  # noqa: E731
                                  target_fps=30, train=True).tolist()
    views = [frame_indices("videored", n, fps, num_frames=8, sampling_rate=4, target_fps=30,
                           train=False, view=v, num_views=3).tolist() for v in range(3)]
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, max(1, n - 16)))
    return {
        "train_1_clip": train(),
        "train_2_clips": sorted(set(train() + train())),
        "dense": list(range(start, min(n, start + 16))),
        "test_3_views": sorted(set(sum(views, []))),
        "scattered": sorted(set(rng.integers(0, n, 12).tolist())) + [n - 1],
    }


def readers():
    """(name, opener) of every reader installed here; the PyAV path with and without skipping."""
    out = [("pyav", lambda p: open_video(p, "pyav")),
           ("pyav_no_skip", lambda p: PyAVVideo(str(p), skip_nonref=False))]
    try:
        import decord  # noqa: F401
        out.append(("decord", lambda p: open_video(p, "decord", fallback=False)))
    except ImportError:
        pass
    try:
        resolve_backend("torchcodec")
        out.append(("torchcodec", lambda p: open_video(p, "torchcodec")))
    except ImportError:
        pass
    return out


def check_all_patterns(path, reference: np.ndarray, tag: str, skip: tuple[str, ...] = ()) -> None:
    for reader, opener in readers():
        if reader in skip:
            continue
        for pattern, idx in patterns(len(reference)).items():
            with opener(path) as video:
                assert video.num_frames == len(reference), (tag, reader)
                got = video.get_frames(idx)
            assert got.shape == reference[idx].shape, (tag, reader, pattern)
            same = np.array_equal(got, reference[idx])
            assert same, f"{tag}: {reader} differs from the full decode on {pattern} {idx}"


@pytest.mark.parametrize("case", list(CASES))
def test_every_reader_equals_a_full_decode(written, case):
    if case not in written:
        pytest.skip(f"this PyAV build has no {CASES[case][0]} encoder")
    path, reference = written[case]
    # the libraries' own open-GOP bugs are recorded below, not hidden
    check_all_patterns(path, reference, case, skip=("decord", "torchcodec") if case == "open_gop" else ())


# Found by the test above; strict, so each flips to a failure here once the library is fixed.
OPEN_GOP_BUGS = {
    "decord": ([57, 61, 65, 69, 73],  # 69: a leading frame of keyframe 72
               "decord 0.6.0 decodes an open-GOP keyframe's leading frames (shown before it, "
               "decoded after it) without the previous GOP: wrong pictures, no error"),
    "torchcodec": ([99],  # the last frame, asked for alone
                   "torchcodec 0.17 (exact seek) raises 'no more frames left to decode' for the "
                   "last frame of this open-GOP file asked for alone"),
}


@pytest.mark.parametrize("reader", list(OPEN_GOP_BUGS))
def test_known_open_gop_bugs_of_other_readers(written, reader):
    if reader not in dict(readers()):
        pytest.skip(f"{reader} is not installed here")
    idx, reason = OPEN_GOP_BUGS[reader]
    path, reference = written["open_gop"]
    with pytest.raises(Exception):  # noqa: B017  (a wrong picture or the library's own error)
        with dict(readers())[reader](path) as video:
            np.testing.assert_array_equal(video.get_frames(idx), reference[idx])
    with open_video(path, "pyav") as video:  # the selective PyAV path gets them right
        np.testing.assert_array_equal(video.get_frames(idx), reference[idx])


def test_the_written_files_have_what_the_cases_need(written):
    """B-frames (pts out of decode order), the GOP lengths, open-GOP leading frames, rotation."""
    import av

    def packets(path):
        with av.open(str(path)) as c:
            return [(p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]

    keyframes = {name: [i for i, (_, k) in enumerate(sorted(packets(p))) if k]
                 for name, (p, _) in written.items()}
    assert keyframes["long_gop"] == [0] and len(written["long_gop"][1]) == 150
    assert keyframes["short_gop"] == list(range(0, 60, 4))
    assert len(keyframes["bframes"]) >= 3
    pk = packets(written["bframes"][0])
    assert any(a[0] > b[0] for a, b in zip(pk, pk[1:]))  # reordered: B-frames
    # open GOP: a keyframe after which, in decode order, comes a frame shown before it
    pk = packets(written["open_gop"][0])
    leading = [i for i, (pts, key) in enumerate(pk) if key and i > 0
               and any(q < pts for q, _ in pk[i + 1:i + 5])]
    assert leading, "no open-GOP keyframe with leading frames"
    assert written["rotated"][1].shape[1:3] == (128, 80)  # shown portrait


@pytest.mark.parametrize("case", ["bframes", "long_gop", "open_gop", "hevc"])
def test_selective_path_decodes_fewer_frames(written, case):
    """Same frames, fewer decoded: non-reference frames no clip needs are skipped, and two clips
    far apart in a short-GOP file do not decode the reference frames between them."""
    if case not in written:
        pytest.skip(f"this PyAV build has no {CASES[case][0]} encoder")
    path, reference = written[case]
    idx = patterns(len(reference))["train_1_clip"]
    with PyAVVideo(str(path)) as fast, PyAVVideo(str(path), skip_nonref=False) as plain:
        np.testing.assert_array_equal(fast.get_frames(idx), plain.get_frames(idx))
        assert fast.frames_decoded < plain.frames_decoded, (fast.frames_decoded, plain.frames_decoded)


def test_clips_in_separate_gops_skip_what_lies_between(written):
    path, reference = written["short_gop"]  # keyframes every 4 frames
    with PyAVVideo(str(path)) as video:
        np.testing.assert_array_equal(video.get_frames([2, 50]), reference[[2, 50]])
        assert video.frames_decoded <= 8  # from keyframes 0 and 48 only (not 0..50)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/videos/ not present")
@pytest.mark.parametrize("name", ["kinetics_like_340x256.mp4", "kinetics_like_demo_340x256.mp4",
                                  "video_0.mov", "video_90.mov", "video_180.mov", "video_270.mov"])
def test_shared_videos(name):
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    check_all_patterns(path, full_decode(path), name)


# ----- the packet-index cache -----

def test_packet_index_is_cached_and_rebuilt_when_the_file_changes(tmp_path, monkeypatch):
    builds = []
    real = packet_index.build_index
    monkeypatch.setattr(packet_index, "build_index", lambda c: builds.append(1) or real(c))
    path = encode(tmp_path / "v.mp4", moving_texture(40, seed=1), params="keyint=10:bframes=2")
    first = full_decode(path)
    for _ in range(3):
        with PyAVVideo(str(path)) as v:
            np.testing.assert_array_equal(v.get_frames([5, 33]), first[[5, 33]])
    assert len(builds) == 1  # built once, then read from the cache

    encode(tmp_path / "w.mp4", moving_texture(25, seed=2), params="keyint=10:bframes=2")
    os.replace(tmp_path / "w.mp4", path)  # another video under the same name
    second = full_decode(path)
    with PyAVVideo(str(path)) as v:
        assert v.num_frames == 25
        np.testing.assert_array_equal(v.get_frames([5, 24]), second[[5, 24]])
    assert len(builds) == 2

    st = os.stat(path)  # same bytes, new mtime: rebuilt too (size + mtime are the key)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with PyAVVideo(str(path)) as v:
        v.get_frames([3])
    assert len(builds) == 3


def test_packet_index_cache_is_bounded_by_packets(tmp_path, monkeypatch):
    monkeypatch.setattr(packet_index, "CACHE_PACKETS", 50)
    packet_index.clear_cache()
    paths = [encode(tmp_path / f"{i}.mp4", moving_texture(20, seed=i), params="keyint=10") for i in range(4)]
    for p in paths:
        with PyAVVideo(str(p)) as v:
            v.get_frames([1])
    kept = list(packet_index._cache)
    assert len(kept) == 2 and packet_index._cached_packets == 40  # the two most recent files
    assert kept == [os.path.realpath(p) for p in paths[2:]]
    packet_index.clear_cache()


# ----- installs without decord (Linux aarch64, macOS arm64) -----

def test_without_decord_auto_is_pyav_and_decord_says_why(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError
    assert resolve_backend("auto") == "pyav"
    with pytest.raises(ImportError, match="no wheels for this platform"):
        resolve_backend("decord")
    path = encode(tmp_path / "v.mp4", moving_texture(20), params="keyint=8")
    with open_video(path) as v:
        np.testing.assert_array_equal(v.get_frames([3, 19]), full_decode(path)[[3, 19]])


def test_data_tests_pass_on_pyav_when_decord_cannot_import():
    """The suite's decoding and dataset tests, run where `import decord` fails: decord's own
    cases are skipped with a reason, everything else passes on PyAV."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "VIDEORED_TEST_WITHOUT_DECORD": "1", "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_data_decoding.py", "tests/test_data_dataset.py", "-k", "not spawn and not forkserver"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " skipped" in res.stdout and " passed" in res.stdout, res.stdout[-500:]


def test_torchcodec_missing_is_explained():
    try:
        resolve_backend("torchcodec")
    except ImportError as e:
        assert "torchcodec" in str(e) and ("pip install" in str(e) or "FFmpeg" in str(e))
    else:
        pytest.skip("torchcodec is installed and loads here")

"""Real-footage mask sets: ImageNet-Segmentation's HDF5 layout and DAVIS-style frame folders,
written tiny in the test and read back exactly (values, counts, geometry)."""
import numpy as np
import pytest
import torch
from PIL import Image

from videored.data.davis import davis_videos
from videored.data.davis_set import davis_clips
from videored.data.davis import annotation_folder, load_annotations
from videored.data.frame_folder import FrameFolderVideo
from videored.data.video_dataset import KINETICS_MEAN, KINETICS_STD

from _mask_sets import _frame, _write_davis, _write_gtsegs

h5py = pytest.importorskip("h5py")


# ---------------------------------------------------------------- ImageNet-Segmentation (.mat)

@pytest.fixture()
def gtsegs(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8),  # H != W: catches a transpose
              rng.integers(0, 256, (24, 16, 3), dtype=np.uint8)]
    masks = [np.zeros((20, 28), bool), np.zeros((24, 16), bool)]
    masks[0][3:9, 5:20] = True
    masks[1][10:, :4] = True
    path = tmp_path / "gtsegs_ijcv.mat"
    _write_gtsegs(path, images, masks)
    return path, images, masks


def test_imagenet_seg_reads_back_exactly(gtsegs):
    from videored.data.imagenet_seg import ImageNetSegmentation

    path, images, masks = gtsegs
    ds = ImageNetSegmentation(path, img_size=16)
    assert len(ds) == 2
    for i in range(2):
        image, mask = ds.raw(i)
        assert image.dtype == np.uint8 and np.array_equal(image, images[i])
        assert mask.dtype == np.bool_ and np.array_equal(mask, masks[i])
    # the model's view: the whole image resized to 16 x 16, the mask with it (nearest)
    item = ds[0]
    assert not item["failed"] and item["image"].shape == (3, 16, 16)
    ref = Image.fromarray(masks[0].astype(np.uint8) * 255).resize((16, 16), Image.NEAREST)
    assert torch.equal(item["mask"], torch.from_numpy(np.asarray(ref) > 0))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    pil = np.asarray(Image.fromarray(images[0]).resize((16, 16), Image.BILINEAR))
    expected = (torch.from_numpy(pil.copy()).permute(2, 0, 1).float() / 255 - mean) / std
    assert torch.allclose(item["image"], expected, atol=1e-6)
    crop = ImageNetSegmentation(path, img_size=16, geometry="crop")[1]  # DeiT's view: 18 -> 16
    assert crop["mask"].shape == (16, 16) and not crop["failed"]


def test_imagenet_seg_bad_files_say_what_is_wrong(tmp_path, gtsegs):
    from videored.data.imagenet_seg import ImageNetSegmentation

    not_hdf5 = tmp_path / "v5.mat"
    not_hdf5.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(ValueError, match="not an HDF5"):
        ImageNetSegmentation(not_hdf5)
    other = tmp_path / "other.mat"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(KeyError, match="/value/img"):
        ImageNetSegmentation(other)
    with pytest.raises(FileNotFoundError):
        ImageNetSegmentation(tmp_path / "missing.mat")
    # an item whose mask does not fit its image is counted as failed, not fatal
    path, images, masks = gtsegs
    bad = tmp_path / "bad.mat"
    _write_gtsegs(bad, images, [masks[0], masks[0]])
    ds = ImageNetSegmentation(bad, img_size=16)
    assert not ds[0]["failed"] and ds[1]["failed"]


# ---------------------------------------------------------------- DAVIS-style frame folders
def test_davis_folder_reads_clips_and_masks_exactly(tmp_path):
    _write_davis(tmp_path, {"bear": 10, "car": 6})
    assert [p.name for p in davis_videos(tmp_path)] == ["bear", "car"]
    video = tmp_path / "JPEGImages" / "480p" / "bear"
    assert annotation_folder(video) == (tmp_path / "Annotations" / "480p" / "bear").resolve()
    ids = np.asarray(Image.open(tmp_path / "Annotations/480p/bear/00004.png"))
    assert set(np.unique(ids)) == {0, 1, 2}
    assert np.array_equal(load_annotations(video)[4], ids != 0)

    ds = davis_clips(tmp_path, num_frames=4, sampling_rate=2, target_fps=24, crop_size=16,
                     num_spatial_crops=1)
    assert len(ds) == 2 and ds.num_videos == 2
    item = ds[0]
    assert not item["failed"] and item["label"] == 0
    # 24 fps folder at target 24 fps: span 4 * 2 = 8 of 10 frames, centred start 1 -> 1, 3, 5, 7;
    # 16 x 24 frames keep their short side 16; the centre crop is columns 4..19
    idx = [1, 3, 5, 7]
    frames = torch.from_numpy(np.stack([_frame(i) for i in idx])).permute(3, 0, 1, 2).float() / 255
    mean = torch.tensor(KINETICS_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(KINETICS_STD).view(3, 1, 1, 1)
    assert torch.allclose(item["video"], ((frames - mean) / std)[..., 4:20], atol=1e-6)
    masks = load_annotations(video)[idx][:, :, 4:20]
    assert torch.equal(item["mask"], torch.from_numpy(masks))
    short = ds[1]  # 6 frames < span 8: start 0, indices clamped to the last frame
    car = load_annotations(tmp_path / "JPEGImages/480p/car")
    assert torch.equal(short["mask"], torch.from_numpy(car[[0, 2, 4, 5]][:, :, 4:20]))


def test_davis_missing_annotation_is_a_counted_failure(tmp_path):
    _write_davis(tmp_path, {"bear": 6, "car": 6}, resolution="", skip_annotation=("car", 3))
    (tmp_path / "ImageSets").mkdir()
    (tmp_path / "ImageSets" / "val.txt").write_text("car\nbear\nghost\n")
    ds = davis_clips(tmp_path, split_file="ImageSets/val.txt", num_frames=2, sampling_rate=1,
                     target_fps=24, crop_size=16, num_spatial_crops=1)
    assert [ds[i]["failed"] for i in range(3)] == [True, False, True]  # car: no 00003.png; ghost
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        davis_clips(tmp_path / "nowhere", num_frames=2)


def test_frame_folder_is_a_video_in_natural_name_order(tmp_path):
    from videored.data import open_video

    for i in (10, 2, 1):
        Image.fromarray(_frame(i)).save(tmp_path / f"f_{i}.png")
    with open_video(tmp_path, "auto") as video:  # a folder, whatever the backend
        assert isinstance(video, FrameFolderVideo) and video.num_frames == 3 and video.fps == 24
        got = video.get_frames([2, 0, 2])
    assert np.array_equal(got, np.stack([_frame(10), _frame(1), _frame(10)]))

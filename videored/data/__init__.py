"""Data: decoded video clips (one opener: PyAV selective decode / decord / torchcodec / frame
folders), ImageNet folders for DeiT, a synthetic video task.

Importing this package has no side effects (no decord bridge is set, nothing is decoded).
"""
from videored.data.csv_list import ListRow, iter_video_list, read_classes
from videored.data.decoding import open_video
from videored.data.errors import VideoDecodeError
from videored.data.encoding import reencode_short_side, write_video
from videored.data.imagenet import build_imagenet_dataset, build_imagenet_transform
from videored.data.masks import has_masks, load_masks, mask_path, save_masks
from videored.data.synthetic import SynthConfig, render_video, write_synthetic_dataset
from videored.data.video_dataset import VideoClipDataset

__all__ = [
    "ListRow",
    "SynthConfig",
    "VideoClipDataset",
    "VideoDecodeError",
    "build_imagenet_dataset",
    "build_imagenet_transform",
    "iter_video_list",
    "has_masks",
    "load_masks",
    "mask_path",
    "open_video",
    "read_classes",
    "reencode_short_side",
    "render_video",
    "save_masks",
    "write_synthetic_dataset",
    "write_video",
]

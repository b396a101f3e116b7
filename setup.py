"""videored: interpretability-aware token reduction (IA-RED²) for video and image transformers."""
from setuptools import find_packages, setup

setup(
    name="videored",
    version="0.1.0",
    description="IA-RED² token reduction for JointST TimeSformer (video) and DeiT (images)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["videored", "videored.*"]),
    # The experiment files travel with the package (`configs/` in a checkout links here), so a
    # wheel install runs `videored quickstart` and `--config k400/...` like a checkout does.
    package_data={"videored": ["configs/*.yaml", "configs/*/*.yaml"]},
    install_requires=[
        # torch and torchvision must come from the registry together (matching builds).
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0.16",  # Block.forward(x, attn_mask=...) first appears in 1.0.16
        "einops>=0.8",
        # decord 0.6.0 has no wheels for Linux aarch64 or macOS arm64 (and no release since
        # 2021): left out there, where PyAV (below, its wheel carries FFmpeg) reads every video.
        'decord>=0.6.0; platform_machine != "aarch64" and platform_machine != "arm64" '
        'and platform_machine != "ARM64"',
        "av>=12",
        "pytorchvideo==0.1.5",
        "submitit>=1.5",
        "omegaconf>=2.3",
        "tqdm>=4.66",
        "numpy",
        "matplotlib>=3.9",  # first release built against numpy 2
        "pillow",
        "safetensors>=0.4",  # timm/HF weight files, read by content whatever their extension
    ],
    extras_require={
        # ImageNet-Segmentation's gtsegs_ijcv.mat is MATLAB v7.3 = HDF5 (paper Table 1)
        "seg": ["h5py>=3.8"],
        # PyTorch's decoder (data.decoder: torchcodec). It links the system's FFmpeg 4-8 shared
        # libraries instead of carrying its own: apt-get/conda/brew install ffmpeg first.
        "torchcodec": ["torchcodec>=0.5"],
        # tensorboard: only to read back the optional TensorBoard logs in the resume test
        "test": ["pytest>=8", "pytest-timeout", "h5py>=3.8", "tensorboard"],
    },
    entry_points={"console_scripts": ["videored=videored.cli:main"]},
)

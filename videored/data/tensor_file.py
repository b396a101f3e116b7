"""`TensorFileDataset`: ready tensors from one `.pt` file (`data.kind: tensor_file`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from videored.torch_io import load_torch_file


class TensorFileDataset(Dataset):
    """Samples from one `.pt` file holding {"x": (M, C, T, H, W) or (M, C, H, W), "y": (M,)}.

    For tests and debugging of the training algorithm without a decoding pipeline. A file with
    per-split entries {"train": {"x", "y"}, "val": {...}} selects the split.
    """

    def __init__(self, path: str | Path, split: str = "train") -> None:
        data = load_torch_file(path, what="tensor file (data.kind=tensor_file)")
        if split in data and isinstance(data[split], dict):
            data = data[split]
        if "x" not in data or "y" not in data:
            raise ValueError(f"{path}: expected keys 'x' and 'y' (or a '{split}' entry holding them)")
        if len(data["x"]) != len(data["y"]):
            raise ValueError(f"{path}: {len(data['x'])} inputs but {len(data['y'])} labels")
        self.x, self.y = data["x"].float(), data["y"].long()
        self.num_classes = int(self.y.max()) + 1 if len(self.y) else 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"video": self.x[i], "label": int(self.y[i])}

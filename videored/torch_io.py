"""The one reader of `.pt` files: every checkpoint, model file, weights file and tensor file that
videored reads goes through `load_torch_file`.

`torch.load` fails on a bad file with whatever the layer that noticed says: `EOFError` (empty file),
a miniz "failed finding central directory" (truncated), `UnpicklingError` with forty lines about
PyTorch 2.6 (a pickle of foreign classes), `KeyError: '101'` (not a torch file at all). A user
needs the file and the reason on one line, so this module turns each into an
`UnreadableFileError` saying which file and why. Always `weights_only=True`: nothing in a file is
ever executed; `allow` names the extra classes a caller accepts (e.g. `argparse.Namespace`).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch


class UnreadableFileError(ValueError):
    """A file that cannot be read; the one-line message names the file and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _reason(err: Exception) -> str:
    """One line on why torch.load refused a file."""
    text = str(err)
    if "central directory" in text or "PytorchStreamReader failed" in text:
        return "truncated or damaged (its zip directory is missing: a copy or write that did not finish?)"
    if isinstance(err, EOFError):
        return "ends early (truncated)"
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (f"holds a Python object of class {refused.group(1)}, which torch.load(weights_only=True) "
                "refuses (not a videored file, or saved with objects instead of a state dict)")
    if "Weights only load failed" in text:
        first = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), "")
        return ("not a torch tensor file (a plain pickle or another format"
                + (f": {first[:120]}" if first else "") + ")")
    if isinstance(err, KeyError) or "invalid load key" in text:
        return "not a torch file (unknown content)"
    return f"{type(err).__name__}: {text.splitlines()[0][:200] if text else ''}".rstrip(": ")


def load_torch_file(path: str | os.PathLike, *, what: str = "file", allow: Iterable[type] = (),
                    mmap: bool = False) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)`, or an `UnreadableFileError`
    "<path>: <what> <reason>" on one line. what: e.g. "checkpoint", "weights file";
    allow: classes accepted besides tensors and containers; mmap: map tensors lazily."""
    path = Path(path)
    if not path.exists():
        raise UnreadableFileError(path, f"{what} not found")
    if not path.is_file():
        raise UnreadableFileError(path, f"{what} expected, found a folder")
    if path.stat().st_size == 0:
        raise UnreadableFileError(path, f"{what} is empty (0 bytes: a write that never finished?)")
    try:
        with torch.serialization.safe_globals(list(allow)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unpickler's protocol warnings on foreign files
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except PermissionError:
        raise UnreadableFileError(path, f"{what} not readable (permission denied)") from None
    except Exception as err:  # each layer of torch.load raises its own kind
        raise UnreadableFileError(path, f"not a readable {what}: {_reason(err)}") from None

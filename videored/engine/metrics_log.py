"""Metrics: running sums across ranks (`Meter`), and a JSONL file in the run directory (one JSON
object per row) plus TensorBoard scalars when `tensorboard` happens to be installed. Only rank 0
writes; other ranks get a disabled logger."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .distributed import all_reduce_sum


class Meter:
    """Sums of per-sample metrics and the sample count; averaged across ranks on read.

    `add` takes anything with `sums` ({name: summed tensor}) and `count` (samples), e.g. a
    `stages.StepResult`. Sums stay tensors on the training device so adding a step does not
    synchronize the GPU.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, result: Any) -> None:
        for k, v in result.sums.items():
            v = v.detach().double()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += result.count

    def global_means(self, device: torch.device) -> tuple[dict[str, float], int]:
        keys = sorted(self.sums)
        parts = [self.sums[k].to(device).reshape(1) for k in keys]
        t = torch.cat(parts + [torch.tensor([float(self.count)], dtype=torch.float64, device=device)])
        all_reduce_sum(t)  # every rank must call this at the same point
        n = t[-1].item()
        return {k: t[i].item() / max(n, 1.0) for i, k in enumerate(keys)}, int(n)

    def state(self) -> dict:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count}

    def load(self, state: dict) -> None:
        self.sums = {k: torch.tensor(v, dtype=torch.float64) for k, v in state["sums"].items()}
        self.count = int(state["count"])


def _clean(value: Any) -> Any:
    """JSON-safe scalars: tensors -> python numbers, NaN/inf -> strings (JSON has no NaN)."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Append-only JSONL logger (appending keeps the earlier rows of a resumed run; `rewind`
    drops the rows of the steps a resumed run is about to replay, and makes TensorBoard purge
    their events)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb_folder = Path(run_dir) / "tb"
        self._fh = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            self._tb = _maybe_tensorboard(self._tb_folder)

    def log(self, row: dict[str, Any], step: Optional[int] = None) -> None:
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3), **{k: _clean(v) for k, v in row.items()}}
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        if self._tb is not None and step is not None:
            prefix = row.get("kind", "train")
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def rewind(self, global_step: int, source: str) -> int:
        """Resuming after `global_step` steps: drop the rows of later steps (a killed run logged
        them, the resumed one logs them again) and log a `resume` row; returns how many rows
        were dropped. A `nonfinite` row's global_step counts the steps before the one it
        skipped, so it belongs to step global_step + 1."""
        if not self.enabled:
            return 0
        from videored.atomic_io import atomic_write_text

        rows = read_metrics(self.path)
        kept = [r for r in rows if _steps_done(r) <= global_step]
        self._fh.close()
        atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), self.path)
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._tb is not None:  # TensorBoard hides the killed run's events of later steps
            self._tb.close()
            self._tb = _maybe_tensorboard(self._tb_folder, purge_step=global_step + 1)
        self.log({"kind": "resume", "global_step": global_step, "checkpoint": source,
                  "dropped_rows": len(rows) - len(kept)})
        return len(rows) - len(kept)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _steps_done(row: dict[str, Any]) -> int:
    """Training steps finished when the row's event happened (rows without a step: 0)."""
    step = row.get("global_step", 0)
    return step + 1 if row.get("kind") == "nonfinite" else step


def _maybe_tensorboard(folder: Path, purge_step: Optional[int] = None):
    """A SummaryWriter, or None without the optional `tensorboard` package. purge_step: readers
    drop the folder's earlier events at steps >= it (a resumed run's replayed steps)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder), purge_step=purge_step)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl file (a torn last line from a killed run is ignored)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows

"""Counting the training items that a substitute served because their video (or image) was bad.

The datasets mark such items themselves (`bad_path`, `bad_reason`: non-empty when a substitute
served the item), so the count comes from the batches the main process receives: exact under any
DataLoader start method and worker count. Each rank counts its own batches; the ranks' counts
are summed where all ranks meet anyway (log windows, epoch ends), so every rank takes the same
decision on the bad-fraction limit.

Malformed lines of the training list (bad label, wrong delimiter, a header) never became items:
the dataset left them out (`VideoClipDataset.malformed`). They count as bad videos all the same,
in every epoch (an epoch of N items then lost M more): in `bad_videos` as `<list>:<line>`, in the
count `malformed_lines` and in the `data.max_bad_fraction` check, (substituted + M) / (items + M).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .builders import num_items
from .distributed import all_gather_object, all_reduce_sum


class TooManyBadVideosError(RuntimeError):
    """More of an epoch's items needed a substitute than `data.max_bad_fraction` allows."""


class SubstitutionTally:
    """Per epoch: items loaded, items substituted, bad path -> reason (this rank; summed on
    read); over the run: one row per finished epoch (all ranks)."""

    def __init__(self, max_fraction: Optional[float], epoch_items: int,
                 malformed: Optional[dict[str, str]] = None) -> None:
        self.max_fraction = max_fraction
        self.epoch_items = epoch_items  # items all ranks load in a full epoch
        self.malformed = dict(malformed or {})  # "<list>:<line>" -> reason, left out of the dataset
        self.items = 0
        self.substituted = 0
        self.bad: dict[str, str] = {}
        self.epochs: list[dict] = []

    def add(self, batch: Any) -> None:
        self.items += num_items(batch)
        paths = batch.get("bad_path") if isinstance(batch, dict) else None
        if paths is None:  # a dataset that never substitutes (tensor files, toy sets)
            return
        for path, reason in zip(paths, batch["bad_reason"]):
            if path:
                self.substituted += 1
                self.bad.setdefault(path, reason)

    def global_counts(self, device: torch.device) -> tuple[int, int]:
        """(substituted, items) of this epoch so far, all ranks; every rank must call it."""
        t = torch.tensor([float(self.substituted), float(self.items)], dtype=torch.float64, device=device)
        all_reduce_sum(t)
        return int(t[0].item()), int(t[1].item())

    def check_list(self, listed: int) -> None:
        """Before training: stop when the list's malformed lines alone pass the limit
        (listed: the usable lines, i.e. the dataset's length)."""
        m = len(self.malformed)
        if self.max_fraction is not None and m and m / (m + listed) > self.max_fraction:
            self._fail(f"{m} of the {m + listed} lines of the training list are malformed "
                       f"({100 * m / (m + listed):.1f} %), more than data.max_bad_fraction="
                       f"{self.max_fraction}", self.malformed)

    def check_window(self, where: str, device: torch.device) -> int:
        """Mid-epoch: stop as soon as the epoch can no longer stay under the limit (substituted
        items and malformed lines already exceed limit x the epoch's items and those lines).
        Returns the epoch's substituted count."""
        substituted, loaded = self.global_counts(device)
        m = len(self.malformed)
        if self.max_fraction is not None and substituted + m > self.max_fraction * (self.epoch_items + m):
            self._fail(f"{where}: {substituted} of the {loaded} training items loaded so far were served by "
                       f"a substitute, and {m} list lines are malformed: more than data.max_bad_fraction="
                       f"{self.max_fraction} allows in an epoch of {self.epoch_items} items",
                       {**self.malformed, **self._gathered_bad()})
        return substituted

    def end_epoch(self, stage: str, epoch: int, device: torch.device) -> dict:
        """Close the epoch: its row (all ranks), kept for the summary; counters reset."""
        substituted, items = self.global_counts(device)
        row = {"stage": stage, "epoch": epoch, "items": items, "substituted": substituted,
               "malformed_lines": len(self.malformed), "bad_videos": {**self.malformed, **self._gathered_bad()}}
        self.epochs.append(row)
        self.items, self.substituted, self.bad = 0, 0, {}
        return row

    def check_epoch(self, row: dict) -> None:
        """Raise TooManyBadVideosError when the epoch's bad fraction passed the limit."""
        m = row.get("malformed_lines", 0)
        bad, total = row["substituted"] + m, row["items"] + m
        if self.max_fraction is not None and total and bad / total > self.max_fraction:
            lines = f" and {m} malformed list lines" if m else ""
            self._fail(f"stage {row['stage']} epoch {row['epoch']}: {row['substituted']} of {row['items']} "
                       f"training items were served by a substitute{lines} ({100 * bad / total:.1f} %), "
                       f"more than data.max_bad_fraction={self.max_fraction}", row["bad_videos"])

    def summary(self) -> dict:
        bad: dict[str, str] = {}
        for row in self.epochs:
            for path, reason in row["bad_videos"].items():
                bad.setdefault(path, reason)
        return {"substituted": sum(r["substituted"] for r in self.epochs),
                "items": sum(r["items"] for r in self.epochs),
                "malformed_lines": len(self.malformed),
                "bad_videos": dict(sorted(bad.items())), "epochs": list(self.epochs)}

    # running epoch counts (per rank) and finished epochs (all ranks) go into checkpoints
    def rank_state(self) -> dict:
        return {"items": self.items, "substituted": self.substituted, "bad": dict(self.bad)}

    def load_rank_state(self, state: dict) -> None:
        self.items, self.substituted, self.bad = state["items"], state["substituted"], dict(state["bad"])

    def _gathered_bad(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for part in all_gather_object(self.bad):
            for path, reason in part.items():
                merged.setdefault(path, reason)
        return dict(sorted(merged.items()))

    def _fail(self, what: str, bad: dict[str, str]) -> None:
        listed = "; ".join(f"{p}: {r}" for p, r in list(bad.items())[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise TooManyBadVideosError(
            f"{what}. Bad videos: {listed}{more}. Run `videored data scan` on the list and remove "
            "them, or raise data.max_bad_fraction")

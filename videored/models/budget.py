"""The budget engine: what a comparison's budget is, and the one place it becomes forward
arguments. Eval, bench, visualize, the interpretability table and training read it.

Vocabulary (the only one, in code, configs, CLI flags and results):
  kept_ratio   fraction of the N patch tokens that reach the last block (what is reported:
               `ReductionOutput.kept_ratio`). A budget is a target kept_ratio or a target GMACs.
  setting      a method's own per-call knob, `model(x, selector=..., setting=...)`, named in its
               table entry (`Method.setting_name`):
                 keep_rate   the top-k baselines: each of the D selections keeps
                             round(keep_rate * alive) tokens, so kept_ratio ~ keep_rate ** D
                 kept_ratio  ToMe and EViT take the final fraction itself and derive their own
                             schedules from it (ToMe's r per block, EViT's per-stage keep rates)
               Only a method's budget mapping (`Method.setting_for`) turns a kept_ratio into it.
  match        how a comparison is matched to a reference method (the learned interpreter),
               clip by clip: "ratio" (the reference's kept_ratio) or "gmacs" (its GMACs).

`Budget` is one of: a fixed kept_ratio, a fixed GMACs, or matched to a reference. Ranges are
checked once, by `check_fraction`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from videored.deprecation import warn_renamed  # noqa: F401  (re-exported)

MATCH_MODES = ("ratio", "gmacs")

def check_fraction(value: float | torch.Tensor, name: str = "kept_ratio",
                   where: str = "") -> float | torch.Tensor:
    """The one range check of a budget or setting: a fraction in [0, 1] (0 is allowed: matching a
    reference that kept nothing; every method still keeps at least one token). Returns value."""
    t = torch.as_tensor(value, dtype=torch.float64)
    bad = bool(((t < 0) | (t > 1) | t.isnan()).any())
    if bad:
        shown = value if t.ndim == 0 else t.tolist()
        raise ValueError(f"{where + ': ' if where else ''}{name} must be in [0, 1], got {shown}")
    return value


# ---- budget mappings: kept_ratio -> a method's setting ----

def topk_setting(kept_ratio: float | torch.Tensor, groups: int) -> float | torch.Tensor:
    """keep_rate of the top-k baselines that leaves `kept_ratio` of the patches after `groups`
    selections, each keeping that rate of the alive tokens: kept_ratio ** (1 / D)."""
    if isinstance(kept_ratio, torch.Tensor):
        return kept_ratio.double().clamp(1e-6, 1.0) ** (1.0 / groups)
    return min(1.0, max(float(kept_ratio), 1e-6) ** (1.0 / groups))


def kept_ratio_itself(kept_ratio: float | torch.Tensor, groups: int) -> float | torch.Tensor:
    """Budget mapping of the in-block reducers: their setting is the kept ratio itself."""
    if isinstance(kept_ratio, torch.Tensor):
        return kept_ratio.double().clamp(1e-6, 1.0)
    return min(1.0, max(float(kept_ratio), 1e-6))


# ---- cost of a setting, and the setting that meets a cost ----

def setting_for_gmacs(model, method, gmacs: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """(B,) settings of `method` (a table entry) whose predicted GMACs (`method.gmacs_at`) come
    closest to `gmacs` (B,). Cost rises with the setting (in whole-token steps), so bisection
    brackets the target and the closer of the two ends is taken."""
    target = gmacs.double().cpu()
    lo, hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = method.gmacs_at(model, method, mid).double() <= target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    err_lo = (method.gmacs_at(model, method, lo).double() - target).abs()
    err_hi = (method.gmacs_at(model, method, hi).double() - target).abs()
    return torch.where(err_lo <= err_hi, lo, hi)


class ForwardKwargs(dict):
    """The forward arguments of a budget: a plain dict ({"selector", "setting"}) whose old key
    `keep_ratio` still reads the setting (deprecated, warns once)."""

    def __missing__(self, key: str):
        if key == "keep_ratio" and "setting" in self:
            warn_renamed("keep_ratio", "setting", "budget forward kwargs")
            return self["setting"]
        raise KeyError(key)


def method_kwargs(model, method, *, kept_ratio: float | torch.Tensor | None = None,
                  gmacs: torch.Tensor | None = None) -> dict:
    """Keyword arguments so that `model(x, **method_kwargs(...))` runs `method` (a table entry)
    at the budget: kept_ratio (float, or (B,) per clip) or gmacs (B,). Unbudgeted methods
    (original, the interpreter) ignore both; a budgeted method without a budget runs at the
    model's default setting."""
    kwargs = ForwardKwargs(selector=method.selector)
    if not method.budgeted:
        return kwargs
    if gmacs is not None:
        setting = setting_for_gmacs(model, method, gmacs)
    elif kept_ratio is not None:
        setting = method.setting_for(check_fraction(kept_ratio), model.groups)
    else:
        return kwargs
    device = next(model.parameters()).device
    kwargs["setting"] = setting.to(device) if isinstance(setting, torch.Tensor) else setting
    return kwargs


@dataclass(frozen=True)
class Budget:
    """One budget for every budgeted method of a comparison.

    kept_ratio  fixed: every budgeted method reaches this fraction of patches
    gmacs       fixed: every budgeted method costs this many GMACs per clip
    match       neither fixed: each clip matches the `reference` method's kept ratio ("ratio")
                or GMACs ("gmacs") on that clip
    """
    kept_ratio: float | None = None
    gmacs: float | None = None
    match: str = "ratio"
    reference: str = "interpreter"

    def __post_init__(self) -> None:
        if self.kept_ratio is not None and self.gmacs is not None:
            raise ValueError("a Budget is a kept_ratio or a GMACs target, not both")
        if self.match not in MATCH_MODES:
            raise ValueError(f"match must be one of {MATCH_MODES}, got {self.match!r}")
        if self.kept_ratio is not None:
            check_fraction(self.kept_ratio)
        if self.gmacs is not None and not self.gmacs > 0:
            raise ValueError(f"gmacs must be > 0, got {self.gmacs}")

    @classmethod
    def of(cls, kept_ratio: float | None = None, match: str = "ratio") -> "Budget":
        """The CLI's budget: a fixed kept_ratio when given, else matched by `match`."""
        return cls(kept_ratio=kept_ratio, match=match)

    @property
    def matched(self) -> bool:
        """True when the targets come from a reference forward, clip by clip."""
        return self.kept_ratio is None and self.gmacs is None

    @property
    def reference_key(self) -> str:
        """What a matched budget reads from the reference: its `kept_ratio` or its `gflops`."""
        return "kept_ratio" if self.match == "ratio" else "gflops"

    def reference_values(self, out) -> torch.Tensor:
        """(B,) the targets a reference forward `out` (ReductionOutput) sets."""
        return getattr(out, self.reference_key).detach().double().cpu()

    def forward_kwargs(self, model, method, *, batch: int | None = None,
                       reference: torch.Tensor | None = None) -> dict:
        """model(x, **forward_kwargs(...)) runs `method` (a table entry) at this budget.

        reference (B,): a matched budget's per-clip targets (`reference_values`, or stored per
        view); batch: the clip count a fixed GMACs target is spread over."""
        if self.kept_ratio is not None:
            return method_kwargs(model, method, kept_ratio=self.kept_ratio)
        if self.gmacs is not None:
            n = batch if batch is not None else (1 if reference is None else len(reference))
            return method_kwargs(model, method,
                                 gmacs=torch.full((n,), float(self.gmacs), dtype=torch.float64))
        if reference is None:  # nothing to match (no reference ran): the model's default
            return method_kwargs(model, method)
        reference = reference.double().cpu()
        if self.match == "ratio":
            return method_kwargs(model, method, kept_ratio=reference)
        return method_kwargs(model, method, gmacs=reference)

    def describe(self) -> dict:
        """How results.json records the budget."""
        if self.kept_ratio is not None:
            return {"match": "fixed", "kept_ratio": self.kept_ratio}
        if self.gmacs is not None:
            return {"match": "fixed", "gmacs": self.gmacs}
        return {"match": self.match, "reference": self.reference}


# ---- the interpreter's budget mapping where its own decisions do not set it ----

@torch.no_grad()
def calibrate_interpreter(model, x: torch.Tensor,
                          kept_ratio: float | Sequence[float]) -> list[float] | list[torch.Tensor]:
    """Thresholds, group by group, that make the (untrained) interpreter leave `kept_ratio` of
    the patch tokens of x at the last block; set on the model and returned (speed benchmarks).

    kept_ratio: one number for the whole batch (one threshold per group: the quantile of the
    batch's alive scores), or one per clip (B,) (a (B, 1) threshold per group, each clip's own
    quantile: unequal counts per clip). Each group keeps keep_rate = kept_ratio ** (1/D) of its
    alive tokens (`topk_setting`)."""
    per_clip = not isinstance(kept_ratio, (int, float))
    if not per_clip and kept_ratio >= 1.0:
        thresholds = [0.0] * model.groups
    else:
        thresholds = []
        for j in range(model.groups):
            for interpreter, threshold in zip(model.interpreters, thresholds):
                interpreter.threshold = threshold
            out = model(x, selector="interpreter", active_groups=j + 1)
            alive = out.keep[j - 1] if j > 0 else torch.ones_like(out.keep[0])
            if per_clip:
                t = [torch.quantile(out.scores[j][b][alive[b]].float(),
                                    1.0 - topk_setting(r, model.groups))
                     for b, r in enumerate(kept_ratio)]
                thresholds.append(torch.stack(t).view(-1, 1).to(x.device))
            else:
                scores = out.scores[j][alive].float()
                thresholds.append(float(torch.quantile(
                    scores, 1.0 - topk_setting(kept_ratio, model.groups))))
    for interpreter, threshold in zip(model.interpreters, thresholds):
        interpreter.threshold = threshold
    return thresholds


__all__ = ["Budget", "ForwardKwargs", "MATCH_MODES", "calibrate_interpreter", "check_fraction",
           "kept_ratio_itself", "method_kwargs", "setting_for_gmacs", "topk_setting",
           "warn_renamed"]

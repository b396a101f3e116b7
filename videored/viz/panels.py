"""What `videored visualize` draws for each method: the outputs of one input, as patch grids.

`method_panels` turns the `ReductionOutput`s of the methods wing (`models.methods.run_methods`,
explanations through `models.explanations.run_with_explanations`) into per-group score / keep
grids and the note each figure title carries (at which budget the method ran). Nothing here
runs a model.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from videored.models.explanations import is_explanation
from videored.models.methods import get_method
from videored.models.rlt import run_lengths
from videored.models.svit import reactivated

from .heatmap import patch_grid


def is_learned(method: str) -> bool:
    """The interpreter (decides with trained weights); explanations are not table methods."""
    return not is_explanation(method) and get_method(method).learned


def budget_note(model: nn.Module, method: str, kept: float, *, kept_ratio: float | None,
                match: str) -> str:
    """The title note: at which budget `method` ran on this input (kept: its kept fraction)."""
    if is_learned(method):
        return f"threshold {model.threshold:g}"
    if is_explanation(method):  # the dense model explained; its top patches at the same ratio
        return f"explanation-only, top {kept:.3f} of the patches"
    if get_method(method).native:  # sets its own count: RLT's threshold, a pruner's decisions
        return f"its own decisions ({kept:.3f} kept)"
    if kept_ratio is not None:
        return f"kept ratio {kept_ratio:g} (fixed)"
    if model.interpreters is not None:
        what = "kept ratio" if match == "ratio" else "GMACs"
        return f"the interpreter's {what} ({kept:.3f} kept)"
    if get_method(method).reduce is not None:  # in-block reducers take the kept ratio itself
        return f"kept ratio {model.keep_ratio:.3f} (model default)"
    return f"keep ratio {model.keep_ratio:.3f} per selection (model default)"


def method_panels(model: nn.Module, outputs: dict, *, kept_ratio: float | None = None,
                  match: str = "ratio") -> tuple[dict, dict, dict, dict]:
    """outputs {method: ReductionOutput} of one input (batch of 1) ->

    ({method: (scores (D, T, gh, gw), keep (D, T, gh, gw) bool, predicted class, its
    probability)}, {method: note for the title}, {method: merged groups (T, gh, gw) int, for the
    in-block reducers (ToMe, EViT, SPViT): the final token each patch went into},
    {method: (kind, (T, gh, gw) grid)}: what a method does beyond keep / drop, from its output:
    "package" (SPViT: the patches folded into its package token, bool), "reactivated" (SViT:
    pruned by a gate, processed again by a later one, bool), "runs" (RLT: each kept token's run
    length in frames, 0 = dropped)); D = groups (the reducers' stages), T = 1 for images."""
    results, notes, groups, marks = {}, {}, {}, {}
    for m, res in outputs.items():
        notes[m] = budget_note(model, m, float(res.kept_ratio[0]), kept_ratio=kept_ratio,
                               match=match)
        scores = np.stack([patch_grid(s[0], model.grid) for s in res.scores])  # (D, T, gh, gw)
        keep = np.stack([patch_grid(k[0], model.grid) for k in res.keep])
        prob, label = res.logits[0].softmax(-1).max(-1)
        results[m] = (scores, keep, int(label), float(prob))
        if res.source is not None:
            groups[m] = patch_grid(res.source[0], model.grid)
        entry = None if is_explanation(m) else get_method(m)
        if entry is not None and entry.weights == "spvit":  # every pruned patch is in the package
            marks[m] = ("package", patch_grid(~res.keep[-1][0], model.grid))
        elif entry is not None and entry.weights == "svit":
            marks[m] = ("reactivated", patch_grid(reactivated(res.keep)[0], model.grid))
        elif entry is not None and entry.needs_pixels:  # RLT: selects once, at the input
            marks[m] = ("runs", patch_grid(run_lengths(res.keep[0], model.grid)[0], model.grid))
    return results, notes, groups, marks


__all__ = ["budget_note", "is_learned", "method_panels"]

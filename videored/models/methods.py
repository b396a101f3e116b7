"""THE method table: every token-reduction method, defined once.

A newcomer finds here how each method is scored, selected, costed and compared:

    METHODS[name] -> Method(selector, learned, select or reduce, scoring_macs, budget mapping)

Evaluation (`engine.run_eval`), the benchmark (`bench.speed`), the visualizer
(`commands.visualize`), the interpretability metric (`videored.interpretability`) and every CLI
`--methods` read this table and nothing else. The model (`vit.py`) calls `Method.select` before
each group; it knows no method by name.

Budget vocabulary (the only one, used in results too):
  kept_ratio     fraction of the N patch tokens that reach the last block (what is reported;
                 `ReductionOutput.kept_ratio`). A budget is a target kept_ratio or a target GMACs.
  keep_ratio     the *per-selection* setting of the top-k baselines: each of the D selections
                 keeps round(keep_ratio * alive) tokens, so kept_ratio ~ keep_ratio ** D. Only
                 `Method.setting_for` converts one into the other. The in-block reducers (ToMe,
                 EViT) take the kept_ratio itself and spread it over their blocks / stages
                 (tome.tome_schedule, evit.evit_schedule).
  match          how a comparison is matched to a reference method (the learned interpreter):
                 "ratio": each baseline reaches the reference's kept_ratio, clip by clip;
                 "gmacs": each baseline reaches the reference's GMACs, clip by clip.
                 `budget_kwargs` is the one place that turns a budget into forward arguments.

Explanation-only baselines (attention rollout, GradCAM, Chefer's relevance; paper Table 1) are
not entries: they remove no token. `EXPLANATIONS` below names them for `parse_methods`;
`videored.viz.explanations.run_with_explanations` runs them beside `run_methods` at its budget.

Adding a method = one `Method(...)` entry in `METHODS` (a scorer with the `select` signature, its
scoring cost, its budget mapping) plus its tests; every tool then offers it by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from timm.models.vision_transformer import Block

from . import flops
from .merge_blocks import MergeRun, evit_macs, evit_targets, run_evit, run_tome, tome_macs
from .selectors import (attention_scores, num_to_keep, random_scores, temporal_difference_scores,
                        topk_keep)
from .tokens import TokenSet, key_padding_mask
from .tome import tome_schedule

MATCH_MODES = ("ratio", "gmacs")


@dataclass
class SelectionInput:
    """What one selection (before group j) sees: explicit per-call state, nothing global.

    tokens  alive patch tokens, x (B, n, D)        cls (B, 1, D)
    block   the group's first block (the attention scorer reads its qkv)
    grid    (T, gh, gw) of the patch tokens
    interpreter  group j's MultiHeadInterpreter, or None
    sample  Bernoulli decisions (training) instead of greedy ones
    generator  the caller's CPU generator (None: global RNG for samples, `seeded` for scores)
    seeded     the model's generator seeded with its `seed` (random scores' default)
    random_seeds  (B,) per-sample seeds of the random scorer (masks independent of the batch)
    """
    tokens: TokenSet
    cls: torch.Tensor
    block: Block
    grid: tuple[int, int, int]
    interpreter: torch.nn.Module | None = None
    sample: bool = False
    generator: torch.Generator | None = None
    seeded: torch.Generator | None = None
    random_seeds: torch.Tensor | None = None


@dataclass
class Selection:
    """scores (B, n) informative scores of the alive rows; keep (B, n) bool; macs (B,) float64."""
    scores: torch.Tensor
    keep: torch.Tensor
    macs: torch.Tensor


def topk_setting(kept_ratio: float | torch.Tensor, groups: int) -> float | torch.Tensor:
    """Per-selection keep ratio that leaves `kept_ratio` of the patches after `groups`
    selections, each keeping that ratio of the alive tokens: kept_ratio ** (1 / D)."""
    if isinstance(kept_ratio, torch.Tensor):
        return kept_ratio.double().clamp(1e-6, 1.0) ** (1.0 / groups)
    return min(1.0, max(float(kept_ratio), 1e-6) ** (1.0 / groups))


def topk_gmacs(model, method: "Method", keep_ratio: torch.Tensor) -> torch.Tensor:
    """(B,) GMACs of a top-k method at per-selection keep_ratio (B,), without running the model.

    Follows the model's own rule (num_to_keep per selection, then the group's blocks at that
    count + cls) with the same flops formulas; tested equal to the measured `out.gflops`.
    """
    ratio = keep_ratio.cpu()
    N, dim = model.num_patches, model.embed_dim
    depth = len(model.blocks) // model.groups
    alive = torch.full(ratio.shape, N, dtype=torch.long)
    macs = torch.full(ratio.shape, float(flops.patch_embed_macs(
        N, model.patch_size, model.embed.patch_embed.proj.in_channels, dim)), dtype=torch.float64)
    for _ in range(model.groups):
        macs = macs + method.scoring_macs(alive.double(), dim)
        alive = num_to_keep(alive, ratio)
        macs = macs + depth * flops.block_macs(alive.double() + 1, dim, model.mlp_ratio)
    return ((macs + dim * model.num_classes) / 1e9).float()


def _no_macs(n: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.zeros_like(n)


@dataclass(frozen=True)
class Method:
    """One token-reduction method.

    name         table / CLI / results name
    selector     the name `model(x, selector=...)` takes ("none" for the dense model)
    learned      decides with trained weights (the interpreter): it is the reference a matched
                 comparison matches, and has no budget of its own
    summary      one line for docs and --help: how it scores and decides
    select       (SelectionInput, setting: float or (B,)) -> Selection, run before each group;
                 None: keeps every token (the do-nothing path)
    scoring_macs (alive counts (B,) float64, embed dim) -> (B,) MACs of scoring (cost formula);
                 the interpreter's depends on its head count too, so its `select` reports
                 `MultiHeadInterpreter.macs` (= flops.interpreter_macs) and this stays unset
    setting_for  budget mapping: (kept_ratio float or (B,), groups D) -> the per-call setting
                 (`keep_ratio` of `model(x, ...)`); default: the top-k rule kept_ratio ** (1/D)
    gmacs_at     cost of a setting: (model, method, setting (B,)) -> (B,) GMACs without a
                 forward; used to match a GMACs budget (default: the top-k count chain)
    reduce       an in-block reducer instead of `select` (ToMe, EViT: they merge / fuse between
                 a block's attention and MLP): (model, cls, patches, kept_ratio) -> MergeRun
    reduce_macs  its cost formula: (model, kept_ratio) -> MACs of the blocks (no forward)
    """
    name: str
    selector: str
    learned: bool
    summary: str
    select: Callable[[SelectionInput, float | torch.Tensor], Selection] | None = None
    scoring_macs: Callable[[torch.Tensor, int], torch.Tensor] = _no_macs
    setting_for: Callable[[float | torch.Tensor, int], float | torch.Tensor] = topk_setting
    gmacs_at: Callable[..., torch.Tensor] = topk_gmacs
    reduce: Callable[..., MergeRun] | None = None
    reduce_macs: Callable[[object, float], float] | None = None

    @property
    def reduces(self) -> bool:
        """True for every method but the dense model: it selects or merges tokens."""
        return self.select is not None or self.reduce is not None

    @property
    def budgeted(self) -> bool:
        """True when a budget sets its keep ratio (top-k baselines, in-block reducers); False:
        original, learned."""
        return self.reduces and not self.learned


# ---- the scorers behind one signature ----

def _interpreter(inp: SelectionInput, keep_ratio) -> Selection:
    """Eq. 1 scores; greedy I >= threshold, or u ~ Bernoulli(I) when sampling. keep_ratio unused."""
    if inp.interpreter is None:
        raise ValueError("this model was built without interpreters "
                         "(create it with selector='interpreter')")
    valid = inp.tokens.valid_mask
    scores = inp.interpreter(inp.tokens.x).masked_fill(~valid, 0.0)
    keep = inp.interpreter.decide(scores, inp.sample, inp.generator) & valid
    return Selection(scores, keep, inp.interpreter.macs(inp.tokens.counts().double()))


def _topk(scorer: Callable[[SelectionInput], torch.Tensor], name: str):
    """A baseline: scores from `scorer`, keep the top round(keep_ratio * alive) of each sample."""
    def select(inp: SelectionInput, keep_ratio) -> Selection:
        scores = scorer(inp)
        n = inp.tokens.counts().double()
        return Selection(scores, topk_keep(scores, inp.tokens, keep_ratio),
                         METHODS[name].scoring_macs(n, inp.tokens.x.shape[-1]))
    return select


def _random(inp: SelectionInput) -> torch.Tensor:
    return random_scores(inp.tokens, inp.generator or inp.seeded, inp.random_seeds)


def _attention(inp: SelectionInput) -> torch.Tensor:
    return attention_scores(inp.block, inp.cls, inp.tokens, key_padding_mask(inp.tokens.valid))


def _temporal_difference(inp: SelectionInput) -> torch.Tensor:
    return temporal_difference_scores(inp.tokens, inp.grid)


# ---- the in-block reducers (merge_blocks.py), kept_ratio -> their schedules ----

def _kept_ratio_itself(kept_ratio: float | torch.Tensor, groups: int) -> float | torch.Tensor:
    """Budget mapping of the in-block reducers: they take the final kept ratio itself and
    spread it over their blocks / stages (tome_schedule, evit_targets)."""
    if isinstance(kept_ratio, torch.Tensor):
        return kept_ratio.double().clamp(1e-6, 1.0)
    return min(1.0, max(float(kept_ratio), 1e-6))


def reducer_gmacs(model, method: "Method", kept_ratio: torch.Tensor) -> torch.Tensor:
    """(B,) GMACs of an in-block reducer at kept_ratio (B,): patch embed + its own block cost
    formula (`reduce_macs`, one value per distinct ratio) + head; no forward."""
    N, dim = model.num_patches, model.embed_dim
    head = flops.patch_embed_macs(N, model.patch_size, model.embed.patch_embed.proj.in_channels, dim)
    ratios = kept_ratio.cpu().tolist()
    costs = {r: method.reduce_macs(model, r) for r in set(ratios)}
    macs = torch.tensor([head + costs[r] for r in ratios], dtype=torch.float64)
    return ((macs + dim * model.num_classes) / 1e9).float()


def _tome(model, cls: torch.Tensor, patches: torch.Tensor, kept_ratio: float) -> MergeRun:
    return run_tome(list(model.blocks), cls, patches, keep_ratio=kept_ratio,
                    mlp_ratio=model.mlp_ratio, groups=model.groups)


def _tome_macs(model, kept_ratio: float) -> float:
    schedule = tome_schedule(model.num_patches, len(model.blocks), kept_ratio)
    return tome_macs(model.num_patches, schedule, model.embed_dim,
                     model.blocks[0].attn.head_dim, model.mlp_ratio)


def _evit(model, cls: torch.Tensor, patches: torch.Tensor, kept_ratio: float) -> MergeRun:
    return run_evit(list(model.blocks), cls, patches, keep_ratio=kept_ratio,
                    mlp_ratio=model.mlp_ratio)


def _evit_macs(model, kept_ratio: float) -> float:
    targets = evit_targets(model.num_patches, len(model.blocks), kept_ratio)
    return evit_macs(model.num_patches, len(model.blocks), targets, model.embed_dim,
                     model.mlp_ratio)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("original", "none", learned=False,
           summary="dense model: every token reaches every block"),
    Method("interpreter", "interpreter", learned=True,
           summary="multi-head interpreter (Eq. 1), keep I >= threshold; trained by REINFORCE",
           select=_interpreter),  # its cost depends on its head count: interpreter.macs
    Method("random", "random", learned=False,
           summary="uniform scores (seeded per clip), keep the top keep_ratio",
           select=_topk(_random, "random")),
    Method("attention", "attention", learned=False,
           summary="cls->patch attention of the group's first block (mean over heads), top keep_ratio",
           select=_topk(_attention, "attention"),
           scoring_macs=lambda n, dim: flops.attention_selector_macs(n + 1, dim)),
    Method("temporal_difference", "temporal_difference", learned=False,
           summary="L2 distance to the same patch in the previous frame, top keep_ratio",
           select=_topk(_temporal_difference, "temporal_difference")),
    Method("tome", "tome", learned=False,
           summary="ToMe: in every block, merge the r most similar token pairs (bipartite "
                   "matching of attention keys, proportional attention), training-free",
           reduce=_tome, reduce_macs=_tome_macs, setting_for=_kept_ratio_itself,
           gmacs_at=reducer_gmacs),
    Method("evit", "evit", learned=False,
           summary="EViT: at blocks 4, 7, 10 keep the top tokens by cls attention, fuse the rest "
                   "into one token weighted by that attention",
           reduce=_evit, reduce_macs=_evit_macs, setting_for=_kept_ratio_itself,
           gmacs_at=reducer_gmacs),
)}
SELECTORS = {m.selector: m for m in METHODS.values()}  # model-side name -> method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


# Explanation-only baselines of paper Table 1 (GradCAM, raw-attention-style relevance): they
# explain the dense model's prediction and remove no token, so they are not `METHODS` entries
# (no selector, no budget, no cost). `videored.viz.explanations` computes them and scores / draws
# their top patches at the kept ratio the token scorers reach. Named here so that every
# `--methods` parser reads one place; only the interpretability tools accept them.
EXPLANATIONS = ("raw_attention", "rollout", "attn_gradcam", "lrp", "transformer_attribution",
                "feature_gradcam", "chefer_iccv21", "gradcam", "chefer")  # explanations.py's, old


def parse_methods(text: str, *, explanations: bool = False) -> list[str]:
    """A CLI `--methods a,b,c` list, checked against the table (ValueError naming the unknown).

    explanations: also accept the explanation-only names (`EXPLANATIONS`), for the tools that
    score or draw them (`videored eval --interpretability --masks`, `videored visualize`)."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    allowed = (*METHODS, *EXPLANATIONS) if explanations else tuple(METHODS)
    unknown = [m for m in names if m not in allowed]
    if unknown:
        hint = ""
        if not explanations and set(unknown) & set(EXPLANATIONS):
            hint = (f"; {', '.join(EXPLANATIONS)} are explanation-only (they remove no token): "
                    "use them with --interpretability --masks PATH")
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(allowed)}{hint}")
    return names


# ---- cost: the analytic GMACs of a budgeted method at a per-selection setting ----

def predicted_gmacs(model, method: str, keep_ratio: float | torch.Tensor,
                    batch: int = 1) -> torch.Tensor:
    """(B,) GMACs `model(x, selector=method, keep_ratio=keep_ratio)` reports, without running it
    (the method's `gmacs_at`)."""
    m = get_method(method)
    if not m.budgeted:
        raise ValueError(f"{method}: only budgeted methods have a cost as a function of keep_ratio")
    ratio = keep_ratio if isinstance(keep_ratio, torch.Tensor) else torch.full(
        (batch,), float(keep_ratio), dtype=torch.float64)
    return m.gmacs_at(model, m, ratio)


def setting_for_gmacs(model, method: str, gmacs: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """(B,) per-selection keep ratios whose predicted GMACs come closest to `gmacs` (B,).

    Cost rises with the ratio (in whole-token steps), so bisection brackets the target and the
    closer of the two ends is taken.
    """
    target = gmacs.double().cpu()
    lo, hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = predicted_gmacs(model, method, mid).double() <= target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    err_lo = (predicted_gmacs(model, method, lo).double() - target).abs()
    err_hi = (predicted_gmacs(model, method, hi).double() - target).abs()
    return torch.where(err_lo <= err_hi, lo, hi)


@torch.no_grad()
def calibrate_interpreter(model, x: torch.Tensor, kept_ratio: float) -> list[float]:
    """The interpreter's budget mapping where its own decisions do not set the budget (speed
    benchmarks of untrained weights): thresholds, group by group, that leave `kept_ratio` of
    this batch's patch tokens at the last block. Sets them on the model and returns them."""
    if kept_ratio >= 1.0:
        thresholds = [0.0] * model.groups
    else:
        ratio = topk_setting(kept_ratio, model.groups)
        thresholds = []
        for j in range(model.groups):
            for interpreter, threshold in zip(model.interpreters, thresholds):
                interpreter.threshold = threshold
            out = model(x, selector="interpreter", active_groups=j + 1)
            alive = out.keep[j - 1] if j > 0 else torch.ones_like(out.keep[0])
            scores = out.scores[j][alive].float()
            thresholds.append(float(torch.quantile(scores, 1.0 - ratio)))
    for interpreter, threshold in zip(model.interpreters, thresholds):
        interpreter.threshold = threshold
    return thresholds


# ---- the budget: the one place a budget becomes forward arguments ----

def budget_kwargs(model, method: str, *, kept_ratio: float | torch.Tensor | None = None,
                  gmacs: torch.Tensor | None = None) -> dict:
    """Keyword arguments so that `model(x, **budget_kwargs(...))` runs `method` at the budget.

    kept_ratio: target fraction of patches at the last block (float, or (B,) per clip);
    gmacs: target GMACs per clip (B,). Unbudgeted methods (original, the interpreter) ignore
    both; a budgeted method without a budget runs at the model's default keep_ratio.
    """
    m = get_method(method)
    kwargs: dict = {"selector": m.selector}
    if not m.budgeted:
        return kwargs
    if gmacs is not None:
        ratio = setting_for_gmacs(model, method, gmacs)
    elif kept_ratio is not None:
        ratio = m.setting_for(kept_ratio, model.groups)
    else:
        return kwargs
    device = next(model.parameters()).device
    kwargs["keep_ratio"] = ratio.to(device) if isinstance(ratio, torch.Tensor) else ratio
    return kwargs


def reference_budget(out, match: str) -> dict:
    """The budget a reference forward `out` (ReductionOutput) sets for matched methods."""
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    if match == "ratio":
        return {"kept_ratio": out.kept_ratio.detach().double().cpu()}
    return {"gmacs": out.gflops.detach().double().cpu()}


@torch.no_grad()
def run_methods(model, x: torch.Tensor, methods: list[str], *, match: str = "ratio",
                kept_ratio: float | None = None, reference_model=None, **forward_kwargs) -> dict:
    """{method: ReductionOutput} of every method on the batch x, at one budget.

    kept_ratio given: every budgeted method reaches it (a fixed budget). Else each matches, clip
    by clip, the learned reference (the interpreter, run on `reference_model` or `model`) by
    `match`; without an interpreter the baselines run at the model's default keep_ratio.
    """
    ref_model = reference_model or model
    outputs: dict = {}
    budget: dict = {} if kept_ratio is None else {"kept_ratio": kept_ratio}
    if kept_ratio is None and getattr(ref_model, "interpreters", None) is not None and any(
            get_method(m).budgeted for m in methods):
        ref = ref_model(x, **budget_kwargs(ref_model, "interpreter"), **forward_kwargs)
        budget = reference_budget(ref, match)
        if "interpreter" in methods:
            outputs["interpreter"] = ref
    for m in methods:
        if m not in outputs:
            net = ref_model if get_method(m).learned else model
            outputs[m] = net(x, **budget_kwargs(net, m, **budget), **forward_kwargs)
    return {m: outputs[m] for m in methods}


__all__ = ["EXPLANATIONS", "MATCH_MODES", "METHODS", "Method", "SELECTORS", "Selection", "SelectionInput",
           "budget_kwargs", "calibrate_interpreter", "get_method", "parse_methods", "predicted_gmacs", "reference_budget",
           "run_methods", "setting_for_gmacs", "topk_gmacs", "topk_setting"]

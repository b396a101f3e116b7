"""THE method table: every token-reduction method, defined once.

A newcomer finds here how each method is scored, selected, costed and compared:

    METHODS[name] -> Method(selector, learned, select or reduce, scoring_macs, budget mapping)

Evaluation (`engine.run_eval`), the benchmark (`bench.speed`), the visualizer
(`commands.visualize`), the interpretability metric (`videored.interpretability`) and every CLI
`--methods` read this table and nothing else. The model (`vit.py`) calls `Method.select` before
each group; it knows no method by name.

Budgets (the vocabulary: kept_ratio, a method's own `setting`, match) live in `budget.py`;
costs in `cost.py` (the one chain the forward counts and the prediction follows). The table
names each method's setting (`setting_name`), its budget mapping (`setting_for`), its cost
(`scoring_macs` / `reduce_macs`, `gmacs_at`) and its training-time schedule (`train_schedule`).

Explanation-only baselines (raw attention, rollout, GradCAM, LRP, Chefer's relevance; paper
Table 1) are not entries: they remove no token. `EXPLANATIONS` below names them for
`parse_methods`; `videored.models.explanations` computes them (`run_with_explanations` runs
them beside `run_methods` at its budget).

Adding a method = one `Method(...)` entry in `METHODS` (a scorer with the `select` signature, its
scoring cost, its budget mapping) plus its tests; every tool then offers it by name
(docs/models.md walks through it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from timm.models.vision_transformer import Block

from . import flops
from .budget import (MATCH_MODES, Budget, calibrate_interpreter, kept_ratio_itself, method_kwargs,
                     topk_setting)
from .budget import setting_for_gmacs as _setting_for_gmacs
from . import rlt, spvit, svit
from .cost import embed_macs, group_macs, head_macs, reducer_gmacs, to_gmacs, topk_gmacs
from .evit import evit_blocks, warmup_kept_ratio
from .merge_blocks import MergeRun, evit_macs, evit_targets, run_evit, run_tome, tome_macs
from .selectors import attention_scores, random_scores, temporal_difference_scores, topk_keep
from .tokens import TokenSet, key_padding_mask
from .tome import tome_schedule

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
    pixels  (B, N, C*p*p) the clip's normalized pixel patches in token order
            (`rlt.pixel_patches`), only for methods with `needs_pixels` (else None)
    group   index j of the group this selection runs before
    rlt_threshold  RLT's tau for its threshold-native entry (the model's `rlt_threshold`)
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
    pixels: torch.Tensor | None = None
    group: int = 0
    rlt_threshold: float = rlt.RLT_THRESHOLD


@dataclass
class Selection:
    """scores (B, n) informative scores of the alive rows; keep (B, n) bool; macs (B,) float64."""
    scores: torch.Tensor
    keep: torch.Tensor
    macs: torch.Tensor


@dataclass(frozen=True)
class PrunerRecipe:
    """How a learned pruner (SPViT, SViT) trains through the stage engine: a `supervised` stage
    with `schedule.reduction` = the method runs `selector` (the pruner's own decisions: Gumbel
    samples, straight-through) and adds to the cross-entropy (`engine.stages.pruner_step`)

        ratio_weight · keep_ratio_loss(out.decisions, targets(S))        (S stages / gates)
      + distill_weight · logits_kl(out.logits, the dense starting model's logits)
      + token_distill_weight · token_mse(the kept patch tokens after the final norm, the dense
                                         model's tokens at the same positions)

    selector_lr_scale: the pruner's own weights (`model.pruners[weights]`) train at this
    multiple of the stage lr, in their own optimizer param groups (SPViT's reference trains its
    selectors at 100x the backbone's lr; configs set it, the recipe's default is 1: one lr).

    Config overrides: schedule.pruner_targets, schedule.ratio_weight, schedule.distill_weight,
    schedule.token_distill_weight, schedule.selector_lr_scale."""
    selector: str
    targets: Callable[[int], list[float]]
    ratio_weight: float
    distill_weight: float = 0.0
    token_distill_weight: float = 0.0
    selector_lr_scale: float = 1.0


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
    setting_name what `model(x, setting=...)` means for this method (budget.py): "keep_rate"
                 (per selection, the top-k baselines) or "kept_ratio" (the in-block reducers);
                 None for the unbudgeted methods
    scoring_macs (alive counts (B,) float64, embed dim) -> (B,) MACs of scoring (cost formula);
                 the interpreter's depends on its head count too, so its `select` reports
                 `MultiHeadInterpreter.macs` (= flops.interpreter_macs) and this stays unset
    setting_for  budget mapping: (kept_ratio float or (B,), groups D) -> the per-call setting;
                 default: the top-k rule keep_rate = kept_ratio ** (1/D)
    gmacs_at     cost of a setting: (model, method, setting (B,)) -> (B,) GMACs without a
                 forward; used to match a GMACs budget (default: `cost.topk_gmacs`, the chain
                 the forward counts)
    reduce       an in-block reducer instead of `select` (ToMe, EViT: they merge / fuse between
                 a block's attention and MLP): (model, cls, patches, kept_ratio) -> MergeRun
    reduce_macs  its cost formula: (model, kept_ratio) -> MACs of the blocks (no forward)
    train_schedule  training-time schedule of the budget, when the method has one (EViT's keep-rate
                 warm-up): (model, kept_ratio, progress in [0, 1] of the warm-up) -> the kept_ratio
                 of this step; None: the target from the first step
    topk         a learned method's `topk` setting: its twin entry that keeps the top
                 keep_rate of the same learned scores (a budgeted method: trade-off curves run the
                 learned scorer at every budget with it); None: no such setting
    native       sets its own kept count (RLT's threshold, SPViT's / SViT's trained decisions):
                 no budget, and not the reference a matched comparison matches
    needs_pixels `select` reads `SelectionInput.pixels` (RLT): the forward fills it
    video_only   compares frames (RLT): an image model raises a clear error
    weights      the model's trained module set it decides with (`model.pruners[weights]`:
                 "spvit", "svit"); a model without them raises a clear error
    train_recipe how its pruners train (`PrunerRecipe`: losses, targets, weights); None: the
                 method trains nothing of its own
    """
    name: str
    selector: str
    learned: bool
    summary: str
    select: Callable[[SelectionInput, float | torch.Tensor], Selection] | None = None
    scoring_macs: Callable[[torch.Tensor, int], torch.Tensor] = _no_macs
    setting_name: str | None = "keep_rate"
    setting_for: Callable[[float | torch.Tensor, int], float | torch.Tensor] = topk_setting
    gmacs_at: Callable[..., torch.Tensor] = topk_gmacs
    reduce: Callable[..., MergeRun] | None = None
    reduce_macs: Callable[[object, float], float] | None = None
    train_schedule: Callable[[object, float, float], float] | None = None
    topk: "Method | None" = None
    native: bool = False
    needs_pixels: bool = False
    video_only: bool = False
    weights: str | None = None
    train_recipe: PrunerRecipe | None = None

    @property
    def reduces(self) -> bool:
        """True for every method but the dense model: it selects or merges tokens."""
        return self.select is not None or self.reduce is not None

    @property
    def budgeted(self) -> bool:
        """True when a budget sets its setting (top-k baselines, in-block reducers); False:
        original, learned."""
        return self.reduces and not self.learned and not self.native

    def unusable(self, model) -> str | None:
        """Why this method cannot run on `model` (None: it can): a video-only method on an
        image model, or a model without the trained weights the method decides with."""
        if self.video_only and model.embed.num_frames is None:
            return f"{self.name} compares frames: it is video-only (this is an image model)"
        if self.weights is not None and self.weights not in model.pruners:
            return (f"{self.name} decides with trained {self.weights} selectors and this model "
                    f"has none: build it with create_model(..., pruners=[{self.weights!r}]) "
                    f"(config: model.kwargs.pruners: [{self.weights}]) and train them "
                    f"(configs/*/*_{self.weights}.yaml), or load a checkpoint that has them")
        return None

    def training_kwargs(self, model, kept_ratio: float, progress: float = 1.0) -> dict:
        """Forward arguments of a training step that runs through this method at `kept_ratio`,
        `progress` along its `train_schedule` (1: the target)."""
        if self.train_recipe is not None:  # the pruner's own (sampled) decisions, no budget
            return method_kwargs(model, SELECTORS[self.train_recipe.selector])
        if self.train_schedule is not None:
            kept_ratio = self.train_schedule(model, kept_ratio, progress)
        return method_kwargs(model, self, kept_ratio=kept_ratio)


# ---- the scorers behind one signature ----

def _interpreter(inp: SelectionInput, setting) -> Selection:
    """Eq. 1 scores; greedy I >= threshold, or u ~ Bernoulli(I) when sampling. setting unused."""
    if inp.interpreter is None:
        raise ValueError("this model was built without interpreters "
                         "(create it with selector='interpreter')")
    valid = inp.tokens.valid_mask
    scores = inp.interpreter(inp.tokens.x).masked_fill(~valid, 0.0)
    keep = inp.interpreter.decide(scores, inp.sample, inp.generator) & valid
    return Selection(scores, keep, inp.interpreter.macs(inp.tokens.counts().double()))


def _topk(scorer: Callable[[SelectionInput], torch.Tensor], name: str):
    """A baseline: scores from `scorer`, keep the top round(keep_rate * alive) of each sample."""
    def select(inp: SelectionInput, keep_rate) -> Selection:
        scores = scorer(inp)
        n = inp.tokens.counts().double()
        return Selection(scores, topk_keep(scores, inp.tokens, keep_rate),
                         METHODS[name].scoring_macs(n, inp.tokens.x.shape[-1]))
    return select


def _random(inp: SelectionInput) -> torch.Tensor:
    return random_scores(inp.tokens, inp.generator or inp.seeded, inp.random_seeds)


def _attention(inp: SelectionInput) -> torch.Tensor:
    return attention_scores(inp.block, inp.cls, inp.tokens, key_padding_mask(inp.tokens.valid))


def _temporal_difference(inp: SelectionInput) -> torch.Tensor:
    return temporal_difference_scores(inp.tokens, inp.grid)


def _interpreter_topk(inp: SelectionInput, keep_rate) -> Selection:
    """The interpreter's `topk` setting: its Eq. 1 scores, keep the top round(keep_rate * alive)
    (the same rule as the baselines) instead of I >= threshold. Never samples."""
    chosen = _interpreter(replace(inp, sample=False), None)
    return Selection(chosen.scores, topk_keep(chosen.scores, inp.tokens, keep_rate), chosen.macs)


def _interpreter_topk_gmacs(model, method, setting: torch.Tensor) -> torch.Tensor:
    """Cost of the interpreter's top-k at keep_rate `setting` (B,): the top-k chain of
    `cost.topk_gmacs` with the interpreter's scoring cost (it depends on its head count)."""
    interp = model.interpreters[0]
    return topk_gmacs(model, replace(method, scoring_macs=lambda n, dim: interp.macs(n)), setting)


# ---- the in-block reducers (merge_blocks.py): their setting is the kept_ratio itself ----

def _tome(model, cls: torch.Tensor, patches: torch.Tensor, kept_ratio: float) -> MergeRun:
    return run_tome(list(model.blocks), cls, patches, kept_ratio=kept_ratio,
                    mlp_ratio=model.mlp_ratio, groups=model.groups)


def _tome_macs(model, kept_ratio: float) -> float:
    schedule = tome_schedule(model.num_patches, len(model.blocks), kept_ratio)
    return tome_macs(model.num_patches, schedule, model.embed_dim,
                     model.blocks[0].attn.head_dim, model.mlp_ratio)


def _evit(model, cls: torch.Tensor, patches: torch.Tensor, kept_ratio: float) -> MergeRun:
    return run_evit(list(model.blocks), cls, patches, kept_ratio=kept_ratio,
                    mlp_ratio=model.mlp_ratio)


def _evit_macs(model, kept_ratio: float) -> float:
    targets = evit_targets(model.num_patches, len(model.blocks), kept_ratio)
    return evit_macs(model.num_patches, len(model.blocks), targets, model.embed_dim,
                     model.mlp_ratio)


def _evit_warmup(model, kept_ratio: float, progress: float) -> float:
    """EViT's keep-rate warm-up (its Sec. 4) on this model's stages."""
    return warmup_kept_ratio(progress, kept_ratio, len(evit_blocks(len(model.blocks))))


# ---- RLT (rlt.py): selects once, at the input, on the clip's pixels ----

def _zero_macs(inp: SelectionInput) -> torch.Tensor:
    return torch.zeros(inp.tokens.x.shape[0], dtype=torch.float64, device=inp.tokens.x.device)


def _rlt_differences(inp: SelectionInput) -> torch.Tensor:
    """(B, n) RLT differences of the alive rows (mean |pixel change| to the previous frame)."""
    if inp.pixels is None:
        raise ValueError("rlt reads the clip's pixels: SelectionInput.pixels is unset")
    diff = rlt.differences_from_patches(inp.pixels, inp.grid)  # (B, N) in token order
    return diff.gather(1, inp.tokens.index)


def _rlt_selection(inp: SelectionInput,
                   decide: Callable[[torch.Tensor], torch.Tensor]) -> Selection:
    """Group 0: RLT's differences, `decide(diff) -> keep (B, n)`; later groups pass every alive
    token on (RLT drops once, at the input). Elementwise work: 0 MACs (flops.py convention)."""
    valid = inp.tokens.valid_mask
    if inp.group > 0:
        return Selection(valid.to(inp.tokens.x.dtype), valid, _zero_macs(inp))
    diff = _rlt_differences(inp)
    return Selection(rlt.rlt_scores(diff).to(inp.tokens.x.dtype), decide(diff) & valid,
                     _zero_macs(inp))


def _rlt(inp: SelectionInput, kept_ratio) -> Selection:
    """At a budget: each clip keeps its kept_count largest differences (frame 0 always)."""
    frame = inp.grid[1] * inp.grid[2]  # frame 0's patches: RLT always keeps them
    return _rlt_selection(inp, lambda d: rlt.keep_at_kept_ratio(d, kept_ratio, frame))


def _rlt_threshold(inp: SelectionInput, setting) -> Selection:
    """RLT's own rule: keep a token whose difference is above tau; the count follows the clip."""
    return _rlt_selection(inp, lambda d: rlt.rlt_keep(d, inp.rlt_threshold))


def _rlt_gmacs(model, method, kept_ratio: torch.Tensor) -> torch.Tensor:
    """(B,) GMACs of RLT at kept_ratio (B,) without a forward: the kept count of `rlt.kept_count`
    (frame-0 floor gh*gw) through every group (RLT selects once), scoring 0."""
    T, gh, gw = model.grid
    ratio = kept_ratio.double().cpu()
    kept = rlt.kept_count(torch.empty(len(ratio), model.num_patches), ratio, gh * gw).double()
    depth = len(model.blocks) // model.groups
    macs = torch.full_like(kept, embed_macs(model))
    for _ in range(model.groups):
        macs = macs + group_macs(torch.zeros_like(kept), kept, depth, model.embed_dim,
                                 model.mlp_ratio)
    return to_gmacs(macs + head_macs(model))


# ---- SPViT / SViT (spvit.py, svit.py): learned pruners inside the block loop ----

def _spvit_run(model, cls, patches, kept_ratio: float | None):
    """kept_ratio None: the selectors' own decisions (Gumbel samples + attention policy while
    the model trains, argmax at test); a float: the top-k per stage at the budget's counts."""
    train = kept_ratio is None and model.training and torch.is_grad_enabled()
    return spvit.run_spvit(list(model.blocks), cls, patches, model.pruners["spvit"],
                           stage_blocks=model.pruner_blocks["spvit"], train=train,
                           kept_ratio=kept_ratio, mlp_ratio=model.mlp_ratio, mode=model.ragged,
                           generator=model.pruner_generator)


def _spvit_macs(model, kept_ratio: float) -> float:
    return spvit.spvit_budget_macs(model.num_patches, len(model.blocks),
                                   model.pruner_blocks["spvit"], kept_ratio, dim=model.embed_dim,
                                   heads=model.blocks[0].attn.num_heads, mlp_ratio=model.mlp_ratio)


def _svit_run(model, cls, patches, kept_ratio: float | None):
    """As `_spvit_run`, for SViT's gates (pruned tokens stay in place, reactivable)."""
    train = kept_ratio is None and model.training and torch.is_grad_enabled()
    return svit.run_svit(list(model.blocks), cls, patches, model.pruners["svit"],
                         gate_blocks=model.pruner_blocks["svit"], train=train,
                         kept_ratio=kept_ratio, mlp_ratio=model.mlp_ratio, mode=model.ragged,
                         generator=model.pruner_generator)


def _svit_macs(model, kept_ratio: float) -> float:
    return svit.svit_budget_macs(model.num_patches, len(model.blocks), model.pruner_blocks["svit"],
                                 kept_ratio, dim=model.embed_dim, mlp_ratio=model.mlp_ratio)


# SPViT's reference recipe (docs/peers_spvit_svit.md): targets 0.7^s at its 3 stages, ratio loss
# weight 2.0 (DynamicViT's), KL distillation from the dense model at 0.5. SViT: targets 0.7^(j+1)
# over its 3 gate groups, ratio weight 4.0 (unverified: its script takes it as a flag), no teacher.
# SPViT's reference loss (DynamicViT's `DistillDiffPruningLoss` with mse_token): ratio 2.0, the
# same 0.5 on the logits KL and on the kept tokens' MSE
SPVIT_RECIPE = PrunerRecipe("spvit_native", spvit.spvit_targets, ratio_weight=2.0,
                            distill_weight=0.5, token_distill_weight=0.5)
SVIT_RECIPE = PrunerRecipe("svit_native", svit.svit_targets, ratio_weight=4.0)

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("original", "none", learned=False,
           summary="dense model: every token reaches every block", setting_name=None),
    Method("interpreter", "interpreter", learned=True,
           summary="multi-head interpreter (Eq. 1), keep I >= threshold; trained by REINFORCE",
           select=_interpreter, setting_name=None,  # its cost depends on its head count: interpreter.macs
           # the `topk` setting: budgeted (not `learned`: a budget, not its threshold, decides)
           topk=Method("interpreter", "interpreter_topk", learned=False,
                       summary="the interpreter's Eq. 1 scores, keep the top keep_rate",
                       select=_interpreter_topk, gmacs_at=_interpreter_topk_gmacs)),
    Method("random", "random", learned=False,
           summary="uniform scores (seeded per clip), keep the top keep_rate",
           select=_topk(_random, "random")),
    Method("attention", "attention", learned=False,
           summary="cls->patch attention of the group's first block (mean over heads), top keep_rate",
           select=_topk(_attention, "attention"),
           scoring_macs=lambda n, dim: flops.attention_selector_macs(n + 1, dim)),
    Method("temporal_difference", "temporal_difference", learned=False,
           summary="L2 distance to the same patch in the previous frame, top keep_rate",
           select=_topk(_temporal_difference, "temporal_difference")),
    Method("tome", "tome", learned=False,
           summary="ToMe: in every block, merge the r most similar token pairs (bipartite "
                   "matching of attention keys, proportional attention), training-free",
           reduce=_tome, reduce_macs=_tome_macs, setting_name="kept_ratio",
           setting_for=kept_ratio_itself, gmacs_at=reducer_gmacs),
    Method("evit", "evit", learned=False,
           summary="EViT: at blocks 4, 7, 10 keep the top tokens by cls attention, fuse the rest "
                   "into one token weighted by that attention",
           reduce=_evit, reduce_macs=_evit_macs, setting_name="kept_ratio",
           setting_for=kept_ratio_itself, gmacs_at=reducer_gmacs, train_schedule=_evit_warmup),
    Method("rlt", "rlt", learned=False,
           summary="RLT: mean |pixel change| to the same patch in the previous frame; each clip "
                   "keeps its largest changes at the budget (frame 0 always), once, at the input",
           select=_rlt, setting_name="kept_ratio", setting_for=kept_ratio_itself,
           gmacs_at=_rlt_gmacs, needs_pixels=True, video_only=True),
    Method("rlt_threshold", "rlt_threshold", learned=False,
           summary="RLT's own rule: drop a patch whose mean |pixel change| to the previous frame "
                   "is <= tau (model.rlt_threshold, 0.1); the kept count follows the clip",
           select=_rlt_threshold, setting_name=None, native=True, needs_pixels=True,
           video_only=True),
    Method("spvit", "spvit", learned=False,
           summary="SPViT: learned selectors before blocks 4, 7, 10; each stage keeps the top "
                   "tokens by keep probability at the budget, folds the rest into a package token",
           reduce=lambda m, c, p, r: _spvit_run(m, c, p, r), reduce_macs=_spvit_macs,
           setting_name="kept_ratio", setting_for=kept_ratio_itself, gmacs_at=reducer_gmacs,
           weights="spvit", train_recipe=SPVIT_RECIPE),
    Method("spvit_native", "spvit_native", learned=False,
           summary="SPViT with its selectors' own decisions (argmax; Gumbel in training)",
           reduce=lambda m, c, p, r: _spvit_run(m, c, p, None), setting_name=None, native=True,
           weights="spvit", train_recipe=SPVIT_RECIPE),
    Method("svit", "svit", learned=False,
           summary="SViT: a 2-layer gate before every block from the 4th; each gate's block runs "
                   "on the top tokens at the budget, the others wait in place (reactivable)",
           reduce=lambda m, c, p, r: _svit_run(m, c, p, r), reduce_macs=_svit_macs,
           setting_name="kept_ratio", setting_for=kept_ratio_itself, gmacs_at=reducer_gmacs,
           weights="svit", train_recipe=SVIT_RECIPE),
    Method("svit_native", "svit_native", learned=False,
           summary="SViT with its gates' own decisions (argmax; Gumbel in training)",
           reduce=lambda m, c, p, r: _svit_run(m, c, p, None), setting_name=None, native=True,
           weights="svit", train_recipe=SVIT_RECIPE),
)}
# the methods every model can run (no video-only comparison, no trained pruner weights): the
# default `--methods` of the tools; the others are offered by name
def default_methods(video: bool) -> tuple[str, ...]:
    """The tools' default `--methods` for an image or a video model: every entry that runs without
    trained weights of its own (SPViT / SViT need their checkpoint's selectors: offered by name),
    the frame comparisons (RLT) on video only."""
    return tuple(m.name for m in METHODS.values()
                 if m.weights is None and (video or not m.video_only))


ANY_MODEL_METHODS = default_methods(video=False)
SELECTORS = {m.selector: m for e in METHODS.values()  # model-side name -> method (+ topk twins)
             for m in (e, e.topk) if m is not None}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


# Explanation-only baselines of paper Table 1 (GradCAM, raw-attention-style relevance): they
# explain the dense model's prediction and remove no token, so they are not `METHODS` entries
# (no selector, no budget, no cost). `videored.models.explanations` computes them; the
# interpretability table scores them by its protocol. Named here so that every
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


# ---- by name: cost, budget, and every method on one batch (the budget engine, budget.py) ----

def predicted_gmacs(model, method: str, setting: float | torch.Tensor,
                    batch: int = 1) -> torch.Tensor:
    """(B,) GMACs `model(x, selector=method, setting=setting)` reports, without running it
    (the method's `gmacs_at`, the cost chain of `cost.py`)."""
    m = get_method(method)
    if not m.budgeted:
        raise ValueError(f"{method}: only budgeted methods have a cost as a function of a setting")
    setting = setting if isinstance(setting, torch.Tensor) else torch.full(
        (batch,), float(setting), dtype=torch.float64)
    return m.gmacs_at(model, m, setting)


def setting_for_gmacs(model, method: str, gmacs: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """(B,) settings of `method` whose predicted GMACs come closest to `gmacs` (B,)."""
    return _setting_for_gmacs(model, get_method(method), gmacs, iters)


def budget_kwargs(model, method: str, *, kept_ratio: float | torch.Tensor | None = None,
                  gmacs: torch.Tensor | None = None) -> dict:
    """`budget.method_kwargs` by method name: model(x, **budget_kwargs(...)) runs `method` at
    kept_ratio (float or (B,)) or gmacs (B,); unbudgeted methods ignore both."""
    return method_kwargs(model, get_method(method), kept_ratio=kept_ratio, gmacs=gmacs)


def reference_budget(out, match: str) -> dict:
    """The budget a reference forward `out` (ReductionOutput) sets for matched methods."""
    budget = Budget(match=match)
    return {budget.reference_key.replace("gflops", "gmacs"): budget.reference_values(out)}


@torch.no_grad()
def run_methods(model, x: torch.Tensor, methods: list[str], *, match: str = "ratio",
                kept_ratio: float | None = None, reference_model=None,
                budget: Budget | None = None, **forward_kwargs) -> dict:
    """{method: ReductionOutput} of every method on the batch x, at one budget.

    budget: a `Budget` (default: the fixed `kept_ratio` when given, else matched by `match`).
    A matched budget runs its reference (the learned interpreter, on `reference_model` or
    `model`) first, and every budgeted method reaches the reference's kept ratio or GMACs clip
    by clip; without an interpreter the baselines run at the model's default setting.
    """
    budget = budget if budget is not None else Budget.of(kept_ratio, match)
    ref_model = reference_model or model
    outputs: dict = {}
    reference = None
    if budget.matched and getattr(ref_model, "interpreters", None) is not None and any(
            get_method(m).budgeted for m in methods):
        ref_method = get_method(budget.reference)
        ref = ref_model(x, **method_kwargs(ref_model, ref_method), **forward_kwargs)
        reference = budget.reference_values(ref)
        if budget.reference in methods:
            outputs[budget.reference] = ref
    for m in methods:
        if m not in outputs:
            entry = get_method(m)
            # the learned reference's weights; a pruner method's trained selectors where only
            # the reference model has them (the dense model beside an SPViT / SViT checkpoint)
            net = ref_model if entry.learned or (entry.weights and entry.unusable(model)) else model
            outputs[m] = net(x, **budget.forward_kwargs(net, entry, batch=len(x),
                                                         reference=reference), **forward_kwargs)
    return {m: outputs[m] for m in methods}


__all__ = ["ANY_MODEL_METHODS", "Budget", "EXPLANATIONS", "MATCH_MODES", "METHODS", "Method", "SELECTORS", "Selection",
           "SelectionInput", "PrunerRecipe", "budget_kwargs", "calibrate_interpreter", "get_method",
           "parse_methods", "predicted_gmacs", "reference_budget", "run_methods",
           "setting_for_gmacs", "topk_gmacs", "topk_setting"]

"""One token-dropping ViT for images (DeiT) and video (JointST TimeSformer).

The blocks are timm's `Block` (SDPA attention). They are split into `groups` (D) groups of equal
depth; before each group, a selector scores the alive patch tokens and the dropped ones are
removed from the sequence for good (gather, see `tokens.py`). The cls token is always kept.

Video: x (B, C, T, H, W), T*gh*gw patch tokens in one sequence (joint space-time attention).
Patch token n belongs to frame n // (gh*gw), row (n % (gh*gw)) // gw, col n % gw.
Images: x (B, C, H, W), the same model with T = 1 and no temporal embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterator

import torch
from torch import nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from . import flops
from .budget import check_fraction, warn_renamed
from .cost import embed_macs, group_macs, head_macs, to_gmacs
from .embedding import SpaceTimeEmbedding
from .interpreter import MultiHeadInterpreter
from .methods import SELECTORS, SelectionInput
from .rlt import RLT_THRESHOLD, LengthEmbedding, pixel_patches, run_lengths
from .spvit import SPViTSelector, rows_to_positions, spvit_blocks
from .svit import SViTGate, svit_blocks
from .ragged import check_ragged, run_blocks
from .tokens import TokenSet, full_token_set, gather_kept, scatter_to_positions

# Every checkpoint this model loads (DeiT/ViT, TimeSformer, mmaction2) was trained with LayerNorm
# eps 1e-6; timm's Block default changed between releases, so it is never left to the default.
block_norm = partial(nn.LayerNorm, eps=1e-6)
# One more bucket (another call through the blocks) is worth it when it saves more padding than
# this many tokens' worth of block MACs (kernel launches, smaller matrix products). 64 was the
# best of 0/16/64/128/256/512 for DeiT-S and DeiT-B at batch 8 (docs/benchmarks.md).
BUCKET_COST_TOKENS = 64


@dataclass
class ReductionOutput:
    """What one forward pass produced.

    logits  (B, num_classes)
    scores  per group, (B, N) informative scores at original patch positions; 0 for tokens
            dropped by an earlier group; 1 for tokens a group passed on without selecting
    keep    per group, (B, N) bool: alive after that group's selection (the sample u when sampled)
    gflops  (B,) per-sample GMACs, selector cost included
    source  in-block reducers only (tome, evit): (B, N) long, the final token row that covers
            each patch (ToMe's merged groups; EViT's fused token covers every fused patch);
            None for the dropping methods
    decisions  learned pruners only (spvit, svit): per stage (B, N) float keep decisions at
            original positions, carrying the straight-through gradient in training (what the
            keep-ratio loss reads, `pruning_losses.keep_ratio_loss`); None otherwise
    tokens  only with forward(return_tokens=True): (B, N, D) the patch tokens after the final
            norm at their original positions, zeros where no row of its own stands (dropped,
            merged, folded into a package): what SPViT's token distillation compares
            (`pruning_losses.token_mse`); None otherwise

    The in-block reducers report per stage instead of per group (merge_blocks.run_tome /
    run_evit); their keep marks the positions the rows stand at, so kept_ratio is rows / N
    (EViT: its fused rows excluded).
    """
    logits: torch.Tensor
    scores: list[torch.Tensor]
    keep: list[torch.Tensor]
    gflops: torch.Tensor
    source: torch.Tensor | None = None
    decisions: list[torch.Tensor] | None = None
    tokens: torch.Tensor | None = None

    @property
    def kept_ratio(self) -> torch.Tensor:
        """(B,) fraction of patch tokens that reached the last group."""
        return self.keep[-1].float().mean(dim=1)


class TokenReductionViT(nn.Module):
    """ViT whose patch tokens are reduced group by group.

    Args:
        img_size, patch_size, in_chans: input geometry (square frames).
        num_frames: frames per clip for video; None for an image model.
        num_classes, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the usual ViT knobs.
        drop_rate, drop_path_rate: head dropout and stochastic depth.
        groups: D, number of block groups; one selection (and one interpreter) before each.
        selector: default selector: a method's `selector` in the method table
            (`videored.models.methods`: "none", "interpreter", "random", "attention",
            "temporal_difference"). Interpreter weights exist only when it is "interpreter"; the
            baselines can still be chosen per call (`model(x, selector=...)`).
        threshold: interpreter keeps token i iff I_i >= threshold (greedy decisions).
        setting: the default per-call setting of a budgeted method (`budget.py`): the
            per-selection keep_rate of the top-k baselines (kept_ratio ~ keep_rate ** groups),
            the kept ratio itself for the in-block reducers (tome, evit). `keep_ratio`: its old
            name (deprecated, warns once).
        seed: seed of the random selector's generator (same seed, same sequence of masks).
        interpreter_heads: heads of the multi-head interpreter (default: num_heads).
        interpreter_init_keep: every informative score starts near this value (0.5: plain init).
        ragged: how blocks run when samples keep different token counts: "auto" (default:
            "packed" unless a block has forward hooks or non-fused attention, then "bucket"),
            "bucket" (sorted into buckets of similar counts), "packed" (the per-token layers
            on one packed tensor, attention in padded buckets of similar lengths; fastest on
            CPU, but it calls the blocks' layers directly, so forward hooks on a block do not
            fire), "pad" (one padded, masked call) or "jagged" (packed, and nested jagged SDPA:
            the CUDA candidate). See `ragged.py`.
        grad_checkpointing: recompute each block's activations in backward (saves memory in
            training; forward-only calls are unaffected). Also `set_grad_checkpointing()`.
        pruners: the learned pruners to build besides the selector's ("spvit": an
            `SPViTSelector` per stage, "svit": an `SViTGate` per gated block), kept in
            `self.pruners[name]` (state_dict keys `pruners.<name>.<i>.*`); selector "spvit*" /
            "svit*" builds its own. pruner_blocks: {name: block indices} (default: the papers'
            placements, `spvit.spvit_blocks` [3, 6, 9] / `svit.svit_blocks` [3..11] of 12).
        rlt_threshold: RLT's tau for the threshold-native entry `rlt_threshold`, in the units of
            the model's input normalization (docs/rlt.md).
        length_embed: add RLT's run-length embedding (`rlt.LengthEmbedding`, zero-initialised:
            training-free numbers unchanged) to the tokens RLT keeps (fine-tuning only).
    """

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 num_frames: int | None = None, num_classes: int = 1000, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 groups: int = 1, selector: str = "none", threshold: float = 0.5,
                 setting: float = 0.5, seed: int = 0,
                 interpreter_heads: int | None = None,
                 interpreter_init_keep: float = 0.5, ragged: str = "auto",
                 grad_checkpointing: bool = False, keep_ratio: float | None = None,
                 pruners: tuple[str, ...] | list[str] = (),
                 pruner_blocks: dict[str, list[int]] | None = None,
                 rlt_threshold: float = RLT_THRESHOLD, length_embed: bool = False) -> None:
        super().__init__()
        if keep_ratio is not None:
            warn_renamed("keep_ratio", "setting", "TokenReductionViT")
            setting = keep_ratio
        if groups < 1 or depth % groups:
            raise ValueError(f"depth {depth} must split into groups={groups} equal groups")
        self.selector = check_selector(selector)
        self.groups, self.setting, self.seed = groups, check_fraction(setting, "setting"), seed
        self.embed_dim, self.mlp_ratio, self.patch_size = embed_dim, mlp_ratio, patch_size
        self.num_classes = num_classes
        self.ragged, self.grad_checkpointing = check_ragged(ragged), grad_checkpointing
        self.bucket_cost_tokens = BUCKET_COST_TOKENS
        self.embed = SpaceTimeEmbedding(img_size=img_size, patch_size=patch_size,
                                        in_chans=in_chans, embed_dim=embed_dim,
                                        num_frames=num_frames)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                  drop_path=dpr[i], norm_layer=block_norm) for i in range(depth))
        self.norm = block_norm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.interpreters = None
        if SELECTORS[self.selector].learned:  # the learned method's weights: one per group
            self.interpreters = nn.ModuleList(
                MultiHeadInterpreter(embed_dim, interpreter_heads or num_heads, threshold,
                                     interpreter_init_keep)
                for _ in range(groups))
        # learned pruners (SPViT selectors, SViT gates): built for the selector and `pruners`
        wanted = set(pruners) | ({SELECTORS[self.selector].weights} - {None})
        unknown = wanted - set(PRUNERS)
        if unknown:
            raise ValueError(f"unknown pruners {sorted(unknown)}; choose from {', '.join(PRUNERS)}")
        self.pruner_blocks = {name: list((pruner_blocks or {}).get(name) or default(depth))
                              for name, (default, _) in PRUNERS.items()}
        self.pruners = nn.ModuleDict({
            name: nn.ModuleList(PRUNERS[name][1](embed_dim, num_heads)
                                for _ in self.pruner_blocks[name])
            for name in sorted(wanted)})
        self.pruner_generator: torch.Generator | None = None  # Gumbel noise (None: global RNG)
        self.rlt_threshold = rlt_threshold
        self.length_embed = (LengthEmbedding(num_frames=num_frames, embed_dim=embed_dim)
                             if length_embed else None)
        if length_embed and num_frames is None:
            raise ValueError("length_embed is RLT's run-length embedding: video models only")
        self._generator: torch.Generator | None = None  # random selector, created on first use
        # The input normalization the weights expect (videored.normalization.Normalization):
        # set by create_model / load_pretrained, stored in model.pt by save_model_file.
        self.normalization = None
        self.apply(_init_weights)
        for interpreter in self.interpreters or ():
            interpreter.init_biases()  # after _init_weights, which zeroes every bias

    # ---- shared model interface (timm style) ----
    @property
    def grid(self) -> tuple[int, int, int]:
        """(T, gh, gw) of the patch tokens; images have T = 1."""
        return self.embed.grid

    @property
    def num_patches(self) -> int:
        return self.embed.num_patches

    @property
    def keep_ratio(self) -> float:
        """The old name of `setting` (read-only)."""
        return self.setting

    @property
    def threshold(self) -> float:
        return self.interpreters[0].threshold if self.interpreters is not None else 0.5

    def group_blocks(self, j: int) -> list[Block]:
        depth = len(self.blocks) // self.groups
        return list(self.blocks[j * depth:(j + 1) * depth])

    def embedding_parameters(self) -> Iterator[nn.Parameter]:
        """Patch embedding, position/temporal embeddings and cls token: frozen in IA-RED²."""
        return self.embed.parameters()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's interface: activation checkpointing per block while gradients are enabled."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"embed.pos_embed", "embed.cls_token", "embed.time_embed"} | {
            f"interpreters.{j}.policy_token" for j in range(self.groups)}

    def forward_head(self, cls_features: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(cls_features))

    def forward(self, x: torch.Tensor, *, sample: bool = False, active_groups: int | None = None,
                selector: str | None = None, setting: float | torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                random_seeds: torch.Tensor | None = None,
                keep_ratio: float | torch.Tensor | None = None,
                return_tokens: bool = False) -> ReductionOutput:
        """x (B, C, T, H, W) for video, (B, C, H, W) for images.

        sample: the last active group's interpreter samples u ~ Bernoulli(I) (training);
            earlier groups decide greedily.
        active_groups: groups with index >= this keep every token (default: all select).
        selector / setting: per-call overrides of the constructor's defaults. setting is the
            method's own knob (`Method.setting_name`: keep_rate per selection, or kept_ratio);
            a (B,) tensor gives one per sample (matched budgets). `budget.Budget` /
            `methods.budget_kwargs` turn a kept-ratio or GMACs budget into it.
            keep_ratio: the old name of setting (deprecated, warns once).
        generator: CPU generator for interpreter samples and random scores (default: the global
            RNG for samples, a generator seeded with `seed` for the random selector).
        random_seeds: (B,) per-sample seeds for the random selector: masks that do not depend
            on batch composition (sharded evaluation).
        return_tokens: also return the final patch tokens (`ReductionOutput.tokens`; the norm
            already runs on every row, so outputs and costs are the same either way).
        """
        features, scores, keep, macs, source, decisions, tokens = self.forward_features(
            x, sample=sample, active_groups=active_groups, selector=selector,
            setting=setting, generator=generator, random_seeds=random_seeds,
            keep_ratio=keep_ratio, return_tokens=return_tokens)
        logits = self.forward_head(features)
        return ReductionOutput(logits=logits, scores=scores, keep=keep,
                               gflops=to_gmacs(macs + head_macs(self)), source=source,
                               decisions=decisions, tokens=tokens)

    def forward_features(self, x: torch.Tensor, *, sample: bool = False,
                         active_groups: int | None = None, selector: str | None = None,
                         setting: float | torch.Tensor | None = None,
                         generator: torch.Generator | None = None,
                         random_seeds: torch.Tensor | None = None,
                         keep_ratio: float | torch.Tensor | None = None,
                         return_tokens: bool = False):
        """-> (cls features (B, D), scores per group, keep per group, MACs (B,), source or None,
        decisions or None, final patch tokens (B, N, D) or None (`ReductionOutput.tokens`)).

        In-block reducers (tome, evit; training-free or finetuned through) ignore sample and
        active_groups."""
        selector = check_selector(selector or self.selector)
        if SELECTORS[selector].learned and self.interpreters is None:
            raise ValueError("this model was built without interpreters "
                             "(create it with selector='interpreter')")
        why = SELECTORS[selector].unusable(self)
        if why:
            raise ValueError(why)
        name = "setting"
        if keep_ratio is not None:  # the old name of the per-call setting
            if setting is not None:
                raise TypeError("give setting only (keep_ratio is its old name)")
            warn_renamed("keep_ratio", "setting", "TokenReductionViT.forward")
            setting, name = keep_ratio, "keep_ratio"
        setting = self.setting if setting is None else check_fraction(setting, name)
        active = self.groups if active_groups is None else active_groups
        N = self.num_patches
        cls, patches = self.embed(x)  # (B, 1, D), (B, N, D)
        tokens = full_token_set(patches)
        macs = torch.full((x.shape[0],), embed_macs(self), device=x.device, dtype=torch.float64)
        method = SELECTORS[selector]
        # RLT compares pixels: (B, N, C*p*p) patches of the normalized clip, before the embedding
        pixels = pixel_patches(x, self.patch_size) if method.needs_pixels else None
        if method.reduce is not None:
            features, scores, keep, cost, source, decisions, final = self._reduce_in_blocks(
                method, cls, patches, setting, return_tokens)
            return features, scores, keep, macs + cost, source, decisions, final
        all_scores, all_keep = [], []
        for j in range(self.groups):
            blocks = self.group_blocks(j)
            scoring = torch.zeros_like(macs)
            if selector != "none" and j < active:
                row_scores, row_keep, scoring = self._select(
                    selector, j, blocks[0], cls, tokens, setting,
                    sample=sample and j == active - 1, generator=generator,
                    random_seeds=None if random_seeds is None else random_seeds * self.groups + j,
                    pixels=pixels)
                all_scores.append(scatter_to_positions(row_scores, tokens, N))
                tokens = gather_kept(tokens, row_keep)
                if pixels is not None and j == 0 and self.length_embed is not None:
                    tokens = self._add_run_lengths(tokens, N)
            else:  # pass-through: every alive token scores 1
                all_scores.append(scatter_to_positions(tokens.valid_mask.to(cls.dtype), tokens, N))
            all_keep.append(scatter_to_positions(tokens.valid_mask.float(), tokens, N) > 0)
            # the one cost chain (cost.py), the same the prediction without a forward follows
            macs = macs + group_macs(scoring, tokens.counts(), len(blocks), self.embed_dim,
                                     self.mlp_ratio)
            cls, tokens = self._run_blocks(blocks, cls, tokens)
        normed = self.norm(torch.cat([cls, tokens.x], dim=1))  # norm is per token
        final = None
        if return_tokens:
            index = torch.where(tokens.valid_mask, tokens.index, torch.full_like(tokens.index, -1))
            final = rows_to_positions(normed[:, 1:], index, N)
        return normed[:, 0], all_scores, all_keep, macs, None, None, final

    # ---- internals ----
    def _reduce_in_blocks(self, method, cls: torch.Tensor, patches: torch.Tensor, kept_ratio,
                          return_tokens: bool = False):
        """An in-block reducer over all blocks (its setting is the kept ratio). A (B,)
        kept_ratio (matched budgets, one per clip) runs each distinct ratio as its own
        sub-batch: every clip is really reduced to its own count, and the sub-batches' results
        are put back in batch order."""
        ratios = kept_ratio.tolist() if isinstance(kept_ratio, torch.Tensor) else None
        if ratios is None or len(set(ratios)) == 1:
            run = method.reduce(self, cls, patches, ratios[0] if ratios else kept_ratio)
            normed = self.norm(torch.cat([run.cls, run.tokens.x], dim=1))  # (B, 1 + n, D)
            features = normed[:, 0]
            final = rows_to_positions(normed[:, 1:], run.tokens.index, patches.shape[1]) \
                if return_tokens else None
            if isinstance(run.macs, torch.Tensor):  # learned pruners: per sample (B,)
                macs = run.macs.to(device=cls.device, dtype=torch.float64)
            else:  # ToMe / EViT: every sample has the same count
                macs = torch.full((cls.shape[0],), run.macs, dtype=torch.float64,
                                  device=cls.device)
            decisions = getattr(run, "decisions", None) or None  # learned pruners' (ST gradient)
            return features, run.scores, run.keep, macs, run.tokens.source, decisions, final
        parts, order = [], []
        for ratio in sorted(set(ratios)):
            rows = torch.tensor([b for b, r in enumerate(ratios) if r == ratio],
                                device=cls.device)
            parts.append(self._reduce_in_blocks(method, cls[rows], patches[rows], ratio,
                                                return_tokens))
            order.append(rows)
        inverse = torch.argsort(torch.cat(order))  # sub-batch rows back to batch order

        def joined(i: int) -> torch.Tensor:
            return torch.cat([p[i] for p in parts])[inverse]

        stages = len(parts[0][1])

        def per_stage(i: int):
            if parts[0][i] is None:
                return None
            return [torch.cat([p[i][s] for p in parts])[inverse] for s in range(stages)]

        return (joined(0), per_stage(1), per_stage(2), joined(3), joined(4), per_stage(5),
                joined(6) if return_tokens else None)

    def _run_blocks(self, blocks: list[Block], cls: torch.Tensor, tokens: TokenSet):
        seq = torch.cat([cls, tokens.x], dim=1)  # (B, 1 + n, D)
        dim, ratio = self.embed_dim, self.mlp_ratio
        seq = run_blocks(blocks, seq, tokens.valid, mode=self.ragged,
                         checkpoint=self.grad_checkpointing and torch.is_grad_enabled(),
                         sample_cost=lambda n: flops.block_macs(n + 1, dim, ratio),
                         bucket_cost=flops.block_macs(self.bucket_cost_tokens, dim, ratio))
        return seq[:, :1], TokenSet(x=seq[:, 1:], index=tokens.index, valid=tokens.valid)

    def _select(self, selector: str, j: int, first_block: Block, cls: torch.Tensor,
                tokens: TokenSet, setting, *, sample: bool,
                generator: torch.Generator | None, random_seeds: torch.Tensor | None,
                pixels: torch.Tensor | None = None):
        """-> (scores (B, n), keep (B, n) bool, MACs (B,)) for the alive rows of group j:
        the method table's `select` of this selector, given explicit state."""
        chosen = SELECTORS[selector].select(SelectionInput(
            tokens=tokens, cls=cls, block=first_block, grid=self.grid,
            interpreter=None if self.interpreters is None else self.interpreters[j],
            sample=sample, generator=generator, seeded=self._random_generator(),
            random_seeds=random_seeds, pixels=pixels, group=j,
            rlt_threshold=self.rlt_threshold), setting)
        zero = torch.zeros(tokens.x.shape[0], dtype=torch.float64, device=tokens.x.device)
        return chosen.scores, chosen.keep & tokens.valid_mask, chosen.macs.to(zero) + zero

    def _add_run_lengths(self, tokens: TokenSet, N: int) -> TokenSet:
        """RLT's length embedding on the kept rows: each row's run length (frames it stands for,
        `rlt.run_lengths` of the input selection), 0 on padding rows (left unchanged)."""
        keep = scatter_to_positions(tokens.valid_mask.float(), tokens, N) > 0  # (B, N)
        lengths = run_lengths(keep, self.grid).gather(1, tokens.index) * tokens.valid_mask
        return TokenSet(x=self.length_embed(tokens.x, lengths), index=tokens.index,
                        valid=tokens.valid)

    def _random_generator(self) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return self._generator

    def reset_random_selector(self, seed: int | None = None) -> None:
        """Restart the random selector's mask sequence (e.g. before each evaluation pass)."""
        self.seed = self.seed if seed is None else seed
        self._generator = None


# learned pruners: name -> (default block placement for a depth, module per stage (dim, heads))
PRUNERS = {"spvit": (spvit_blocks, lambda dim, heads: SPViTSelector(dim, heads)),
           "svit": (svit_blocks, lambda dim, heads: SViTGate(dim))}


def check_selector(name: str) -> str:
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(SELECTORS)}")
    return name


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

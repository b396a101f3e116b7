"""Algorithm 1 as data and small functions: the stage plan, which parameters each stage trains,
and one training step of each stage kind.

Stage kinds (paper Sec. 3.2, supplement Alg. 1), for group j of D:
  interpreter  only interpreter j learns, by REINFORCE; the backbone runs without grad
               (`model(x, sample=True, active_groups=j+1)`: groups > j keep every token).
  finetune     interpreter j frozen and greedy; cross-entropy trains the blocks of groups j..D-1
               plus the final norm and head (they read the reduced token sequence too).
  supervised   plain dense finetuning of the whole backbone (all tokens kept), e.g. to get a base
               model on a new dataset before Algorithm 1; or through a reduction
               (`schedule.reduction`): EViT (its keep-rate warm-up), or a learned pruner (SPViT,
               SViT) whose table entry's `train_recipe` adds its losses (`pruner_step`).
Patch embed, pos/temporal embed and cls token stay frozen in interpreter and finetune stages.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from videored.models.methods import PrunerRecipe, get_method
from videored.models.pruning_losses import check_targets, keep_ratio_loss, logits_kl, token_mse

from .reinforce import leave_one_out_advantage, policy_loss, reward, self_critical_advantage


@dataclass(frozen=True)
class Stage:
    index: int  # position in the plan
    kind: str  # interpreter | finetune | supervised
    group: int  # j (0 for supervised, unused)
    epochs: int

    @property
    def name(self) -> str:
        return self.kind if self.kind == "supervised" else f"{self.kind}{self.group}"

    @property
    def active_groups(self) -> int:
        """Groups < this select tokens; later ones keep everything (their turn has not come)."""
        return 0 if self.kind == "supervised" else self.group + 1


def plan_stages(cfg: DictConfig, num_groups: int) -> list[Stage]:
    """The ordered stage list: leading `supervised` entries once, then the interpreter/finetune
    kinds for every group in order (Algorithm 1), then trailing `supervised` entries once.
    Stages with 0 epochs are left out."""
    s = cfg.schedule
    kinds = list(s.stages)
    per_group = [k for k in kinds if k != "supervised"]
    if per_group:
        first = kinds.index(per_group[0])
        last = len(kinds) - 1 - kinds[::-1].index(per_group[-1])
        if "supervised" in kinds[first:last + 1]:
            raise ValueError("schedule.stages: 'supervised' may only come before or after the "
                             "interpreter/finetune kinds, not between them")
    else:
        first = last = len(kinds)
    epochs = {"interpreter": s.interpreter_epochs, "finetune": s.finetune_epochs,
              "supervised": s.supervised_epochs}
    groups = list(range(num_groups)) if s.groups is None else sorted(s.groups)
    order = [(k, 0) for k in kinds[:first]]
    order += [(k, j) for j in groups for k in per_group]
    order += [(k, 0) for k in kinds[last + 1:] if k == "supervised"]
    plan = []
    for kind, group in order:
        if epochs[kind] > 0:
            plan.append(Stage(index=len(plan), kind=kind, group=group, epochs=epochs[kind]))
    return plan


def trainable_parameters(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """Set requires_grad for `stage` (everything else frozen) and return the trainable list.

    interpreter j: the parameters of `model.interpreters[j]` only.
    finetune j:    every backbone parameter except the embeddings (patch/pos/temporal/cls),
                   the interpreters and the blocks of groups < j. That is the blocks of groups
                   j..D-1 plus the final norm and the head.
    supervised:    every backbone parameter (embeddings included), no interpreter.
    """
    interpreter_ids = {id(p) for p in model.interpreters.parameters()} if model.interpreters is not None else set()
    if stage.kind == "interpreter":
        chosen = {id(p) for p in model.interpreters[stage.group].parameters()}
    else:
        frozen = set(interpreter_ids)
        if stage.kind == "finetune":
            frozen |= {id(p) for p in model.embedding_parameters()}
            for j in range(stage.group):
                frozen |= {id(p) for blk in model.group_blocks(j) for p in blk.parameters()}
        chosen = {id(p) for p in model.parameters()} - frozen
    params = []
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
        if id(p) in chosen:
            params.append(p)
    return params


def set_train_mode(model: nn.Module, stage: Stage) -> None:
    """Interpreter stages keep the frozen backbone in eval mode (no dropout / drop-path noise in
    the reward); the other stages train the whole module."""
    if stage.kind == "interpreter":
        model.eval()
        model.interpreters[stage.group].train()
    else:
        model.train()


@dataclass
class StepResult:
    loss: torch.Tensor  # scalar, differentiable
    sums: dict[str, torch.Tensor]  # per-metric sums over the local batch (0-dim, detached)
    count: int  # local batch size


def interpreter_step(model: nn.Module, raw_model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     group: int, tau: float, squared: bool, baseline: str = "self_critical",
                     samples: int = 1) -> StepResult:
    """REINFORCE for interpreter `group` (Eq. 3).

    model: the (possibly DDP-wrapped) module whose forward builds the graph; raw_model: the bare
    module, used for the greedy baseline pass under no_grad. x (B, C, T, H, W); y (B,).
    baseline: "self_critical" (A = R(u) - R(u_hat), u_hat_i = [I_i >= threshold]: one extra
    greedy forward) or "leave_one_out" (A = R(u) - mean reward of the other samples: of the same
    clip when samples > 1, else of the other clips). samples: K decision samples u per clip (the
    clips are repeated, (B*K, ...)): K times the sampled forward for a K times less noisy gradient.
    """
    j, K, B = group, samples, y.shape[0]
    greedy = None
    if baseline == "self_critical":
        with torch.no_grad():  # greedy decisions u_hat: the baseline R(u_hat)
            greedy = raw_model(x, active_groups=j + 1)
    xs, ys = (x.repeat_interleave(K, 0), y.repeat_interleave(K, 0)) if K > 1 else (x, y)
    out = model(xs, sample=True, active_groups=j + 1)  # u ~ Bernoulli(I); only scores[j] has grad
    kept_s = out.keep[j].float().mean(1)  # (B*K,) fraction of all N patch tokens kept
    correct_s = out.logits.argmax(1) == ys
    r_s = reward(correct_s, kept_s, tau, squared)  # (B*K,)
    # metric sums are per clip (means over its K samples), so they read the same for any K
    sums = {"reward": r_s.sum() / K, "kept": kept_s.sum() / K, "acc_sampled": correct_s.float().sum() / K}
    if greedy is not None:
        kept_g = greedy.keep[j].float().mean(1)
        correct_g = greedy.logits.argmax(1) == y
        r_g = reward(correct_g, kept_g, tau, squared)  # (B,), for the logged sums
        advantage = self_critical_advantage(correct_s, kept_s, correct_g.repeat_interleave(K),
                                            kept_g.repeat_interleave(K), tau, squared)
        sums.update({"reward_greedy": r_g.sum(), "kept_greedy": kept_g.sum(),
                     "acc_greedy": correct_g.float().sum(), "gflops_greedy": greedy.gflops.float().sum()})
    else:
        advantage = leave_one_out_advantage(r_s.view(B, K) if K > 1 else r_s).reshape(-1)
    loss = policy_loss(out.scores[j], out.keep[j], advantage)
    sums.update({"loss": loss.detach().float() * B, "advantage": advantage.sum() / K})
    return StepResult(loss=loss, sums=sums, count=B)


def classification_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, stage: Stage,
                        **forward: object) -> StepResult:
    """Cross-entropy on the tokens that really reach the blocks (finetune) or on all (supervised;
    `forward` = selector / keep_ratio when it trains through a reduction, e.g. EViT)."""
    out = model(x, active_groups=stage.active_groups, **forward)
    loss = F.cross_entropy(out.logits.float(), y)
    B = y.shape[0]
    sums = {
        "loss": loss.detach() * B, "acc": (out.logits.argmax(1) == y).float().sum(),
        "kept": out.kept_ratio.float().sum(), "gflops": out.gflops.float().sum(),
    }
    return StepResult(loss=loss, sums=sums, count=B)


# ---- learned pruners (SPViT, SViT): the method's recipe through a supervised stage ----

@dataclass(frozen=True)
class PrunerTraining:
    """A pruner's recipe resolved for one run: per-stage targets, loss weights and the pruner
    weights' lr scale (the table entry's `train_recipe`, overridden by schedule.pruner_targets /
    ratio_weight / distill_weight / token_distill_weight / selector_lr_scale)."""
    recipe: PrunerRecipe
    targets: list[float]
    ratio_weight: float
    distill_weight: float
    token_distill_weight: float = 0.0
    selector_lr_scale: float = 1.0
    weights: str | None = None  # the model.pruners key of the pruner's own weights

    @property
    def distils(self) -> bool:
        """True when a dense teacher is needed (either distillation term has weight)."""
        return self.distill_weight > 0 or self.token_distill_weight > 0


def pruner_training(cfg: DictConfig, model: nn.Module) -> PrunerTraining | None:
    """The run's pruner training (None: schedule.reduction is no learned pruner)."""
    s = cfg.schedule
    method = None if s.reduction is None else get_method(s.reduction)
    if method is None or method.train_recipe is None:
        return None
    recipe = method.train_recipe
    why = method.unusable(model)
    if why:
        raise ValueError(f"schedule.reduction={s.reduction}: {why}")
    stages = len(model.pruner_blocks[method.weights])
    targets = recipe.targets(stages) if s.pruner_targets is None else list(s.pruner_targets)

    def pick(key: str) -> float:  # the config's value, else the recipe's
        value = s.get(key)
        value = getattr(recipe, key) if value is None else float(value)
        if value < 0 or (key == "selector_lr_scale" and value == 0):
            raise ValueError(f"schedule.{key} = {value}: must be "
                             f"{'> 0' if key == 'selector_lr_scale' else '>= 0'}")
        return value

    return PrunerTraining(
        recipe=recipe, targets=check_targets(targets, stages, "schedule.pruner_targets"),
        ratio_weight=pick("ratio_weight"), distill_weight=pick("distill_weight"),
        token_distill_weight=pick("token_distill_weight"),
        selector_lr_scale=pick("selector_lr_scale"), weights=method.weights)


def lr_scales(model: nn.Module, training: PrunerTraining | None) -> dict[int, float]:
    """{id(parameter): lr multiple} for `build_optimizer`: the pruner's own weights at
    selector_lr_scale (SPViT trains its selectors faster than the backbone); empty when every
    parameter trains at the stage lr."""
    if training is None or training.selector_lr_scale == 1.0:
        return {}
    return {id(p): training.selector_lr_scale
            for p in model.pruners[training.weights].parameters()}


def dense_teacher(model: nn.Module, training: PrunerTraining | None) -> nn.Module | None:
    """A frozen copy of the starting weights (SPViT's distillation teacher: the dense model it
    starts from), or None when the recipe distils nothing. Made before any resume loads newer
    weights, so a resumed run distils from the same teacher."""
    if training is None or not training.distils:
        return None
    teacher = copy.deepcopy(model).eval()
    return teacher.requires_grad_(False)


def pruner_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, stage: Stage,
                training: PrunerTraining, teacher: nn.Module | None,
                **forward: object) -> StepResult:
    """CE + ratio_weight · keep-ratio loss (per-stage decisions toward the targets) +
    distill_weight · KL to the dense teacher's logits + token_distill_weight · MSE between the
    student's kept patch tokens and the teacher's at the same positions (after the final norm;
    SPViT's / DynamicViT's token distillation). forward: the recipe's selector (the pruner's own
    Gumbel decisions in train mode)."""
    tokens = teacher is not None and training.token_distill_weight > 0
    out = model(x, active_groups=stage.active_groups, return_tokens=tokens, **forward)
    if out.decisions is None:
        raise ValueError(f"{forward.get('selector')}: the forward returned no pruning decisions")
    ce = F.cross_entropy(out.logits.float(), y)
    ratio = keep_ratio_loss(out.decisions, training.targets)
    loss = ce + training.ratio_weight * ratio
    B = y.shape[0]
    sums = {"ce": ce.detach() * B, "ratio_loss": ratio.detach().float() * B}
    if teacher is not None:
        with torch.no_grad():
            dense = teacher(x, selector="none", return_tokens=tokens)
        distill = logits_kl(out.logits.float(), dense.logits.float())
        loss = loss + training.distill_weight * distill
        sums["distill"] = distill.detach() * B
        if tokens:  # the patches the student kept to the end (its package row has no position)
            token = token_mse(out.tokens.float(), dense.tokens.float(), out.keep[-1])
            loss = loss + training.token_distill_weight * token
            sums["token_distill"] = token.detach() * B
    # the kept ratio of each stage's decisions (what the ratio loss pushes toward its target)
    for s, d in enumerate(out.decisions):
        sums[f"kept{s}"] = d.detach().float().mean(1).sum()
    sums.update({"loss": loss.detach() * B, "acc": (out.logits.argmax(1) == y).float().sum(),
                 "kept": out.kept_ratio.float().sum(), "gflops": out.gflops.float().sum()})
    return StepResult(loss=loss, sums=sums, count=B)

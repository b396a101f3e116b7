"""SPViT's full recipe (issue #28): the token-distillation term (the forward's final patch
tokens, `ReductionOutput.tokens`) and the selectors' own learning rate (param groups), plus the
quickstart's --peers budgets. Tiny models, no training loop beyond one optimizer build."""
from __future__ import annotations

import copy

import pytest
import torch

from _engine_utils import tiny_config
from videored.commands.quickstart import add_peer_row, peer_budgets
from videored.engine.builders import build_optimizer
from videored.engine.stages import (Stage, dense_teacher, lr_scales, pruner_step,
                                    pruner_training, trainable_parameters)
from videored.models import create_model, save_model_file
from videored.models.cost import reducer_gmacs
from videored.models.methods import get_method
from videored.models.pruning_losses import token_mse

SUPERVISED = Stage(index=0, kind="supervised", group=0, epochs=1)


def _model(depth: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=2,
                        depth=depth, embed_dim=32, num_heads=2, num_classes=3, pruners=["spvit"])


def _plain_tokens(model, x: torch.Tensor) -> torch.Tensor:
    """The dense model's final patch tokens by hand: embed, every block on every token, norm."""
    cls, patches = model.embed(x)
    seq = torch.cat([cls, patches], dim=1)
    for blk in model.blocks:
        seq = blk(seq)
    return model.norm(seq)[:, 1:]


def test_return_tokens_gives_the_final_normed_patch_tokens_and_changes_nothing_else():
    model = _model().eval()
    x = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        plain = model(x, selector="none")
        dense = model(x, selector="none", return_tokens=True)
        torch.testing.assert_close(dense.tokens, _plain_tokens(model, x), atol=1e-5, rtol=1e-5)
        assert torch.equal(dense.logits, plain.logits) and torch.equal(dense.gflops, plain.gflops)
        assert plain.tokens is None
        # eval-mode SPViT: same logits and cost with or without tokens; pruned patches are 0
        a = model(x, selector="spvit", setting=0.5)
        b = model(x, selector="spvit", setting=0.5, return_tokens=True)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.gflops, b.gflops)
    assert b.tokens[~b.keep[-1]].eq(0).all() and b.tokens[b.keep[-1]].abs().sum(-1).gt(0).all()


def test_token_distillation_term_equals_a_hand_computation():
    """Selectors forced to keep everything: the student's tokens are its own dense tokens, so
    the term is the plain mean of (student - teacher)² over every patch token and channel."""
    teacher = _model().eval()
    student = copy.deepcopy(teacher)
    for sel in student.pruners["spvit"]:
        torch.nn.init.zeros_(sel.out[-1].weight)
        sel.out[-1].bias.data = torch.tensor([30.0, -30.0])  # [keep, prune] logits
    with torch.no_grad():
        fc2 = student.blocks[1].mlp.fc2.weight
        fc2.add_(0.05 * torch.randn_like(fc2))
    student.train()
    x = torch.randn(3, 3, 2, 32, 32)
    cfg = tiny_config("data.root=x", "schedule.stages=[supervised]", "schedule.reduction=spvit",
                      "schedule.ratio_weight=0", "schedule.distill_weight=0",
                      "schedule.token_distill_weight=1")
    training = pruner_training(cfg, student)
    assert training.token_distill_weight == 1.0 and training.distils
    y = torch.tensor([0, 1, 2])
    torch.manual_seed(1)
    result = pruner_step(student, x, y, SUPERVISED, training, teacher, selector="spvit_native")
    with torch.no_grad():
        student.eval()  # no drop-path either way (the tiny model has none); plain loop
        want = (_plain_tokens(student, x) - _plain_tokens(teacher, x)).pow(2).mean()
    assert want > 0
    torch.testing.assert_close(result.sums["token_distill"] / 3, want, atol=1e-6, rtol=1e-4)
    ce = torch.nn.functional.cross_entropy(student(x, selector="spvit_native").logits, y)
    torch.testing.assert_close(result.loss.detach(), ce.detach() + want, atol=1e-5, rtol=1e-4)


def test_token_distillation_gradient_reaches_selectors_and_backbone_by_finite_differences():
    teacher = _model().double().eval()
    student = copy.deepcopy(teacher).train()
    for sel in student.pruners["spvit"]:
        torch.nn.init.normal_(sel.out[-1].weight, std=1.0)  # a mix of kept and pruned tokens
    with torch.no_grad():
        for p in student.blocks.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(2, 3, 2, 32, 32, dtype=torch.float64)
    dense = teacher(x, selector="none", return_tokens=True).tokens

    def term() -> torch.Tensor:
        torch.manual_seed(3)  # the same Gumbel samples every call
        out = student(x, selector="spvit_native", return_tokens=True)
        assert 0 < int(out.keep[-1].sum()) < out.keep[-1].numel()
        return token_mse(out.tokens, dense, out.keep[-1])

    student.zero_grad()
    term().backward()
    selector_grad = sum(p.grad.abs().sum() for p in student.pruners.parameters()
                        if p.grad is not None)
    assert selector_grad > 0  # through the package token and the straight-through decisions
    # a backbone weight after the last selector (block 3 of 4): decisions do not move with it,
    # so the term is smooth in it and autograd must equal central differences
    w = student.blocks[3].mlp.fc2.weight
    analytic = w.grad[0, :4].clone()
    h = 1e-6
    for j in range(4):  # (the training forward runs only with grad enabled: nudge under no_grad)
        with torch.no_grad():
            w[0, j] += h
        up = term().detach()
        with torch.no_grad():
            w[0, j] -= 2 * h
        down = term().detach()
        with torch.no_grad():
            w[0, j] += h
        torch.testing.assert_close(analytic[j], (up - down) / (2 * h), atol=1e-8, rtol=1e-5)
    assert analytic.abs().sum() > 0
    assert student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # before the first selector


def test_selector_lr_scale_gives_the_selectors_their_own_param_groups():
    model = _model()
    cfg = tiny_config("data.root=x", "schedule.stages=[supervised]", "schedule.reduction=spvit",
                      "schedule.selector_lr_scale=100", "optim.name=adamw",
                      "optim.weight_decay=0.05")
    training = pruner_training(cfg, model)
    params = trainable_parameters(model, SUPERVISED)
    opt = build_optimizer(model, params, cfg, 1e-3, "supervised", lr_scales(model, training))
    selectors = {id(p) for p in model.pruners["spvit"].parameters()}
    seen = []
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        is_sel = ids <= selectors
        assert is_sel or not ids & selectors  # a group is all selectors or none
        assert g["lr"] == pytest.approx(1e-3 * (100 if is_sel else 1))
        if g["weight_decay"]:  # decay on matrices only (param_groups' rule, kept per lr)
            assert g["weight_decay"] == 0.05 and all(p.ndim >= 2 for p in g["params"])
        else:
            assert any(p.ndim <= 1 for p in g["params"])
        seen += [id(p) for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in params)  # each trainable parameter once
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the scheduler's peak: the stage lr
    assert {round(g["lr"], 9) for g in opt.param_groups} == {1e-3, 0.1}
    # the recipe's default (1): one lr, the groups of before
    plain = pruner_training(tiny_config("data.root=x", "schedule.stages=[supervised]",
                                        "schedule.reduction=spvit"), model)
    assert lr_scales(model, plain) == {}
    with pytest.raises(ValueError, match="schedule.selector_lr_scale"):
        pruner_training(tiny_config("data.root=x", "schedule.stages=[supervised]",
                                    "schedule.reduction=spvit", "schedule.selector_lr_scale=0"),
                        model)


def test_dense_teacher_is_made_for_token_distillation_alone():
    model = _model()
    cfg = tiny_config("data.root=x", "schedule.stages=[supervised]", "schedule.reduction=spvit",
                      "schedule.distill_weight=0")
    training = pruner_training(cfg, model)
    assert training.distill_weight == 0 and training.token_distill_weight == 0.5  # the recipe's
    assert dense_teacher(model, training) is not None


def test_peer_budgets_match_the_interpreters_kept_ratio_and_gmacs(tmp_path):
    model = _model(depth=8)
    save_model_file(model, tmp_path / "m.pt")
    method = get_method("spvit")
    floor = float(reducer_gmacs(model, method, torch.tensor([0.0]))[0])
    full = float(reducer_gmacs(model, method, torch.tensor([1.0]))[0])
    target = (floor + full) / 2
    results = {"methods": {"interpreter": {"kept_ratio": 0.3, "gflops": target}}}
    budgets = peer_budgets(results, "spvit", tmp_path / "m.pt")
    assert budgets["ratio"] == 0.3
    # the forward at the chosen ratio costs the target within one token's step
    with torch.no_grad():
        got = model.eval()(torch.randn(1, 3, 2, 32, 32), selector="spvit",
                           setting=budgets["gmacs"]).gflops
    step = float(reducer_gmacs(model, method, torch.tensor([1.0]))[0]
                 - reducer_gmacs(model, method, torch.tensor([1.0 - 1.5 / model.num_patches]))[0])
    assert abs(float(got[0]) - target) <= step
    # below the peer's cheapest setting: ratio 0 (its row then shows what it really costs)
    results["methods"]["interpreter"]["gflops"] = floor / 2
    assert peer_budgets(results, "spvit", tmp_path / "m.pt")["gmacs"] == 0.0
    row = add_peer_row(results, "spvit", "gmacs", 0.0,
                       {"methods": {"spvit": {"kept_ratio": 0.1, "gflops": floor}},
                        "interpretability": {"spvit": {"miou": 1.0}}})
    assert row == "spvit @ gmacs" and results["methods"][row]["budget_kept_ratio"] == 0.0
    assert results["interpretability"][row] == {"miou": 1.0}
    assert results["peers"][row]["interpreter_gflops"] == floor / 2


def test_quickstart_peers_needs_the_peer_configs_next_to_the_config(tmp_path):
    from _engine_utils import run_cli

    config = tmp_path / "mine.yaml"
    config.write_text("_base_: base.yaml\n")
    proc = run_cli(["quickstart", "--out", str(tmp_path / "run"), "--config", str(config),
                    "--peers"], timeout=120)
    assert proc.returncode == 2
    assert "mine_spvit.yaml" in proc.stderr and "--peers" in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing started, nothing written

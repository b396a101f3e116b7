"""Algorithm 1's stage plan and, for every stage kind, which parameters change (and which not)."""
import pytest
import torch

from _engine_utils import random_tensor_file, tiny_config, weights
from videored.engine.builders import build_model
from videored.engine.stages import Stage, interpreter_step, plan_stages, trainable_parameters
from videored.engine.trainer import train


def test_plan_for_images_and_video():
    cfg = tiny_config("data.root=x", "model.groups=3", "model.depth=3",
                      "schedule.interpreter_epochs=10", "schedule.finetune_epochs=20")
    plan = plan_stages(cfg, 3)
    assert [(s.kind, s.group, s.epochs) for s in plan] == [
        ("interpreter", 0, 10), ("finetune", 0, 20), ("interpreter", 1, 10), ("finetune", 1, 20),
        ("interpreter", 2, 10), ("finetune", 2, 20)]
    assert [s.index for s in plan] == list(range(6))
    cfg = tiny_config("data.root=x", "schedule.stages=[supervised, interpreter, finetune]",
                      "schedule.supervised_epochs=2", "schedule.finetune_epochs=0")
    assert [(s.kind, s.group) for s in plan_stages(cfg, 1)] == [("supervised", 0), ("interpreter", 0)]
    cfg = tiny_config("data.root=x", "schedule.stages=[interpreter, supervised, finetune]")
    with pytest.raises(ValueError, match="supervised"):
        plan_stages(cfg, 1)


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def _groups_of(names: set[str]) -> set[str]:
    """Collapse parameter names to 'interpreters.j' / 'blocks.i' / 'embed' / 'norm' / 'head'."""
    out = set()
    for n in names:
        parts = n.split(".")
        out.add(".".join(parts[:2]) if parts[0] in ("interpreters", "blocks") else parts[0])
    return out


@pytest.mark.parametrize("stage,expected", [
    ("interpreter:1", {"interpreters.1"}),
    ("finetune:1", {"blocks.2", "blocks.3", "norm", "head"}),
    ("finetune:0", {"blocks.0", "blocks.1", "blocks.2", "blocks.3", "norm", "head"}),
    ("supervised:0", {"embed", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "norm", "head"}),
])
def test_which_parameters_change(tmp_path, stage, expected):
    """One epoch of one stage on a D=2 model (2 blocks per group) through the real trainer."""
    kind, group = stage.split(":")
    data = random_tensor_file(tmp_path / "d.pt", n=16)
    cfg = tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
                      "model.groups=2", "model.depth=4", f"schedule.stages=[{kind}]",
                      f"schedule.groups=[{group}]", "schedule.interpreter_epochs=1",
                      "schedule.finetune_epochs=1", "schedule.supervised_epochs=1",
                      "optim.name=sgd", "optim.lr=0.5", "reinforce.tau=1.0")
    torch.manual_seed(0)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(cfg, tmp_path / "run", model=model)
    after = weights(tmp_path / "run" / "model.pt")
    changed = _changed(before, after)
    assert _groups_of(changed) == expected
    # every parameter of the trained modules moved (none left out of the optimizer)
    trained = {k for k in before if _groups_of({k}) <= expected}
    assert changed == trained


@pytest.mark.parametrize("baseline", ["self_critical", "leave_one_out"])
def test_interpreter_step_builds_no_backbone_graph(baseline):
    """Autograd tracks only interpreter j: the blocks run as a plain inference forward."""
    cfg = tiny_config("data.root=x", "model.groups=2", "model.depth=4")
    model = build_model(cfg)
    stage = Stage(index=0, kind="interpreter", group=1, epochs=1)
    params = trainable_parameters(model, stage)
    assert {id(p) for p in params} == {id(p) for p in model.interpreters[1].parameters()}
    x, y = torch.randn(3, 3, 2, 32, 32), torch.tensor([0, 1, 2])
    seen = []
    hooks = [blk.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad)) for blk in model.blocks]
    result = interpreter_step(model, model, x, y, group=1, tau=1.0, squared=True, baseline=baseline)
    for h in hooks:
        h.remove()
    assert seen and not any(seen)  # no block output is part of the graph
    result.loss.backward()
    assert all(p.grad is not None for p in model.interpreters[1].parameters())
    others = [p for n, p in model.named_parameters() if not n.startswith("interpreters.1.")]
    assert all(p.grad is None for p in others)
    blocks_per_call = len(model.blocks)
    assert len(seen) == (2 if baseline == "self_critical" else 1) * blocks_per_call  # greedy pass or not


@pytest.mark.parametrize("baseline", ["self_critical", "leave_one_out"])
def test_interpreter_step_with_k_samples_per_clip(baseline):
    """samples=K: the sampled pass sees each clip K times in a row (clip-major), and each sample's
    advantage uses its own clip's baseline (the greedy reward, or its K - 1 sibling samples)."""
    from videored.engine.reinforce import policy_loss, reward

    cfg = tiny_config("data.root=x", "model.depth=2")
    model = build_model(cfg).eval()
    x, y, K = torch.randn(2, 3, 2, 32, 32), torch.tensor([0, 1]), 3
    torch.manual_seed(7)
    result = interpreter_step(model, model, x, y, group=0, tau=1.5, squared=False,
                              baseline=baseline, samples=K)
    # the same draws by hand: greedy pass (no random numbers), then the repeated batch
    torch.manual_seed(7)
    with torch.no_grad():
        greedy = model(x, active_groups=1)
    out = model(x.repeat_interleave(K, 0), sample=True, active_groups=1)
    kept = out.keep[0].float().mean(1).view(2, K)
    r = reward(out.logits.argmax(1) == y.repeat_interleave(K), kept.reshape(-1), 1.5, False).view(2, K)
    if baseline == "self_critical":
        r_g = reward(greedy.logits.argmax(1) == y, greedy.keep[0].float().mean(1), 1.5, False)
        adv = r - r_g[:, None]
    else:
        adv = torch.stack([r[:, i] - (r.sum(1) - r[:, i]) / (K - 1) for i in range(K)], dim=1)
    expected = policy_loss(out.scores[0], out.keep[0], adv.reshape(-1))
    assert torch.allclose(result.loss, expected)
    assert result.count == 2
    assert torch.allclose(result.sums["kept"], kept.mean(1).sum())  # per-clip means, summed

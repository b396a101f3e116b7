"""The budget engine (models/budget.py) and the one cost chain (models/cost.py): predicted GMACs
equal counted GMACs for every method and D; fixed / matched budgets; one calibration; the old
budget names (kwargs, config key, CLI flags, results key) still work and warn once."""
from __future__ import annotations

import argparse
import warnings

import pytest
import torch

from _flop_count import counted_macs
from videored import deprecation
from videored.models import create_model, flops
from videored.models.budget import Budget, calibrate_interpreter, check_fraction
from videored.models.cost import embed_macs, group_macs, head_macs
from videored.models.methods import METHODS, budget_kwargs, get_method, predicted_gmacs, run_methods


@pytest.fixture(autouse=True)
def fresh_warnings():
    """Each test sees the first use of an old name (warn once per process)."""
    deprecation._WARNED.clear()
    yield
    deprecation._WARNED.clear()


def _model(groups: int, video: bool = False):
    torch.manual_seed(0)
    if video:
        model = create_model("timesformer_jointst_tiny_patch16_224", img_size=64, num_frames=2,
                             depth=2 * groups, groups=groups, num_classes=3,
                             selector="interpreter")
    else:
        model = create_model("deit_tiny_patch16_224", img_size=96, depth=2 * groups,
                             groups=groups, num_classes=3, selector="interpreter")
    for interp in model.interpreters:  # unequal counts per clip
        torch.nn.init.normal_(interp.query.weight, std=0.5)
    # the learned pruners (SPViT selectors, SViT gates), untrained: built after the weights
    # above so those are unchanged; spread so their own decisions differ from clip to clip
    config = dict(model.model_config)
    with_pruners = create_model(config.pop("name"), **config, pruners=["spvit", "svit"])
    with_pruners.load_state_dict(model.state_dict(), strict=False)
    for p in with_pruners.pruners.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.3)
    return with_pruners.eval()


def _x(model, n: int = 3) -> torch.Tensor:
    T, gh, _ = model.grid
    size = gh * model.patch_size
    shape = (n, 3, T, size, size) if model.embed.num_frames else (n, 3, size, size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1)) * torch.linspace(
        0.3, 3.0, n).view(n, *[1] * (len(shape) - 1))


def _chain(model, out, method) -> torch.Tensor:
    """The cost chain written out from a forward's own counts (keep per group), independently of
    the forward's accumulation: embed + Σ_j (scoring at alive_j + L blocks at kept_j) + head."""
    dim, L = model.embed_dim, len(model.blocks) // model.groups
    alive = torch.full((len(out.logits),), model.num_patches, dtype=torch.float64)
    macs = torch.full_like(alive, embed_macs(model))
    for j in range(model.groups):
        kept = out.keep[j].sum(1).double()
        if method.name == "interpreter":
            scoring = flops.interpreter_macs(alive, dim, model.interpreters[j].num_heads)
        else:
            scoring = method.scoring_macs(alive, dim)
        macs = macs + group_macs(scoring, kept, L, dim, model.mlp_ratio)
        alive = kept
    return ((macs + head_macs(model)) / 1e9).float()


@pytest.mark.parametrize("groups,video", [(1, True), (1, False), (2, False), (3, False)])
def test_predicted_gmacs_equal_counted_for_every_method_and_D(groups, video):
    model = _model(groups, video)
    x = _x(model)
    with torch.no_grad():
        for m in METHODS.values():
            if m.unusable(model):  # RLT on an image model
                with pytest.raises(ValueError, match="video-only"):
                    model(x, selector=m.selector)
                continue
            if m.budgeted:
                setting = m.setting_for(torch.tensor([0.2, 0.45, 0.8], dtype=torch.float64),
                                        model.groups)
                out = model(x, selector=m.selector, setting=setting)
                torch.testing.assert_close(predicted_gmacs(model, m.name, setting),
                                           out.gflops.cpu(), rtol=1e-6, atol=0)
                one, counted = counted_macs(lambda: model(x[:1], selector=m.selector,
                                                          setting=float(setting[1])))
            else:  # original / interpreter: no setting; the chain from the forward's counts
                out = model(x, selector=m.selector)
                one, counted = counted_macs(lambda: model(x[:1], selector=m.selector))
            if m.reduce is None:
                torch.testing.assert_close(_chain(model, out, m), out.gflops, rtol=1e-6, atol=0)
            assert one.gflops.item() * 1e9 == pytest.approx(counted, rel=1e-6), m.name


def test_fixed_gmacs_budget_is_met_within_two_percent():
    model = _model(3)
    x = _x(model)
    dense = model(x[:1], selector="none").gflops.item()
    budget = Budget(gmacs=0.5 * dense)
    with torch.no_grad():
        for name in ("random", "attention", "tome", "evit"):
            out = model(x, **budget.forward_kwargs(model, get_method(name), batch=len(x)))
            assert ((out.gflops.double() / (0.5 * dense)) - 1).abs().max() <= 0.02, name
    assert budget.describe() == {"match": "fixed", "gmacs": 0.5 * dense}


def test_budget_kinds_and_one_range_check():
    assert Budget.of(0.3).describe() == {"match": "fixed", "kept_ratio": 0.3}
    assert Budget.of(None, "gmacs").matched and Budget(match="gmacs").reference_key == "gflops"
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"kept_ratio must be in \[0, 1\]"):
            Budget(kept_ratio=bad)
    with pytest.raises(ValueError, match="not both"):
        Budget(kept_ratio=0.5, gmacs=1.0)
    with pytest.raises(ValueError, match="match must be one of"):
        Budget(match="flops")
    with pytest.raises(ValueError, match=r"evit_schedule: kept_ratio must be in \[0, 1\]"):
        from videored.models.evit import evit_schedule
        evit_schedule(196, 3, 1.2)
    assert check_fraction(torch.tensor([0.0, 1.0])) is not None


def test_run_methods_budget_argument_equals_the_old_keywords():
    model = _model(3)
    x = _x(model)
    with torch.no_grad():
        model.reset_random_selector()  # the random scores' sequence starts again
        old = run_methods(model, x, ["interpreter", "random", "tome"], match="gmacs")
        model.reset_random_selector()
        new = run_methods(model, x, ["interpreter", "random", "tome"], budget=Budget(match="gmacs"))
    for m in old:
        torch.testing.assert_close(new[m].logits, old[m].logits)
        torch.testing.assert_close(new[m].gflops, old[m].gflops)


@pytest.mark.parametrize("groups", [1, 3])
def test_one_calibration_batch_and_per_clip(groups):
    model = _model(groups)
    x = _x(model, n=4)
    n = model.num_patches
    calibrate_interpreter(model, x, 0.4)
    with torch.no_grad():
        kept = model(x).kept_ratio
    assert kept.mean().item() == pytest.approx(0.4, abs=(1 + 2 * groups) / n)
    ratios = [0.2, 0.4, 0.6, 0.8]
    calibrate_interpreter(model, x, ratios)
    with torch.no_grad():
        kept = model(x).kept_ratio
    assert kept.tolist() == pytest.approx(ratios, abs=(1 + 2 * groups) / n)
    calibrate_interpreter(model, x, 1.0)
    assert all(i.threshold == 0.0 for i in model.interpreters)


def test_step_benchmark_uses_the_one_calibration():
    from videored.bench.steps import calibrate
    model = _model(1, video=True)
    x = _x(model, n=2)
    threshold, mean_i = calibrate(model, x)
    with torch.no_grad():
        _, tokens = model.embed(x)
        scores = model.interpreters[0](tokens).flatten().float()
    assert mean_i == pytest.approx(scores.mean().item())
    assert threshold == pytest.approx(float(torch.quantile(scores, 1.0 - mean_i)))


def test_evit_training_schedule_is_its_table_entry():
    """The trainer reads EViT's warm-up from the table: the cosine on the per-stage rate."""
    from videored.models.evit import warmup_kept_ratio
    model = _model(1)
    evit = get_method("evit")
    from videored.models.evit import evit_blocks
    stages = len(evit_blocks(len(model.blocks)))
    for progress in (0.0, 0.3, 1.0):
        kw = evit.training_kwargs(model, 0.343, progress)
        assert kw["selector"] == "evit"
        assert kw["setting"] == pytest.approx(warmup_kept_ratio(progress, 0.343, stages))
    assert evit.training_kwargs(model, 0.343, 1.0) == budget_kwargs(model, "evit", kept_ratio=0.343)
    assert get_method("tome").train_schedule is None


# ---- old names: still work, warn once ----

def _count_future(fn) -> int:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fn()
    return sum(issubclass(w.category, FutureWarning) and "deprecated" in str(w.message)
               for w in seen)


def test_model_keyword_keep_ratio_is_the_setting_and_warns_once():
    model = _model(3)
    x = _x(model, n=2)
    with torch.no_grad():
        new = model(x, selector="attention", setting=0.5)
        assert _count_future(lambda: model(x, selector="attention", keep_ratio=0.5)) == 1
        assert _count_future(lambda: model(x, selector="attention", keep_ratio=0.5)) == 0
        old = model(x, selector="attention", keep_ratio=0.5)
    torch.testing.assert_close(old.logits, new.logits)
    assert _count_future(lambda: create_model("deit_tiny_patch16_224", img_size=32, depth=3,
                                              keep_ratio=0.3)) == 1
    built = create_model("deit_tiny_patch16_224", img_size=32, depth=3, keep_ratio=0.3)
    assert built.setting == 0.3 and built.keep_ratio == 0.3
    kwargs = budget_kwargs(model, "random", kept_ratio=0.125)
    assert "keep_ratio" not in kwargs and kwargs["setting"] == pytest.approx(0.5)
    assert _count_future(lambda: kwargs["keep_ratio"]) == 1  # the old key still reads it


def test_config_key_keep_ratio_is_kept_ratio_and_warns_once(tmp_path):
    from videored.engine.config import ConfigError, load_config
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  root: data\nschedule:\n  stages: [supervised]\n  reduction: evit\n"
                    "  keep_ratio: 0.343\n")
    box = {}
    assert _count_future(lambda: box.update(cfg=load_config(path))) == 1
    assert box["cfg"].schedule.kept_ratio == pytest.approx(0.343)
    assert _count_future(lambda: box.update(cfg=load_config(
        None, ["data.root=d", "schedule.keep_ratio=0.5"]))) == 0  # once per process
    assert box["cfg"].schedule.kept_ratio == 0.5
    with pytest.raises(ConfigError, match=r"schedule.kept_ratio.*\[0, 1\]"):
        load_config(None, ["data.root=d", "schedule.kept_ratio=1.5"])
    with pytest.raises(ConfigError, match="both set"):
        load_config(None, ["data.root=d"],
                    base={"schedule": {"keep_ratio": 0.2, "kept_ratio": 0.3}})


def test_cli_flags_keep_ratio_still_work_and_warn_once():
    from videored.commands import bench, evaluate
    p = argparse.ArgumentParser(prog="videored eval")
    evaluate.add_arguments(p)
    box = {}
    assert _count_future(lambda: box.update(a=p.parse_args(
        ["--checkpoint", "m.pt", "--keep-ratio", "0.3"]))) == 1
    assert box["a"].kept_ratio == 0.3
    assert _count_future(lambda: p.parse_args(["--checkpoint", "m.pt", "--keep-ratio", "0.3"])) == 0
    assert p.parse_args(["--checkpoint", "m.pt", "--kept-ratio", "0.4"]).kept_ratio == 0.4
    q = argparse.ArgumentParser(prog="videored bench")
    bench.add_arguments(q)
    assert _count_future(lambda: box.update(b=q.parse_args(["--keep-ratios", "1.0,0.5"]))) == 1
    assert box["b"].kept_ratios == "1.0,0.5"


def test_results_key_per_selection_keep_ratio_is_the_setting():
    """results.json keeps the old key beside `setting` (and names it under deprecated_keys)."""
    from videored.engine.evaluation import ViewPrediction, aggregate
    views = [ViewPrediction(index=i, video_index=i, spatial_index=0, temporal_index=0, label=0,
                            probs=torch.tensor([0.9, 0.1]), failed=False, kept_ratio=0.25,
                            gflops=1.0, setting=0.5) for i in range(2)]
    row = aggregate(views, num_classes=2)
    assert row["setting"] == 0.5

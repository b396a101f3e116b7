"""The method table: one budget vocabulary, matched comparisons by construction, and the same
kept ratio from eval, bench and visualize for the same method, model and clip."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from videored.models import create_model, save_model_file
from videored.models.methods import (EXPLANATIONS, METHODS, budget_kwargs, get_method,
                                     parse_methods, predicted_gmacs, run_methods)

BASELINES = [m.name for m in METHODS.values() if m.budgeted]


def _baselines(model) -> list[str]:
    """The budgeted methods this model can run (RLT is video-only)."""
    return [m for m in BASELINES if get_method(m).unusable(model) is None]


def _spread(model, std: float = 0.5):
    """Interpreter weights that keep a different number of tokens in each clip."""
    for interp in model.interpreters:
        torch.nn.init.normal_(interp.query.weight, std=std)
    return model


def _with_pruners(model):
    """The same weights plus (untrained) SPViT selectors and SViT gates, so the learned pruners
    run at budgets beside the baselines (built after the fixture's weights: same RNG stream)."""
    config = dict(model.model_config)
    out = create_model(config.pop("name"), **config, pruners=["spvit", "svit"])
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pruners.") for k in missing)
    return out


def _video_model():  # D = 1, 4 frames x 4 x 4 = 64 patch tokens
    torch.manual_seed(0)
    return _with_pruners(_spread(create_model("timesformer_jointst_tiny_patch16_224", img_size=64,
                                num_frames=4, depth=2, num_classes=3, selector="interpreter"))).eval()


def _image_model():  # D = 3 groups of one block, 8 x 8 = 64 patch tokens
    torch.manual_seed(0)
    return _with_pruners(_spread(create_model("deit_tiny_patch16_224", img_size=128, depth=3, groups=3,
                                num_classes=3, selector="interpreter"))).eval()


def _floor(model, x, method):
    """The smallest budget a method reaches on x: ToMe at most halves the rows per block, so a
    shallow model cannot go below N / 2^depth (the fixtures have 2-3 blocks; ViT-B has 12)."""
    return model(x, **budget_kwargs(model, method, kept_ratio=0.0))


def _clips(model, n=6):
    T, gh, _ = model.grid
    size = gh * model.patch_size
    shape = (n, 3, T, size, size) if model.embed.num_frames else (n, 3, size, size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return x * torch.linspace(0.3, 3.0, n).view(n, *[1] * (x.ndim - 1))  # unlike contents


def test_table_entries_are_complete_and_named_once():
    assert list(METHODS) == ["original", "interpreter", "random", "attention",
                             "temporal_difference", "tome", "evit", "rlt", "rlt_threshold",
                             "spvit", "spvit_native", "svit", "svit_native"]
    assert [m.name for m in METHODS.values() if m.learned] == ["interpreter"]
    assert BASELINES == ["random", "attention", "temporal_difference", "tome", "evit", "rlt",
                         "spvit", "svit"]
    assert [m.name for m in METHODS.values() if m.native] == [
        "rlt_threshold", "spvit_native", "svit_native"]
    assert [m.name for m in METHODS.values() if m.reduce is not None] == [
        "tome", "evit", "spvit", "spvit_native", "svit", "svit_native"]
    assert METHODS["original"].select is None and not METHODS["original"].budgeted
    assert parse_methods(" random,attention ") == ["random", "attention"]
    with pytest.raises(ValueError, match="unknown methods \\['magic'\\]"):
        parse_methods("random,magic")
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        get_method("magic")
    # explanation-only names: accepted only where asked for, never table entries
    assert parse_methods("interpreter,rollout,chefer", explanations=True) == [
        "interpreter", "rollout", "chefer"]
    assert not set(EXPLANATIONS) & set(METHODS)
    with pytest.raises(ValueError, match="explanation-only"):
        parse_methods("random,gradcam")


@pytest.mark.parametrize("build", [_video_model, _image_model], ids=["video_D1", "deit_D3"])
def test_matched_ratio_within_one_token_per_clip(build):
    model = build()
    x = _clips(model)
    with torch.no_grad():
        out = run_methods(model, x, ["interpreter", *_baselines(model)], match="ratio")
    N = model.num_patches
    ref = out["interpreter"].keep[-1].sum(1).float()  # (B,) tokens reaching the last block
    assert len(set(ref.tolist())) > 2, "the test needs unequal kept counts per clip"
    for m in _baselines(model):
        kept = out[m].keep[-1].sum(1).float()
        with torch.no_grad():  # where the reference is below what the method can reach
            target = torch.maximum(ref, _floor(model, x, m).keep[-1].sum(1).float())
        assert (kept - target).abs().mean() <= 1.0, (m, kept.tolist(), target.tolist())
        assert out[m].kept_ratio.mean() == pytest.approx(float(target.mean()) / N, abs=1 / N)
    if model.groups == 3:  # the old eval bug: the final ratio used per selection (3 times)
        wrong = model(x, selector="random", keep_ratio=out["interpreter"].kept_ratio.double())
        assert (wrong.keep[-1].sum(1).float() - ref).abs().mean() > 5


@pytest.mark.parametrize("build", [_video_model, _image_model], ids=["video_D1", "deit_D3"])
def test_matched_gmacs_within_two_percent_per_clip(build):
    model = build()
    x = _clips(model)
    with torch.no_grad():
        out = run_methods(model, x, ["interpreter", *_baselines(model)], match="gmacs")
    ref = out["interpreter"].gflops.double()
    for m in _baselines(model):
        with torch.no_grad():
            target = torch.maximum(ref, _floor(model, x, m).gflops.double())
        rel = (out[m].gflops.double() - target).abs() / target
        assert rel.max() <= 0.02, (m, rel.tolist())


@pytest.mark.parametrize("build", [_video_model, _image_model], ids=["video_D1", "deit_D3"])
def test_predicted_gmacs_equal_the_models_count(build):
    """The table's cost formula (no forward) == what the model counts while it runs (which the
    model tests check against torch's flop counter)."""
    model = build()
    x = _clips(model, n=4)
    ratios = torch.tensor([0.05, 0.31, 0.5, 0.93], dtype=torch.float64)
    with torch.no_grad():
        for m in _baselines(model):
            out = model(x, selector=m, keep_ratio=ratios)
            torch.testing.assert_close(predicted_gmacs(model, m, ratios), out.gflops.cpu(),
                                       rtol=1e-6, atol=0)
            one = model(x[:1], selector=m, keep_ratio=0.6)
            assert predicted_gmacs(model, m, 0.6).item() == pytest.approx(one.gflops.item(),
                                                                          rel=1e-6)


def test_fixed_budget_is_a_kept_ratio_not_a_per_selection_ratio():
    model = _image_model()
    kwargs = budget_kwargs(model, "random", kept_ratio=0.125)
    assert kwargs["keep_ratio"] == pytest.approx(0.5)  # 0.5 per selection, D = 3
    with torch.no_grad():
        out = model(_clips(model, 2), **kwargs)
    assert out.kept_ratio.tolist() == [8 / 64, 8 / 64]  # 64 -> 32 -> 16 -> 8
    assert budget_kwargs(model, "interpreter", kept_ratio=0.1) == {"selector": "interpreter"}
    assert budget_kwargs(model, "original", kept_ratio=0.1) == {"selector": "none"}


def test_eval_bench_and_visualize_give_the_same_kept_ratio(tmp_path):
    """One DeiT (D = 3) model file, one real image file: `videored eval` (in process), the speed
    benchmark and the visualizer keep the same fraction for every method, matched to the
    interpreter and at a fixed budget."""
    from PIL import Image

    from videored.bench.speed import speed_table
    from videored.commands.visualize import _run_methods
    from videored.engine.config import load_config
    from videored.engine.run_eval import run_evaluation
    from videored.viz.inputs import prepare_input

    model = _image_model()
    model.interpreters[0].threshold = 0.45  # a mixed pattern: neither all nor none kept
    save_model_file(model, tmp_path / "model.pt")
    (tmp_path / "img" / "test" / "a").mkdir(parents=True)
    image = tmp_path / "img" / "test" / "a" / "0.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 170, 3), dtype=np.uint8)
                    ).save(image)
    (tmp_path / "cfg.yaml").write_text(f"""
model: {{name: deit_tiny_patch16_224, img_size: 128, depth: 3, groups: 3, num_classes: 3,
        kwargs: {{pruners: [spvit, svit]}}}}
data: {{kind: image, root: {tmp_path / 'img'}, batch_size: 1, num_workers: 0}}
run: {{device: cpu, progress: false}}
""")
    baselines = _baselines(model)
    methods = ["original", "interpreter", *baselines]

    def evaluate(**budget):
        cfg = load_config(tmp_path / "cfg.yaml")
        res = run_evaluation(cfg, checkpoint=tmp_path / "model.pt", out_dir=tmp_path / "eval",
                             methods=methods, speed_runs=0, **budget)
        return {m: r["kept_ratio"] for m, r in res["methods"].items()}, res

    from videored.models import load_model_file
    loaded = load_model_file(tmp_path / "model.pt").eval()
    x = prepare_input(image, loaded).x
    with torch.no_grad():
        viz_matched = {m: float(k[-1].mean())
                       for m, (_, k, _, _) in _run_methods(loaded, x, methods, None)[0].items()}
        viz_fixed = {m: float(k[-1].mean())
                     for m, (_, k, _, _) in _run_methods(loaded, x, baselines, 0.3)[0].items()}
    eval_matched, res = evaluate()
    assert res["budget"] == {"match": "ratio", "reference": "interpreter"}
    eval_fixed, res = evaluate(kept_ratio=0.3)
    assert res["budget"] == {"match": "fixed", "kept_ratio": 0.3}
    rows = speed_table("deit", kept_ratios=[0.3], batch_sizes=[1], methods=baselines, runs=1,
                       warmup=0, model=loaded, inputs=x[None])
    bench_fixed = {r.method: r.kept_ratio for r in rows if r.method != "original"}

    interp = eval_matched["interpreter"]
    assert 0 < interp < 1 and eval_matched["original"] == viz_matched["original"] == 1.0
    assert viz_matched == pytest.approx(eval_matched, abs=1e-6)
    for m in _baselines(model):  # matched: the interpreter's kept ratio, within one token (64 patches)
        assert eval_matched[m] == pytest.approx(interp, abs=1 / 64)
    assert eval_fixed == pytest.approx({**viz_fixed, "original": 1.0,
                                        "interpreter": interp}, abs=1e-6)
    assert bench_fixed == pytest.approx(viz_fixed, abs=1e-6)
    # EViT keeps one patch fewer where an earlier stage's fused token is among the attentive
    for m, v in bench_fixed.items():
        assert v == pytest.approx(0.3, abs=(2 if m == "evit" else 1) / 64), (m, v)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["methods"]["random"]["budget"] == {"match": "fixed", "kept_ratio": 0.3}
    assert "Budget: every baseline at kept ratio 0.3 (fixed)." in (
        tmp_path / "eval" / "results.md").read_text()

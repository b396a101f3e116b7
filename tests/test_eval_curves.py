"""Trade-off curves from `videored eval --kept-ratios` (issue 27): every method at every budget in
one pass, against a plain clip-by-clip reference, the single-budget eval, and a collected sweep."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from videored.engine.config import load_config
from videored.engine.distributed import DistInfo
from videored.engine.evaluation import Arm, predict_arms, predict_views
from videored.engine.run_eval import curve_arm, eval_command, plan_arms, run_evaluation
from videored.models import create_model, flops, save_model_file
from videored.models.budget import Budget, method_kwargs
from videored.models.cost import embed_macs, head_macs
from videored.models.methods import default_methods, get_method

# the curve's methods: every entry a video model runs without trained selectors of its own
METHODS = default_methods(video=True)

MODEL = dict(img_size=32, num_frames=2, depth=2, num_classes=3)
NAME = "timesformer_jointst_tiny_patch16_224"
N = 2 * 2 * 2  # patch tokens: 2 frames of a 2x2 grid
BUDGETS = [0.25, 0.5, 0.75]
TOPK = ("interpreter", "random", "attention", "temporal_difference")  # top-k of scores
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model with spread interpreter scores, 6 labelled clips (one view each, so clip-1 =
    video-1), batches of 4 (one full, one short)."""
    tmp = tmp_path_factory.mktemp("curves")
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 2, 32, 32), torch.randint(0, 3, (6,))
    torch.save({"test": {"x": x, "y": y}}, tmp / "data.pt")
    model = create_model(NAME, **MODEL, selector="interpreter")
    for interp in model.interpreters:  # spread scores so the threshold keeps unequal counts
        torch.nn.init.normal_(interp.query.weight, std=0.3)
    save_model_file(model, tmp / "model.pt")
    cfg = tmp / "eval.yaml"
    cfg.write_text(f"""
model: {{name: {NAME}, img_size: 32, num_frames: 2, depth: 2, num_classes: 3}}
data: {{kind: tensor_file, root: {tmp / 'data.pt'}, batch_size: 4, num_workers: 0}}
run: {{device: cpu, progress: false}}
""")
    curve = run_evaluation(load_config(cfg, []), checkpoint=tmp / "model.pt", out_dir=tmp / "curve",
                           methods=list(METHODS), kept_ratios=BUDGETS, speed_runs=0)
    return dict(tmp=tmp, cfg=cfg, x=x, y=y, model=model.eval(), curve=curve)


def _point(curves, method, budget):
    (p,) = [p for p in curves[method] if p["budget"] == budget and not p["native"]]
    return p


def _topk_gmacs_by_hand(model, kept: int, scoring: float) -> float:
    """embed + scoring + depth blocks over kept + cls + head, from the per-layer formulas."""
    blocks = len(model.blocks) * flops.block_macs(torch.tensor(kept + 1.0), model.embed_dim,
                                                  model.mlp_ratio)
    return float(embed_macs(model) + scoring + blocks + head_macs(model)) / 1e9


def test_curve_points_equal_a_clip_by_clip_reference(run):
    """Every method at every budget: errors from plain one-clip forwards (argmax vs label),
    top-k kept ratios round(r N) / N by hand and their GFLOPs from the per-layer cost formulas."""
    model, x, y, curves = run["model"], run["x"], run["y"], run["curve"]["curves"]
    assert set(curves) == set(METHODS)
    dim = model.embed_dim
    for r in BUDGETS:
        for name in METHODS:
            if name == "original" or get_method(name).native:  # no budget: one native point
                continue
            entry = get_method(name).topk if name == "interpreter" else get_method(name)
            wrong, kept = 0, []
            for i in range(len(x)):  # one clip at a time, the eval's per-clip random seed
                out = model(x[i:i + 1], **method_kwargs(model, entry, kept_ratio=r),
                            random_seeds=torch.tensor([i]))
                wrong += int(out.logits.argmax(1).item() != y[i].item())
                kept.append(float(out.kept_ratio))
            p = _point(curves, name, r)
            assert p["clip1_err"] == pytest.approx(100 * wrong / len(x)), (name, r)
            assert p["video1_err"] == p["clip1_err"]
            assert p["kept_ratio"] == pytest.approx(sum(kept) / len(kept)), (name, r)
            if name in TOPK:
                k = round(r * N)
                assert p["kept_ratio"] == pytest.approx(k / N)
                scoring = {"interpreter": float(model.interpreters[0].macs(torch.tensor(N.__float__()))),
                           "attention": float(flops.attention_selector_macs(torch.tensor(N + 1.0), dim))
                           }.get(name, 0.0)
                assert p["gflops"] == pytest.approx(_topk_gmacs_by_hand(model, k, scoring), rel=1e-6)
    for name in METHODS:  # RLT's own tau: one point, its kept ratio set by the clips
        if get_method(name).native:
            assert [p["native"] for p in curves[name]] == [True], name
    dense = curves["original"]
    assert len(dense) == 1 and dense[0]["kept_ratio"] == 1.0
    assert dense[0]["gflops"] == pytest.approx(_topk_gmacs_by_hand(model, N, 0.0), rel=1e-6)


def test_curves_monotone_and_each_budget_equals_a_single_eval(run, tmp_path):
    res = run["curve"]
    for name, points in res["curves"].items():
        budgeted = [p for p in points if p["budget"] is not None]
        if name == "original" or get_method(name).native:  # single points
            continue
        assert [p["budget"] for p in budgeted] == sorted(BUDGETS), name  # GFLOPs order = budget order
        g = [p["gflops"] for p in budgeted]
        k = [p["kept_ratio"] for p in budgeted]
        assert g == sorted(g) and k == sorted(k) and g[0] < g[-1], name
        assert [p["gflops"] for p in points] == sorted(p["gflops"] for p in points)
    for r in (0.25, 0.75):
        one = run_evaluation(load_config(run["cfg"], []), checkpoint=run["tmp"] / "model.pt",
                             out_dir=tmp_path / f"r{r}", methods=list(METHODS), kept_ratio=r,
                             speed_runs=0)["methods"]
        for name in METHODS:
            if not get_method(name).budgeted:
                continue
            p = _point(res["curves"], name, r)
            for key in ("clip1_err", "video1_err", "kept_ratio", "gflops"):
                assert p[key] == pytest.approx(one[name][key], abs=1e-9), (name, r, key)
        # the interpreter's threshold point and the dense point are the single run's rows
        (native,) = [p for p in res["curves"]["interpreter"] if p["native"]]
        for key in ("clip1_err", "kept_ratio", "gflops"):
            assert native[key] == pytest.approx(one["interpreter"][key], abs=1e-9)
            assert res["curves"]["original"][0][key] == pytest.approx(one["original"][key])
    assert 0.05 < native["kept_ratio"] < 0.95  # the threshold point is not one of the budgets


def test_curve_writes_results_table_and_figure(run):
    out = run["tmp"] / "cli"
    from videored.cli import main

    assert main(["eval", "--config", str(run["cfg"]), "--checkpoint", str(run["tmp"] / "model.pt"),
                 "--out", str(out), "--kept-ratios", "0.25,0.5", "--methods",
                 "original,interpreter,random", "--speed-runs", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["kept_ratios"] == [0.25, 0.5] and res["match"] == "ratio"
    assert set(res["curves"]) == {"original", "interpreter", "random"}
    assert all(p["clips_per_s"] > 0 for pts in res["curves"].values() for p in pts)
    assert res["methods"]["random@0.5"]["budget"] == {"match": "fixed", "kept_ratio": 0.5}
    md = (out / "results.md").read_text()
    assert "### Trade-off curves" in md and "| interpreter (threshold) |" in md
    assert "minus random's err" in md
    assert (out / "tradeoff.png").stat().st_size > 1000 and (out / "tradeoff.pdf").is_file()


def test_gmacs_curve_matches_the_interpreter_topk_cost(run, tmp_path):
    """--match gmacs: each baseline at budget r costs what the interpreter's top-k costs there,
    clip by clip, to within half a token's blocks (8 tokens: one token is a coarse step)."""
    res = run_evaluation(load_config(run["cfg"], []), checkpoint=run["tmp"] / "model.pt",
                         out_dir=tmp_path, methods=["interpreter", "random", "attention"],
                         kept_ratios=[0.25, 0.5], match="gmacs", speed_runs=0)
    model = run["model"]
    for r in (0.25, 0.5):
        ref = _point(res["curves"], "interpreter", r)["gflops"]
        k = round(r * N)
        step = float(len(model.blocks) * (flops.block_macs(torch.tensor(k + 2.0), model.embed_dim,
                                                           model.mlp_ratio)
                                          - flops.block_macs(torch.tensor(k + 1.0), model.embed_dim,
                                                             model.mlp_ratio))) / 1e9
        for m in ("random", "attention"):
            assert abs(_point(res["curves"], m, r)["gflops"] - ref) <= step / 2 + 1e-9, (m, r)
            assert res["methods"][curve_arm(m, r)]["budget"] == {
                "match": "gmacs", "reference": curve_arm("interpreter", r)}
    # random scores nothing: for the interpreter's cost it keeps at least as many tokens
    assert _point(res["curves"], "random", 0.25)["kept_ratio"] >= 0.25


class _Counting(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y, self.calls = x, y, []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.calls.append(i)
        return {"video": self.x[i], "label": int(self.y[i])}


def test_each_view_is_decoded_once_for_every_arm(run):
    model = run["model"]
    ds = _Counting(run["x"], run["y"])
    nets = {m: model for m in METHODS}
    arms = plan_arms(list(METHODS), nets, kept_ratios=BUDGETS, match="gmacs")
    single = [m for m in METHODS if m == "original" or get_method(m).native]  # one arm each
    # + the interpreter's threshold arm, + at each budget every other method (interpreter: top-k)
    assert len(arms) == len(single) + 1 + len(BUDGETS) * (len(METHODS) - len(single))
    views = predict_arms(arms, ds, dist=CPU, batch_size=4)
    assert sorted(ds.calls) == list(range(len(ds)))  # 6 items read once for 20 arms
    # the one-arm call is the same code path: a fixed-budget arm gives the same views alone
    alone = predict_views(model, ds, dist=CPU, batch_size=4, method="attention",
                          budget=Budget(kept_ratio=0.5))
    together = views[curve_arm("attention", 0.5)]
    assert [v.kept_ratio for v in alone] == [v.kept_ratio for v in together]
    assert all(torch.equal(a.probs, b.probs) for a, b in zip(alone, together))


def test_arm_order_and_curve_requests_are_checked(run):
    model = run["model"]
    matched = Arm("random", "random", model, Budget(match="ratio"), reference="interpreter")
    with pytest.raises(ValueError, match="reference 'interpreter' must come before"):
        predict_arms([matched, Arm("interpreter", "interpreter", model)], _Counting(run["x"], run["y"]),
                     dist=CPU, batch_size=4)
    ck = run["tmp"] / "model.pt"
    with pytest.raises(ValueError, match="not both"):
        eval_command(checkpoint=ck, config=run["cfg"], kept_ratio=0.3, kept_ratios=[0.3])
    with pytest.raises(ValueError, match="add 'interpreter'"):
        eval_command(checkpoint=ck, config=run["cfg"], kept_ratios=[0.3], match="gmacs",
                     methods="random,attention")
    with pytest.raises(ValueError, match="given twice"):
        eval_command(checkpoint=ck, config=run["cfg"], kept_ratios=[0.3, 0.3])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        eval_command(checkpoint=ck, config=run["cfg"], kept_ratios=[0.3, 1.5])


def test_collect_of_a_sweep_gives_the_one_process_curves(run, tmp_path, monkeypatch):
    """Two array tasks (budgets 0.25 and 0.75) through submitit's in-process debug executor,
    collected: the same curves as one `--kept-ratios 0.25,0.75` run, and the same files."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from slurm import submit

    monkeypatch.chdir(tmp_path)
    common = ["--config", str(run["cfg"]), "--checkpoint", str(run["tmp"] / "model.pt"),
              "--speed-runs", "0", "--methods", "original,interpreter,random,tome"]
    assert submit.main(["sweep", "--command", "eval", "--cluster", "debug", "--job-dir",
                        str(tmp_path / "sweep"), "--grid", "eval.kept_ratios=0.25,0.75",
                        *common]) == 0
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert "--kept-ratios" in manifest["points"][1]["argv"]
    assert submit.main(["collect", "--job-dir", str(tmp_path / "sweep")]) == 0
    swept = json.loads((tmp_path / "sweep" / "results.json").read_text())
    one = run_evaluation(load_config(run["cfg"], []), checkpoint=run["tmp"] / "model.pt",
                         out_dir=tmp_path / "one", methods=["original", "interpreter", "random",
                                                            "tome"],
                         kept_ratios=[0.25, 0.75], speed_runs=0)
    assert swept["kept_ratios"] == [0.25, 0.75]
    assert swept["curves"] == json.loads(json.dumps(one["curves"]))
    assert (tmp_path / "sweep" / "tradeoff.png").is_file()
    assert "### Who wins at each budget" in (tmp_path / "sweep" / "results.md").read_text()


def test_bench_plot_draws_every_speed_row_against_the_flops_limit(tmp_path):
    """`videored bench --plot`: one point per speed row at (FLOPs ratio, speed-up), the y = x line
    over the whole range, written next to the JSON; --plot without --json is refused up front."""
    pytest.importorskip("matplotlib")
    from videored.bench.report import plot_speedup
    from videored.cli import main
    from videored.viz.tradeoff import speedup_figure

    rows = json.loads((Path(__file__).resolve().parents[1] / "docs" / "bench" /
                       "peers_deit.json").read_text())["speed"]
    ax = speedup_figure(rows, title="t").axes[0]
    limit, *series = ax.get_lines()
    assert list(limit.get_xdata()) == list(limit.get_ydata())  # y = x
    top = max(max(r["flops_ratio"], r["speedup"]) for r in rows)
    assert limit.get_xdata()[1] >= top and ax.get_xlim()[1] >= top
    drawn = sorted((float(x), float(y)) for line in series
                   for x, y in zip(line.get_xdata(), line.get_ydata()))
    assert drawn == sorted((r["flops_ratio"], r["speedup"]) for r in rows)
    files = plot_speedup(rows, tmp_path / "bench.json")
    assert [f.name for f in files] == ["bench.png", "bench.pdf"]
    assert main(["bench", "--plot", "--models", "deit_tiny_patch16_224"]) == 2


# ---- a hand-made model and set: every method's prediction follows from a rule by hand ----
#
# depth 1, width 8, 2 frames of a 2x2 grid (N = 8), 2 classes. Each patch is a constant +1 or -1
# (all channels); the patch embedding maps it to s * u, u = (1, -1, 1, -1, ...) (mean 0, variance 1,
# so LayerNorm(s u) = s u); no position / time embedding; the cls token is 0.01 u (LayerNorm makes
# it ~ +u: it votes like one more positive patch, and its residual is small). The block's q and k
# are 0 (uniform attention over cls + kept), v and proj the identity, the MLP adds 0; so the cls
# token leaves the block as (0.01 + (0.995 + sum of kept signs) / (k + 1)) u, and the head (rows
# u, -u) predicts class 0 when the kept signs sum to >= 0 and class 1 below (every k here is even,
# so the sum is even and the cls vote breaks every tie the same way, never by rounding). The
# scorers' choices are known by hand:
#   attention: uniform cls attention, all tied -> the lowest patch indices
#   temporal_difference: |x_t - x_(t-1)| = 2 where the sign flips from frame 0, 1 in frame 0
#     (zeros before it), 0 where it stays: flipped frame-1 patches first, then frame 0
#   interpreter: its query reads u, its key is u (bias) -> I = sigmoid(+-4): positives first;
#     its threshold 0.5 keeps exactly the positive patches
#   random: per-clip seeded uniform scores, the top k (drawn here from the same seed)
SIGNS = {  # clip -> (signs of patches 0..7 (frame 0: 0-3, frame 1: 4-7), label)
    "frame0+ frame1-": ([1, 1, 1, 1, -1, -1, -1, -1], 1),
    "frame0- frame1+": ([-1, -1, -1, -1, 1, 1, 1, 1], 1),
    "three- first": ([-1, -1, -1, 1, 1, 1, 1, 1], 1),
    "all+": ([1] * 8, 0),
    "all-": ([-1] * 8, 1),
    "one- of 8": ([1, 1, 1, 1, 1, 1, -1, 1], 0),
}
U = torch.tensor([1.0, -1.0] * 4)


def _hand_model():
    model = create_model(NAME, img_size=32, num_frames=2, depth=1, num_classes=2, embed_dim=8,
                         num_heads=2, selector="interpreter").eval()
    D = 8
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.cls_token.copy_(0.01 * U)
        model.embed.patch_embed.proj.weight.copy_(U.view(D, 1, 1, 1).expand(D, 3, 16, 16)
                                                  / (3 * 16 * 16))
        for norm in (model.blocks[0].norm1, model.blocks[0].norm2, model.norm,
                     model.interpreters[0].norm):
            norm.weight.fill_(1.0)
        model.blocks[0].attn.qkv.weight[2 * D:].copy_(torch.eye(D))  # v = identity; q = k = 0
        model.blocks[0].attn.proj.weight.copy_(torch.eye(D))
        model.head.weight.copy_(torch.stack([U, -U]))
        model.interpreters[0].query.weight.copy_(torch.eye(D))
        model.interpreters[0].key.bias.copy_(U)  # F_k(P) = u whatever P
    return model


def _clips() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.empty(len(SIGNS), 3, 2, 32, 32)
    for c, (signs, _) in enumerate(SIGNS.values()):
        for n, s in enumerate(signs):
            t, row, col = n // 4, (n % 4) // 2, n % 2
            x[c, :, t, 16 * row:16 * row + 16, 16 * col:16 * col + 16] = s
    return x, torch.tensor([label for _, label in SIGNS.values()])


def _kept_by_hand(method: str, signs: list[int], k: int, clip: int) -> list[int]:
    """The patch indices `method` keeps at k, by the rules above."""
    if method == "attention":
        order = list(range(8))
    elif method == "temporal_difference":
        diff = [1.0] * 4 + [2.0 * (signs[n] != signs[n - 4]) for n in range(4, 8)]
        order = sorted(range(8), key=lambda n: -diff[n])  # stable: lowest index wins ties
    elif method == "interpreter":
        order = sorted(range(8), key=lambda n: -signs[n])
    else:  # random: the eval's per-clip seed (run.seed 0 -> the dataset index)
        u = torch.rand(8, generator=torch.Generator().manual_seed(clip))
        order = sorted(range(8), key=lambda n: -float(u[n]))
    return order[:k]


def _predict_by_hand(signs: list[int], kept: list[int]) -> int:
    return 0 if sum(signs[n] for n in kept) >= 0 else 1


def test_hand_made_model_every_point_is_known(tmp_path):
    model = _hand_model()
    x, y = _clips()
    torch.save({"test": {"x": x, "y": y}}, tmp_path / "data.pt")
    save_model_file(model, tmp_path / "model.pt")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"""
model: {{name: {NAME}, img_size: 32, num_frames: 2, depth: 1, num_classes: 2,
        kwargs: {{embed_dim: 8, num_heads: 2}}}}
data: {{kind: tensor_file, root: {tmp_path / 'data.pt'}, batch_size: 4, num_workers: 0}}
run: {{device: cpu, progress: false}}
""")
    methods = ["original", "interpreter", "random", "attention", "temporal_difference"]
    res = run_evaluation(load_config(cfg, []), checkpoint=tmp_path / "model.pt", out_dir=tmp_path,
                         methods=methods, kept_ratios=BUDGETS, speed_runs=0)
    curves, clips = res["curves"], list(SIGNS.values())

    def err(preds: list[int]) -> float:
        return 100.0 * sum(p != label for p, (_, label) in zip(preds, clips)) / len(clips)

    dense = curves["original"][0]
    assert dense["clip1_err"] == err([_predict_by_hand(s, list(range(8))) for s, _ in clips])
    assert dense["gflops"] == pytest.approx(_topk_gmacs_by_hand(model, 8, 0.0), rel=1e-6)
    (native,) = [p for p in curves["interpreter"] if p["native"]]
    positives = [[n for n in range(8) if s[n] > 0] for s, _ in clips]
    assert native["clip1_err"] == err([_predict_by_hand(s, kept or []) for (s, _), kept
                                       in zip(clips, positives)])
    assert native["kept_ratio"] == pytest.approx(sum(map(len, positives)) / (8 * len(clips)))
    interp_macs = float(model.interpreters[0].macs(torch.tensor(8.0)))
    attention_macs = float(flops.attention_selector_macs(torch.tensor(9.0), 8))
    expected_errors = {}
    for r in BUDGETS:
        k = round(r * 8)
        for m in methods[1:]:
            preds = [_predict_by_hand(s, _kept_by_hand(m, s, k, c)) for c, (s, _) in enumerate(clips)]
            p = _point(curves, m, r)
            expected_errors[m, r] = err(preds)
            assert p["clip1_err"] == p["video1_err"] == pytest.approx(err(preds)), (m, r)
            assert p["kept_ratio"] == pytest.approx(k / 8), (m, r)
            scoring = {"interpreter": interp_macs, "attention": attention_macs}.get(m, 0.0)
            assert p["gflops"] == pytest.approx(_topk_gmacs_by_hand(model, k, scoring), rel=1e-6)
    # the set separates the methods: attention and temporal difference disagree on two clips
    assert expected_errors["attention", 0.25] != expected_errors["temporal_difference", 0.25]


@pytest.mark.slurm
def test_slurm_sweep_over_budgets_collects_the_one_process_curves(run, tmp_path):
    """The same as the debug-executor test on the real (one-node) cluster: one array task per
    budget, `--wait` collects them into the curves of one `--kept-ratios` run."""
    from test_slurm_cluster import _cluster_cpus, launch

    cpus, why = _cluster_cpus()
    if not cpus:
        pytest.skip(f"no SLURM cluster reachable ({why})")
    methods = "original,interpreter,random,attention"
    launch("sweep", "--command", "eval", "--cluster", "slurm", "--wait", "--cpus-per-task", "1",
           "--timeout", "30", "--job-dir", str(tmp_path / "sweep"), "--grid",
           "eval.kept_ratios=0.25,0.75", "--config", str(run["cfg"]), "--checkpoint",
           str(run["tmp"] / "model.pt"), "--speed-runs", "0", "--methods", methods)
    swept = json.loads((tmp_path / "sweep" / "results.json").read_text())
    one = run_evaluation(load_config(run["cfg"], []), checkpoint=run["tmp"] / "model.pt",
                         out_dir=tmp_path / "one", methods=methods.split(","),
                         kept_ratios=[0.25, 0.75], speed_runs=0)
    assert swept["curves"] == json.loads(json.dumps(one["curves"]))
    assert (tmp_path / "sweep" / "tradeoff.pdf").is_file()

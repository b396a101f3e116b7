"""`videored quickstart` end to end at a reduced size: real synthetic mp4s, the supervised ->
interpreter -> finetune job and the eval job through submitit's local executor, figures.

Checks the files it leaves and recomputes numbers of results.json from OUT/model.pt and the
test videos (kept ratios over all three crops, clip-1 error of the dense model)."""
import csv
import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from _engine_utils import run_cli
from videored.normalization import model_input
from videored.commands.quickstart import method_checks
from videored.engine.reinforce import reward
from videored.engine.builders import build_dataset
from videored.models import load_model_file

METHODS = {"original", "interpreter", "random", "attention", "temporal_difference", "tome", "evit",
           "rlt"}
CLASSES, VIDEOS_PER_CLASS = 2, 4  # 2 colours + no_object: 12 train, 3 x 2 val, 3 x 2 test videos
LABELS = CLASSES + 1


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    proc = run_cli(["quickstart", "--out", str(out), "--classes", str(CLASSES),
                    "--videos-per-class", str(VIDEOS_PER_CLASS), "--figures", "1",
                    "schedule.supervised_epochs=1", "schedule.interpreter_epochs=1",
                    "schedule.finetune_epochs=1", "data.num_workers=0", "data.batch_size=4",
                    # one REINFORCE epoch from the quickstart's 0.05 start keeps no token at all
                    # (the baselines then have keep ratio 0); start at the threshold instead
                    "model.kwargs={interpreter_init_keep: 0.25}",
                    "run.progress=false"], timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_quickstart_leaves_results_figures_and_model(quickstart_run):
    out, stdout = quickstart_run
    results = json.loads((out / "results.json").read_text())
    with open(out / "data" / "test.csv") as fh:
        num_test = sum(1 for row in csv.reader(fh, delimiter=" ") if row)
    assert num_test == LABELS * 2  # test videos per class: max(2, 4 // 4)
    assert (out / "data" / "classes.txt").read_text().split() == ["red", "green", "no_object"]
    assert results["num_videos"] == num_test and results["failed_videos"] == []
    assert set(results["methods"]) == METHODS
    for name, m in results["methods"].items():
        for key in ("clip1_err", "video1_err"):
            # an error over n videos is a multiple of 100 / n
            hits = (100.0 - m[key]) * num_test / 100.0
            assert 0 <= m[key] <= 100 and math.isclose(hits, round(hits), abs_tol=1e-6), (name, key)
        assert 0.0 < m["kept_ratio"] <= 1.0 and m["clips_per_s"] > 0
        interp = m["interpretability"]
        assert interp["samples"] == num_test and interp["failed"] == 0, name
        for key in ("miou", "pixel_acc", "mean_acc"):
            assert 0.0 <= interp[key] <= 100.0, (name, key)
    assert results["methods"]["original"]["kept_ratio"] == 1.0
    seconds = results["quickstart_seconds"]
    assert set(seconds) == {"data", "train", "eval", "figures", "total"}
    assert math.isclose(sum(v for k, v in seconds.items() if k != "total"), seconds["total"], abs_tol=0.5)

    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in METHODS)
    printed = [line for line in stdout.splitlines() if line.strip().startswith("[ok]") or "[MISSED]" in line]
    assert printed == method_checks(results)  # the run printed the checks of its own numbers

    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs and any(p.name.endswith("_all.png") for p in pngs)
    for png in pngs:
        with Image.open(png) as im:
            assert im.width > 100 and im.height > 100, png
    assert (out / "logs").is_dir() and any((out / "logs").iterdir())


@pytest.mark.slow
def test_quickstart_model_reproduces_results(quickstart_run):
    """OUT/model.pt loads and gives the interpreter's kept ratio of results.json; the dense model
    (OUT/train/dense/model.pt, the weights of `original`) gives its clip-1 error."""
    torch.set_num_threads(1)
    out, _ = quickstart_run
    results = json.loads((out / "results.json").read_text())
    model = load_model_file(out / "model.pt").eval()
    dense = load_model_file(out / "train" / "dense" / "model.pt").eval()
    assert model.interpreters is not None and model.num_classes == LABELS
    assert results["methods"]["original"]["weights"] == str(out / "train" / "dense" / "model.pt")
    cfg = OmegaConf.create(results["config"])
    cfg.data.root = str(out / "data")
    views = build_dataset(cfg, "test")  # all three crops of every test video
    kept, dense_wrong = [], 0
    with torch.no_grad():
        for i in range(len(views)):
            item = views[i]
            x = model_input(item)[None]  # (1, C, T, H, W): uint8 normalized as the steps do
            kept.append(model(x).keep[0].float().mean().item())  # greedy interpreter decisions
            if i % 3 == 1:  # the centre crop: clip-1
                logits = dense(x, selector="none").logits
                dense_wrong += int(logits.argmax(1).item() != item["label"])
    assert len(kept) == 3 * results["num_videos"]
    assert math.isclose(sum(kept) / len(kept), results["methods"]["interpreter"]["kept_ratio"], abs_tol=1e-6)
    assert math.isclose(100.0 * dense_wrong / results["num_videos"],
                        results["methods"]["original"]["clip1_err"], abs_tol=1e-6)


def _expected_reward(p: torch.Tensor, m: int, n: int, tau: float) -> torch.Tensor:
    """E[R] when each of m redundant informative tokens (any one suffices) is kept with
    probability p and the other n - m with 0: sum over j ~ Binomial(m, p) kept tokens."""
    j = torch.arange(m + 1, dtype=torch.float64)
    log_binom = torch.lgamma(torch.tensor(m + 1.0)) - torch.lgamma(j + 1) - torch.lgamma(m - j + 1)
    prob = torch.exp(log_binom + j * torch.log(p[:, None]) + (m - j) * torch.log1p(-p[:, None]))
    r = reward(j > 0, j / n, tau).double()  # (m + 1,)
    return (prob * r).sum(1)


def test_redundant_tokens_make_the_reward_optimal_keep_probability_fall_below_half():
    """Why the quickstart's threshold is below 0.5: with 16-40 object tokens out of 128, any few
    of which classify the video, the keep probability maximizing E[R] (Eq. 2) is < 0.5, so the
    greedy rule I >= 0.5 would drop exactly the tokens REINFORCE learns to keep."""
    torch.manual_seed(0)
    n, tau = 128, 1.5
    p = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    best = {}
    for m in (16, 20, 30, 40):
        best[m] = float(p[_expected_reward(p, m, n, tau).argmax()])
        assert 0.1 < best[m] < 0.45, (m, best[m])
    assert best[16] > best[20] > best[30] > best[40]  # more redundancy, lower optimum
    # Monte Carlo through the same reward at m = 20 agrees with the binomial sum
    u = torch.rand(200_000, 20) < 0.3
    kept = u.sum(1)
    mc = reward(kept > 0, kept / n, tau).double().mean()
    assert math.isclose(float(mc), float(_expected_reward(torch.tensor([0.3], dtype=torch.float64), 20, n, tau)), abs_tol=2e-3)
    # and the greedy policy at the default threshold (keep none of them) is far worse
    assert float(_expected_reward(torch.tensor([1e-9], dtype=torch.float64), 20, n, tau)) < 0


def test_figures_take_one_video_per_class_in_turn(tmp_path):
    from videored.commands.quickstart import one_per_class

    (tmp_path / "test.csv").write_text("a.mp4 0\nb.mp4 0\nc.mp4 0\nd.mp4 1\nbad line here x\ne.mp4 2\nf.mp4 1\n")
    names = lambda rows: [(p.rsplit("/", 1)[-1], label) for p, label in rows]  # noqa: E731
    assert names(one_per_class(tmp_path / "test.csv", 3)) == [("a.mp4", 0), ("d.mp4", 1), ("e.mp4", 2)]
    assert names(one_per_class(tmp_path / "test.csv", 5)) == [
        ("a.mp4", 0), ("d.mp4", 1), ("e.mp4", 2), ("b.mp4", 0), ("f.mp4", 1)]
    assert len(one_per_class(tmp_path / "test.csv", 99)) == 6  # every good row once


@pytest.mark.slow
def test_quickstart_peers_adds_spvit_and_svit_at_matched_ratio_and_cost(tmp_path):
    """--peers on the tiny settings: SPViT and SViT trained from the dense model (1 epoch each),
    their rows at the interpreter's kept ratio and at its GMACs (or their cheapest setting)."""
    out = tmp_path / "run"
    proc = run_cli(["quickstart", "--out", str(out), "--classes", str(CLASSES),
                    "--videos-per-class", str(VIDEOS_PER_CLASS), "--figures", "1", "--peers",
                    "schedule.supervised_epochs=1", "schedule.interpreter_epochs=1",
                    "schedule.finetune_epochs=1", "data.num_workers=0", "data.batch_size=4",
                    "model.kwargs={interpreter_init_keep: 0.25}", "run.progress=false"],
                   timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    interp = results["methods"]["interpreter"]
    rows = {f"{m} @ {k}" for m in ("spvit", "svit") for k in ("ratio", "gmacs")}
    assert set(results["methods"]) == METHODS | rows and set(results["peers"]) == rows
    table = (out / "results.md").read_text()
    assert all(f"| {row} |" in table for row in rows)
    assert "peers" in results["quickstart_seconds"]
    model_cfg = results["config"]["model"]
    n = model_cfg["num_frames"] * (model_cfg["img_size"] // 16) ** 2  # patch tokens
    for name in ("spvit", "svit"):
        saved = torch.load(out / "train" / name / "model.pt", map_location="cpu",
                           weights_only=True)
        assert any(k.startswith(f"pruners.{name}.") for k in saved["model"])
        at_ratio = results["methods"][f"{name} @ ratio"]
        at_cost = results["methods"][f"{name} @ gmacs"]
        assert results["peers"][f"{name} @ ratio"]["kept_ratio_budget"] == interp["kept_ratio"]
        assert abs(at_ratio["kept_ratio"] - interp["kept_ratio"]) <= 1.0 / n + 1e-9  # a token
        if results["peers"][f"{name} @ gmacs"]["kept_ratio_budget"] > 0:  # reachable: matched
            assert abs(at_cost["gflops"] - interp["gflops"]) <= 0.02 * interp["gflops"]
        else:  # the pruner's cheapest setting costs more than the interpreter
            assert at_cost["gflops"] > interp["gflops"]
        assert at_cost["interpretability"]["samples"] == results["num_videos"]

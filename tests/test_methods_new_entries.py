"""The method table's RLT, SPViT and SViT entries (issue #28) wired into the model: keep-all ==
dense, batched == one-by-one with unequal counts, the entry's decisions == the pure functions'
on the same clip, RLT's length embedding against a hand-written forward, and the clear errors
(image model for RLT, no trained pruners). Cost: tests/test_budget.py loops over every entry."""
from __future__ import annotations

import pytest
import torch

from videored.models import create_model
from videored.models import rlt
from videored.models.methods import METHODS, budget_kwargs, get_method, run_methods
from videored.models.tokens import full_token_set, gather_kept


def _video(pruners=("spvit", "svit"), **kw):
    torch.manual_seed(0)
    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=64, num_frames=4,
                         depth=4, num_classes=5, pruners=list(pruners), **kw)
    for p in model.pruners.parameters():  # decisions that differ from clip to clip
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.3)
    for selector in model.pruners["spvit"] if "spvit" in model.pruners else ():
        torch.nn.init.normal_(selector.out[-1].weight, std=1.0)  # keeps 48-64 of 64 per stage
    return model.eval()


def _clips(n: int = 4) -> torch.Tensor:
    """(n, 3, 4, 64, 64) clips with a static background and a moving square, unequal per clip:
    clip b's square is 16 * (b + 1) pixels wide, so RLT keeps a different count in each."""
    g = torch.Generator().manual_seed(3)
    background = torch.randn(n, 3, 1, 64, 64, generator=g).expand(n, 3, 4, 64, 64).clone()
    for b in range(n):
        w = min(16 * (b + 1), 48)
        for t in range(4):
            background[b, :, t, 16:16 + w, t * 4:t * 4 + w] += 2.0
    return background


NEW_BUDGETED = ("rlt", "spvit", "svit")
NATIVE = ("rlt_threshold", "spvit_native", "svit_native")


@pytest.mark.parametrize("method", NEW_BUDGETED)
def test_keep_all_equals_dense(method):
    model, x = _video(), _clips()
    with torch.no_grad():
        dense = model(x, selector="none").logits
        out = model(x, **budget_kwargs(model, method, kept_ratio=1.0))
    torch.testing.assert_close(out.logits, dense, rtol=0, atol=1e-5)
    assert out.kept_ratio.tolist() == [1.0] * len(x)


def test_rlt_threshold_below_every_difference_is_dense():
    model, x = _video(rlt_threshold=-1.0), _clips()
    with torch.no_grad():
        torch.testing.assert_close(model(x, selector="rlt_threshold").logits,
                                   model(x, selector="none").logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method,kwargs", [
    ("rlt_threshold", {}), ("spvit_native", {}), ("svit_native", {}),
    ("rlt", {"kept_ratio": torch.tensor([0.3, 0.55, 0.8, 0.4], dtype=torch.float64)}),
    ("spvit", {"kept_ratio": torch.tensor([0.3, 0.55, 0.8, 0.4], dtype=torch.float64)}),
    ("svit", {"kept_ratio": torch.tensor([0.3, 0.55, 0.8, 0.4], dtype=torch.float64)})])
def test_batched_equals_one_by_one_with_unequal_counts(method, kwargs):
    model, x = _video(), _clips()
    with torch.no_grad():
        batched = model(x, **budget_kwargs(model, method, **kwargs))
        counts = batched.keep[-1].sum(1)
        assert len(set(counts.tolist())) > 1, (method, counts.tolist())
        for b in range(len(x)):
            one_kwargs = {k: v[b:b + 1] for k, v in kwargs.items()}
            one = model(x[b:b + 1], **budget_kwargs(model, method, **one_kwargs))
            torch.testing.assert_close(batched.logits[b:b + 1], one.logits, rtol=0, atol=1e-5)
            torch.testing.assert_close(batched.gflops[b:b + 1], one.gflops)
            for s in range(len(one.keep)):
                assert torch.equal(batched.keep[s][b:b + 1], one.keep[s])


def test_rlt_entries_decide_as_the_pure_functions():
    """The table's rlt / rlt_threshold == rlt.py on the same clip's normalized pixels."""
    model, x = _video(), _clips()
    diff = rlt.patch_differences(x, 16)  # (B, 64)
    ratios = torch.tensor([0.2, 0.5, 0.7, 1.0], dtype=torch.float64)
    with torch.no_grad():
        budget = model(x, selector="rlt", setting=ratios)
        native = model(x, selector="rlt_threshold")
    assert torch.equal(budget.keep[0], rlt.keep_at_kept_ratio(diff, ratios, 16))
    assert torch.equal(native.keep[0], rlt.rlt_keep(diff, rlt.RLT_THRESHOLD))
    # the static background is dropped, the square's frames kept; frame 0 always (16 of 64)
    assert budget.keep[0].sum(1).tolist() == [16, 32, 45, 64]  # 0.2 * 64 < 16: frame-0 floor
    assert native.keep[0][:, :16].all()
    assert native.keep[0].sum(1).tolist() == sorted(native.keep[0].sum(1).tolist())


def test_length_embedding_against_a_hand_written_forward():
    """RLT's kept tokens get table[run length - 1] added; zero init changes nothing."""
    model, x = _video(length_embed=True), _clips(2)
    plain = _video()
    with torch.no_grad():
        torch.testing.assert_close(model(x, selector="rlt_threshold").logits,
                                   plain(x, selector="rlt_threshold").logits, rtol=0, atol=0)
        model.length_embed.table.normal_(generator=torch.Generator().manual_seed(5))
        out = model(x, selector="rlt_threshold")
        # by hand: keep by RLT's rule, run lengths in token order, gather, add, blocks, head
        keep = rlt.rlt_keep(rlt.patch_differences(x, 16), model.rlt_threshold)
        lengths = rlt.run_lengths(keep, model.grid)
        logits = []
        for b in range(len(x)):
            cls, patches = model.embed(x[b:b + 1])
            idx = keep[b].nonzero().squeeze(1)
            rows = patches[:, idx] + model.length_embed.table[lengths[b, idx] - 1]
            seq = torch.cat([cls, rows], dim=1)
            for blk in model.blocks:
                seq = blk(seq)
            logits.append(model.head(model.norm(seq)[:, 0]))
    torch.testing.assert_close(out.logits, torch.cat(logits), rtol=0, atol=1e-5)
    assert not torch.equal(out.logits, plain(x, selector="rlt_threshold").logits)


def test_clear_errors_image_model_and_missing_pruners():
    image = create_model("deit_tiny_patch16_224", img_size=32, depth=3, num_classes=3).eval()
    with pytest.raises(ValueError, match="rlt compares frames: it is video-only"):
        image(torch.randn(1, 3, 32, 32), selector="rlt", setting=0.5)
    bare = _video(pruners=())
    for name in ("spvit", "spvit_native", "svit", "svit_native"):
        weights = get_method(name).weights
        with pytest.raises(ValueError, match=f"trained {weights} selectors and this model has none"):
            bare(_clips(1), selector=name)
    with pytest.raises(ValueError, match="unknown pruners"):
        _video(pruners=("dynamicvit",))
    built = _video(pruners=(), selector="spvit_native")  # the selector builds its own
    assert list(built.pruners) == ["spvit"] and len(built.pruners["spvit"]) == 3  # blocks 1, 2, 3
    assert "pruners.spvit.0.in_proj.weight" in built.state_dict()


def test_matched_comparison_offers_the_new_methods():
    """run_methods (visualize, interpretability table) runs them at the interpreter's ratio."""
    torch.manual_seed(0)
    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=64, num_frames=4,
                         depth=4, num_classes=5, selector="interpreter",
                         pruners=["spvit", "svit"]).eval()
    for interp in model.interpreters:
        torch.nn.init.normal_(interp.query.weight, std=0.5)
    x = _clips()
    names = ["interpreter", *NEW_BUDGETED, *NATIVE]
    out = run_methods(model, x, names)
    ref = out["interpreter"].keep[-1].sum(1).float()
    for m in NEW_BUDGETED:
        kept = out[m].keep[-1].sum(1).float()
        floor = 16.0 if m == "rlt" else 1.0  # RLT keeps frame 0 (16 of 64 patches)
        assert (kept - torch.clamp(ref, min=floor)).abs().max() <= 1.0, (m, kept, ref)
    assert all(not METHODS[m].budgeted for m in NATIVE)


def test_eval_refuses_a_checkpoint_without_trained_pruners(tmp_path):
    from videored.engine.config import load_config
    from videored.engine.run_eval import load_for_eval
    from videored.models import save_model_file

    save_model_file(_video(pruners=()), tmp_path / "dense.pt")
    save_model_file(_video(pruners=("spvit",)), tmp_path / "pruned.pt")
    (tmp_path / "cfg.yaml").write_text("""
model: {name: timesformer_jointst_tiny_patch16_224, img_size: 64, num_frames: 4, depth: 4,
        num_classes: 5, kwargs: {pruners: [spvit]}}
data: {root: unused}
run: {device: cpu}
""")
    cfg = load_config(tmp_path / "cfg.yaml")
    with pytest.raises(ValueError, match="has no trained spvit selector weights"):
        load_for_eval(cfg, tmp_path / "dense.pt", need_interpreter=False)
    model = load_for_eval(load_config(tmp_path / "cfg.yaml"), tmp_path / "pruned.pt", False)
    torch.testing.assert_close(model.pruners["spvit"][0].in_proj.weight,
                               _video(pruners=("spvit",)).pruners["spvit"][0].in_proj.weight)


def test_bench_times_the_new_entries_where_the_model_can_run_them():
    """`videored bench --methods rlt,spvit,svit,spvit_native`: spvit / svit at each budget with
    untrained selectors (built for the request), rlt on the video model only, native entries
    (no budget) not timed; each row at its budget."""
    from videored.bench.speed import speed_table

    small = {"img_size": 64, "depth": 4, "num_classes": 3}
    methods = ["rlt", "spvit", "svit", "spvit_native"]
    video = speed_table("timesformer_jointst_tiny_patch16_224", kept_ratios=[0.5],
                        batch_sizes=[2], methods=methods, runs=1, warmup=0,
                        model_kwargs={**small, "num_frames": 4})
    image = speed_table("deit_tiny_patch16_224", kept_ratios=[0.5], batch_sizes=[2],
                        methods=methods, runs=1, warmup=0, model_kwargs={**small, "depth": 3})
    assert [r.method for r in video] == ["original", "rlt", "spvit", "svit"]
    assert [r.method for r in image] == ["original", "spvit", "svit"]
    for row in video[1:] + image[1:]:
        assert row.kept_ratio == pytest.approx(0.5, abs=1 / 16), row

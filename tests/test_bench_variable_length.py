"""Variable-length benchmark rows: per-clip kept ratios as asked, consistent columns (the
timings themselves are never asserted)."""
from __future__ import annotations

import pytest
import torch

from videored.bench.speed import _example_input
from videored.bench.variable_length import clip_ratios, per_clip_thresholds, variable_length_table
from videored.models import create_model


def test_clip_ratios_spread_evenly_around_the_mean():
    assert clip_ratios(0.5, 5, 0.5) == pytest.approx([0.25, 0.375, 0.5, 0.625, 0.75])
    assert sum(clip_ratios(0.3, 8, 0.5)) / 8 == pytest.approx(0.3)
    assert clip_ratios(0.4, 1, 0.5) == [0.4]


@pytest.mark.parametrize("name,groups", [("deit_tiny_patch16_224", 3),
                                         ("timesformer_jointst_tiny_patch16_224", 1)])
def test_per_clip_thresholds_keep_each_clips_ratio(name, groups):
    extra = dict(num_frames=2) if groups == 1 else {}
    model = create_model(name, selector="interpreter", img_size=128, depth=2 * groups,
                         groups=groups, **extra).eval()
    x = _example_input(model, 4, torch.device("cpu"))
    ratios = clip_ratios(0.5, 4, 0.5)
    for interpreter, t in zip(model.interpreters, per_clip_thresholds(model, x, ratios)):
        interpreter.threshold = t
    with torch.inference_mode():
        kept = model(x).kept_ratio
    n = model.num_patches
    # each group's quantile may miss by one token; D groups compound it
    assert kept.tolist() == pytest.approx(ratios, abs=(1 + 2 * groups) / n)


def test_variable_length_rows():
    rows = variable_length_table("deit_tiny_patch16_224", batch_size=4, keep_ratio=0.5,
                                 modes=("pad", "bucket", "packed", "jagged"), runs=1, warmup=0,
                                 model_kwargs=dict(img_size=128))
    assert [r["ragged"] for r in rows] == ["pad", "bucket", "packed", "jagged"]
    for r in rows:
        assert r["kept_min"] < r["kept_ratio"] < r["kept_max"]
        assert r["kept_ratio"] == pytest.approx(0.5, abs=0.06)
        assert r["random_kept_ratio"] == pytest.approx(0.5, abs=0.06)
        assert r["relative_to_random"] == pytest.approx(r["clips_per_s"] / r["random_clips_per_s"])
        assert 0.8 < r["flops_relative"] < 1.2
    assert len({r["flops_relative"] for r in rows}) == 1  # the same selection in every mode

"""The benchmark command runs and reports consistent columns (its timings are never asserted)."""
from __future__ import annotations

import json

import pytest

from videored.cli import main
from videored.models.flops import dense_vit_gmacs


def test_bench_cli_rows_and_flops_ratio(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "deit_tiny_patch16_224", "--batch-sizes", "1",
                 "--kept-ratios", "1.0,0.5", "--runs", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {(r["method"], r["target_kept_ratio"]): r for r in data["speed"]}
    assert set(rows) == {("original", 1.0), ("interpreter", 0.5), ("random", 0.5),
                         ("attention", 0.5), ("temporal_difference", 0.5), ("tome", 0.5),
                         ("evit", 0.5)}
    for r in data["speed"]:
        assert {"model", "method", "target_kept_ratio", "batch_size", "device", "dtype", "clips_per_s",
                "speedup", "flops_ratio", "peak_mem_mb"} <= set(r)
    dense = rows[("original", 1.0)]
    assert dense["gflops"] == pytest.approx(dense_vit_gmacs(num_patches=196, dim=192, depth=12,
                                                            num_classes=1000), rel=1e-5)
    # keep 0.5 overall = 3 selections of 0.5 ** (1/3) = 0.794: 196 -> 156 -> 124 -> 98
    assert rows[("random", 0.5)]["kept_ratio"] == pytest.approx(98 / 196)
    assert rows[("interpreter", 0.5)]["kept_ratio"] == pytest.approx(0.5, abs=0.03)
    # the in-block reducers take the kept ratio itself: 98 rows after the last ToMe merge;
    # EViT: 98 attentive (one fewer where an earlier fused token is among them) + the fused one
    assert rows[("tome", 0.5)]["kept_ratio"] == pytest.approx(98 / 196)
    assert rows[("evit", 0.5)]["kept_ratio"] in (pytest.approx(98 / 196), pytest.approx(97 / 196))
    for m in ("tome", "evit"):  # cost below dense, and the FLOPs ratio from the model's count
        assert 1.0 < rows[(m, 0.5)]["flops_ratio"] < dense["gflops"] / rows[("random", 0.5)]["gflops"]
    assert rows[("random", 0.5)]["flops_ratio"] == pytest.approx(dense["gflops"] / rows[("random", 0.5)]["gflops"])
    assert data["interpreter_cost"][0]["macs_fraction"] < 0.03
    assert data["dense_vs_timm"][0]["tokens"] == 197

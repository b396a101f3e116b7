"""Trade-off curves (`videored.curves`): points, Pareto front and winners against hand-made sets."""
import pytest

from videored.curves import curves_from_results, curves_markdown, pareto_front, winners


def _row(kept, gflops, err, cps=None):
    return {"kept_ratio": kept, "gflops": gflops, "video1_err": err, "clip1_err": err + 1,
            "clips_per_s": cps}


def test_pareto_front_hand_computed():
    pts = [{"name": n, "gflops": g, "video1_err": e} for n, g, e in [
        ("a", 1.0, 30.0), ("b", 2.0, 20.0), ("c", 2.5, 25.0),  # c: beaten by b (cheaper, lower)
        ("d", 3.0, 10.0), ("e", 3.0, 12.0),  # e: same cost as d, higher error
        ("f", 4.0, 10.0),  # f: same error as d at higher cost
        ("g", 0.5, 40.0), ("h", None, 0.0)]]  # h: no cost -> ignored
    assert [p["name"] for p in pareto_front(pts)] == ["g", "a", "b", "d"]


def test_pareto_front_on_throughput_maximizes_x():
    pts = [{"name": n, "clips_per_s": c, "video1_err": e} for n, c, e in [
        ("slow_good", 10.0, 5.0), ("fast_bad", 100.0, 30.0), ("mid", 50.0, 10.0),
        ("worse_mid", 40.0, 12.0)]]
    front = pareto_front(pts, x="clips_per_s", maximize_x=True)
    assert [p["name"] for p in front] == ["fast_bad", "mid", "slow_good"]


def test_duplicate_points_both_stay_on_the_front():
    pts = [{"gflops": 1.0, "video1_err": 5.0, "m": "x"}, {"gflops": 1.0, "video1_err": 5.0, "m": "y"}]
    assert len(pareto_front(pts)) == 2


def test_curves_from_results_sorted_dense_once_native_marked():
    per_budget = [
        (0.5, {"original": _row(1.0, 10.0, 5.0), "random": _row(0.5, 5.0, 20.0),
               "interpreter": _row(0.5, 5.2, 10.0)}),
        (0.2, {"original": _row(1.0, 10.0, 5.0), "random": _row(0.2, 2.0, 40.0),
               "interpreter": _row(0.2, 2.1, 30.0)}),
    ]
    curves = curves_from_results(per_budget, native={"interpreter": _row(0.31, 3.0, 12.0)})
    assert len(curves["original"]) == 1 and curves["original"][0]["budget"] is None
    assert [p["budget"] for p in curves["random"]] == [0.2, 0.5]  # ascending GFLOPs
    interp = curves["interpreter"]
    assert [p["gflops"] for p in interp] == [2.1, 3.0, 5.2]
    assert [p["native"] for p in interp] == [False, True, False]
    win = winners(curves)
    assert [(w["budget"], w["winner"], w["vs_random"]) for w in win] == [
        (0.2, "interpreter", -10.0), (0.5, "interpreter", -10.0)]
    md = curves_markdown(curves)
    assert "interpreter (threshold)" in md and "| 20 | interpreter | 30.0 | -10.0 |" in md


def test_winner_ties_break_by_name_and_without_random_difference_is_none():
    curves = {"b": [{"budget": 0.3, "video1_err": 1.0, "gflops": 1.0, "kept_ratio": 0.3}],
              "a": [{"budget": 0.3, "video1_err": 1.0, "gflops": 1.1, "kept_ratio": 0.3}]}
    (w,) = winners(curves)
    assert w["winner"] == "a" and w["vs_random"] is None


def test_tradeoff_figure_written(tmp_path):
    pytest.importorskip("matplotlib")
    from videored.viz.tradeoff import draw_tradeoff

    per_budget = [(r, {"original": _row(1.0, 10.0, 5.0, 100.0),
                       "random": _row(r, 10 * r, 40 - 30 * r, 100 / r),
                       "interpreter": _row(r, 10 * r + 0.1, 30 - 30 * r, 90 / r)})
                  for r in (0.2, 0.5, 0.8)]
    curves = curves_from_results(per_budget)
    files = draw_tradeoff(curves, tmp_path / "tradeoff", title="test")
    assert [f.suffix for f in files] == [".png", ".pdf"]
    assert all(f.stat().st_size > 1000 for f in files)
    # clips/s missing everywhere (--speed-runs 0): one panel only, still written
    for pts in curves.values():
        for p in pts:
            p["clips_per_s"] = None
    assert draw_tradeoff(curves, tmp_path / "t2", title="no speed")[0].is_file()

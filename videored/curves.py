"""Trade-off curves: every method across budgets, the Pareto front, and who wins where.

A curve point is one method evaluated at one budget on the same clips as every other point:

    {"kept_ratio", "gflops", "clips_per_s", "clip1_err", "video1_err", "budget", "native"}

`budget` is the requested kept ratio (the x of the sweep); `kept_ratio` / `gflops` are what the
method really reached on average (an in-block reducer lands near, not on, a requested ratio).
`native` marks the learned interpreter's own threshold point (not a top-k of its scores).

Pure functions only: `videored eval --kept-ratios` and `python -m slurm.submit collect` both
build `results.json["curves"]` with `curves_from_results`, so a one-process run and a sweep
collected from array tasks give the same curves, plot and table.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence

from videored.tables import markdown_table

POINT_KEYS = ("budget", "kept_ratio", "gflops", "clips_per_s", "clip1_err", "video1_err")
REFERENCE = "random"  # the method every selector should beat at equal cost (LITE, 2024)


def curve_point(row: dict[str, Any], budget: float | None, *, native: bool = False) -> dict:
    """One method's aggregated eval row (`engine.evaluation.aggregate` + clips_per_s) at one
    budget -> a curve point."""
    point = {k: row.get(k) for k in POINT_KEYS if k != "budget"}
    point["budget"] = budget
    point["native"] = native
    return point


def sort_curve(points: Iterable[dict]) -> list[dict]:
    """Points in ascending GFLOPs (ties: ascending kept ratio), the order a curve is drawn in."""
    return sorted(points, key=lambda p: (_num(p["gflops"]), _num(p["kept_ratio"])))


def curves_from_results(per_budget: Sequence[tuple[float | None, dict[str, dict]]],
                        native: dict[str, dict] | None = None) -> dict[str, list[dict]]:
    """{method: sorted points} from [(budget, {method: eval row}), ...].

    native: {method: row} of points evaluated at the method's own setting (the interpreter's
    threshold), added and marked `native`. The dense model (`original`) is one point whatever
    the budget: the first of its rows is kept."""
    curves: dict[str, list[dict]] = defaultdict(list)
    for budget, rows in per_budget:
        for method, row in rows.items():
            if method == "original":
                if not curves[method]:
                    curves[method].append(curve_point(row, None))
                continue
            curves[method].append(curve_point(row, budget))
    for method, row in (native or {}).items():
        curves[method].append(curve_point(row, None, native=True))
    return {m: sort_curve(points) for m, points in curves.items()}


def pareto_front(points: Sequence[dict], x: str = "gflops", y: str = "video1_err",
                 maximize_x: bool = False) -> list[dict]:
    """The points no other point beats on both axes (lower y, and lower x, or higher x when
    `maximize_x`, e.g. clips/s), sorted along x. A point equal to another on both axes stays.
    Points missing x or y are ignored."""
    usable = [p for p in points if p.get(x) is not None and p.get(y) is not None]
    sign = -1.0 if maximize_x else 1.0

    def dominates(a: dict, b: dict) -> bool:
        ax, bx = sign * a[x], sign * b[x]
        return ax <= bx and a[y] <= b[y] and (ax < bx or a[y] < b[y])

    front = [p for p in usable if not any(dominates(q, p) for q in usable)]
    return sorted(front, key=lambda p: (sign * p[x], p[y]))


def all_points(curves: dict[str, list[dict]]) -> list[dict]:
    """Every point of every curve, each tagged with its method."""
    return [{**p, "method": m} for m, points in curves.items() for p in points]


def winners(curves: dict[str, list[dict]], error: str = "video1_err") -> list[dict]:
    """For each budget: the method with the lowest error and its difference to `REFERENCE`
    (random) at that budget (negative = better than random). The dense model and native points
    are not budget points and are left out."""
    by_budget: dict[float, dict[str, dict]] = defaultdict(dict)
    for method, points in curves.items():
        for p in points:
            if p["budget"] is not None and not p.get("native") and p.get(error) is not None:
                by_budget[p["budget"]][method] = p
    rows = []
    for budget in sorted(by_budget):
        at = by_budget[budget]
        best = min(at, key=lambda m: (at[m][error], m))
        ref = at.get(REFERENCE)
        rows.append({"budget": budget, "winner": best, "error": at[best][error],
                     "vs_random": None if ref is None else at[best][error] - ref[error],
                     "gflops": at[best]["gflops"]})
    return rows


def curves_markdown(curves: dict[str, list[dict]], *, title: str = "") -> str:
    """The curve table (one row per point) and the per-budget winners, for results.md."""
    rows = []
    for method, points in curves.items():
        for p in points:
            kept = p.get("kept_ratio")
            rows.append({**p, "method": method + (" (threshold)" if p.get("native") else ""),
                         "budget_pct": None if p["budget"] is None else 100 * p["budget"],
                         "kept_pct": None if kept is None else 100 * kept})
    cols = [("method", "method", "s"), ("budget_pct", "budget kept %", ".0f"),
            ("kept_pct", "kept %", ".1f"), ("gflops", "GFLOPs", ".3f"),
            ("clips_per_s", "clips/s", ".1f"), ("clip1_err", "clip-1 err", ".1f"),
            ("video1_err", "video-1 err", ".1f")]
    win = [{**w, "budget_pct": 100 * w["budget"]} for w in winners(curves)]
    win_cols = [("budget_pct", "budget kept %", ".0f"), ("winner", "lowest video-1 err", "s"),
                ("error", "its err", ".1f"), ("vs_random", f"minus {REFERENCE}'s err", "+.1f"),
                ("gflops", "its GFLOPs", ".3f")]
    lines = [title, ""] if title else []
    lines += ["### Trade-off curves", "", markdown_table(rows, cols), "",
              f"### Who wins at each budget (a negative difference beats {REFERENCE})", "",
              markdown_table(win, win_cols), ""]
    return "\n".join(lines)


def matching_rule(match: str) -> str:
    """How a curve's baselines meet each budget, in words (figure title, results.md)."""
    if match == "ratio":
        return "every method at the budget's kept ratio"
    return "baselines at the interpreter top-k's GMACs, clip by clip"


def curve_title(summary: dict[str, Any]) -> str:
    """A curve run's model, data split and matching rule (the trade-off figure's title), from
    results.json's keys "model", "data", "split", "num_videos", "match"."""
    data = str(summary.get("data") or "").rstrip("/").rpartition("/")[2]
    return (f"{summary.get('model', '?')} | {summary['split']} split{' of ' + data if data else ''}"
            f" ({summary['num_videos']} videos) | {matching_rule(summary['match'])}")


def _num(value: float | None) -> float:
    return float("inf") if value is None else float(value)


__all__ = ["POINT_KEYS", "REFERENCE", "all_points", "curve_point", "curve_title",
           "curves_from_results", "curves_markdown", "matching_rule", "pareto_front", "sort_curve",
           "winners"]

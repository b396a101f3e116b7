"""The trade-off figures: video-1 error against GFLOPs and against clips/s, one line per method
(`draw_tradeoff`), and the benchmark's realized speed-up against its FLOPs ratio (`draw_speedup`).

Drawn from `results.json["curves"]` (`videored.curves`): each method's points joined in order of
cost, the dense model as a single star, the interpreter's own threshold point as a hollow marker,
and the Pareto front over every point as a thick grey step line under the curves (the cheapest
error reachable at each cost by any method). One column wide (3.4 in per panel) so it drops into a
paper as it is; written as PNG and PDF. Matplotlib through `Figure` + Agg: no pyplot state.
"""
from __future__ import annotations

from pathlib import Path

from videored.curves import all_points, curve_title, pareto_front

# Fixed colours per method so a method looks the same in every figure of a paper.
COLOURS = {"interpreter": "#d62728", "random": "#7f7f7f", "attention": "#1f77b4",
           "temporal_difference": "#2ca02c", "tome": "#9467bd", "evit": "#ff7f0e",
           "rlt": "#17becf", "spvit": "#8c564b", "svit": "#e377c2", "original": "#000000"}
MARKERS = "osD^v<>ph*"

PANELS = (("gflops", "GFLOPs per clip (GMACs)", False),
          ("clips_per_s", "throughput (clips/s)", True))


def draw_tradeoff(curves: dict[str, list[dict]], path: str | Path, *, title: str,
                  error: str = "video1_err") -> list[Path]:
    """Save `path` with .png and .pdf suffixes; returns the written files. A panel whose x is
    missing for every point (clips/s with --speed-runs 0) is left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = all_points(curves)
    panels = [p for p in PANELS if any(q.get(p[0]) is not None for q in points)]
    fig = Figure(figsize=(3.4 * len(panels), 3.0), dpi=200, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (x, label, maximize) in zip(axes, panels):
        # The front is sorted from the cheapest (or fastest) point on; "post" holds each point's
        # error until the next point: the best error reachable at that cost or speed.
        front = pareto_front(points, x=x, y=error, maximize_x=maximize)
        if len(front) > 1:
            ax.step([p[x] for p in front], [p[error] for p in front],
                    where="post", color="#bbbbbb", lw=5,
                    alpha=0.6, zorder=1, label="Pareto front")
        for i, (method, curve) in enumerate(curves.items()):
            colour = COLOURS.get(method, f"C{i % 10}")
            marker = MARKERS[i % len(MARKERS)]
            budget = [p for p in curve if not p.get("native")
                      and p.get(x) is not None and p.get(error) is not None]
            if method == "original":
                for p in budget:
                    ax.plot(p[x], p[error], marker="*", ms=10, color=colour, ls="none",
                            zorder=4, label="dense")
                continue
            if budget:
                ax.plot([p[x] for p in budget], [p[error] for p in budget], marker=marker,
                        ms=4, lw=1.2, color=colour, zorder=3, label=method)
            for p in curve:
                if p.get("native") and p.get(x) is not None and p.get(error) is not None:
                    ax.plot(p[x], p[error], marker=marker, ms=8, mfc="none", mew=1.5,
                            color=colour, ls="none", zorder=4, label=f"{method} (threshold)")
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("video-1 error (%)" if error == "video1_err" else error, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, lw=0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=6,
               frameon=False)
    fig.suptitle(title, fontsize=7)
    return _save(fig, path)


def draw_speedup(rows: list[dict], path: str | Path, *, title: str) -> list[Path]:
    """`videored bench --plot`: realized speed-up (clips/s over the dense model's, same model,
    batch and run) against the analytic FLOPs ratio (dense GMACs / the row's GMACs) for every
    speed row, with the line y = x: the speed-up the FLOPs promise, which a row reaches only when
    time falls with MACs (points below it lose time to overheads: gather, top-k, small matmuls).
    Colour per method, marker per model, the batch size written beside each point. Saves `path`
    with .png and .pdf suffixes; returns the written files."""
    return _save(speedup_figure(rows, title=title), path)


def speedup_figure(rows: list[dict], *, title: str):
    """The `draw_speedup` figure (a matplotlib Figure, not saved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    usable = [r for r in rows if r.get("speedup") is not None and r.get("flops_ratio") is not None]
    if not usable:
        raise ValueError("no speed rows with a speed-up and a FLOPs ratio to plot")
    fig = Figure(figsize=(3.4, 3.0), dpi=200, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    top = max(max(r["flops_ratio"], r["speedup"]) for r in usable) * 1.08
    ax.plot([0, top], [0, top], color="#888888", lw=1, ls="--", zorder=1,
            label="y = x (FLOPs limit)")
    methods = list(dict.fromkeys(r["method"] for r in usable))
    models = list(dict.fromkeys(r["model"] for r in usable))
    for i, method in enumerate(methods):
        for j, model in enumerate(models):
            pts = [r for r in usable if r["method"] == method and r["model"] == model]
            if not pts:
                continue
            ax.plot([r["flops_ratio"] for r in pts], [r["speedup"] for r in pts], ls="none",
                    marker=MARKERS[j % len(MARKERS)], ms=4, color=COLOURS.get(method, f"C{i % 10}"),
                    zorder=3, label=method if len(models) == 1 else f"{method}, {model}")
            for r in pts:
                ax.annotate(f"b{r['batch_size']}", (r["flops_ratio"], r["speedup"]), fontsize=4,
                            xytext=(2, 2), textcoords="offset points", color="#555555")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("FLOPs ratio (dense GMACs / GMACs)", fontsize=8)
    ax.set_ylabel("realized speed-up (clips/s vs dense)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(fontsize=5, frameon=False, loc="upper left")
    fig.suptitle(title, fontsize=7)
    return fig


def _save(fig, path: str | Path) -> list[Path]:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        target = out.with_suffix(suffix)
        fig.savefig(target)
        written.append(target)
    return written


def write_tradeoff(summary: dict, out_dir: str | Path) -> list[Path]:
    """`tradeoff.png` + `.pdf` in out_dir from a curve run's results.json (`summary["curves"]`),
    titled with its model, data split and matching rule; returns the written files."""
    return draw_tradeoff(summary["curves"], Path(out_dir) / "tradeoff", title=curve_title(summary))


__all__ = ["COLOURS", "draw_speedup", "draw_tradeoff", "speedup_figure", "write_tradeoff"]

"""Submit `videored train|eval` (or a sweep of them) through submitit.

    python -m slurm.submit train --config C --job-dir DIR --nodes 2 --gpus-per-node 8 \\
        --partition P --timeout 4320 [--account A --qos Q --constraint K --mem 64G --cpus-per-task 10] \\
        [key=value ...]
    python -m slurm.submit eval --config C --checkpoint DIR/model.pt --job-dir DIR/eval [...]
    python -m slurm.submit sweep --grid reinforce.tau=0.5,1.0 model.threshold=0.4,0.5 \\
        --config C --job-dir DIR [--command train|eval] [--wait]
    python -m slurm.submit sweep --command eval --grid eval.kept_ratios=0.1,0.2,0.3,0.5 \
        --checkpoint model.pt --job-dir DIR      # trade-off curves, one budget per array task
    python -m slurm.submit collect --job-dir DIR

Launcher flags are parsed here; every other argument (--config, --checkpoint, --methods,
dotted overrides, ...) is handed to `videored <command>` unchanged, with `--out <job-dir>` added.
A grid key `<command>.<flag>` (e.g. `eval.kept_ratios`) sets that flag of the command
(`--kept-ratios V`) instead of a config key.
`--cluster local` runs the same job as local processes, `debug` in this process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import submitit

from .collect import collect, collect_curves, write_curves, write_summary
from videored.launch import VideoredJob
from .queue import wait_for_jobs

SWEEP_MANIFEST = "sweep.json"

PASS_THROUGH = """\
Every argument not listed above is handed to `videored {command}` unchanged (checked with its
own parser before anything is submitted), with `--out <job-dir>` added: e.g. --config C,
--checkpoint F, --dense-checkpoint F, --methods a,b, dotted overrides key=value. See
`videored {command} --help`. {requeue}"""
REQUEUE = {
    "train": "A job stopped by preemption or --timeout is requeued and continues from its newest "
             "checkpoint (--resume auto), up to --max-timeouts times.",
    "eval": "Evaluation keeps no state: a job stopped by --timeout starts again from the first "
            "video, so give it a --timeout that covers the whole evaluation.",
}


def default_cluster() -> str:
    """slurm where `sbatch` is on PATH, else local processes."""
    return "slurm" if shutil.which("sbatch") else "local"


def resolve_cluster(requested: Optional[str]) -> str:
    """The cluster to submit to: `--cluster slurm` without `sbatch` is an error; with no
    --cluster, the fallback to local processes is said on stderr."""
    if requested == "slurm" and not shutil.which("sbatch"):
        raise ValueError("--cluster slurm: `sbatch` is not on PATH (is this a SLURM login node? "
                         "is the slurm module loaded?); use --cluster local to run here")
    if requested is None and default_cluster() == "local":
        print("python -m slurm.submit: no `sbatch` on PATH: running as local processes on this "
              "machine (--cluster local); pass --cluster slurm to insist on SLURM",
              file=sys.stderr, flush=True)
    return requested or default_cluster()


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown after each flag's help (not for flags without one), epilogs kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def parse_mem(text: str) -> float:
    """`--mem` in GB: "64", "64G", "64GB" -> 64.0; "500M" -> 0.48828125; "1T" -> 1024.0."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}
    try:
        if t and t[-1] in scale:
            return float(t[:-1]) * scale[t[-1]]
        return float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mem {text!r}: expected e.g. 64G, 500M or a number of GB") from None


def split_values(text: str) -> list[str]:
    """Split "a,b,[1,2]" on top-level commas -> ["a", "b", "[1,2]"] (brackets keep lists whole)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """["reinforce.tau=0.5,1.0", "model.threshold=0.4,0.5,0.6"] -> {key: [values]} (order kept)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid {item!r}: expected dotted.key=v1,v2,...")
        if key in grid:
            raise ValueError(f"--grid: key {key!r} given twice")
        vals = [v.strip() for v in split_values(values)]
        if any(v == "" for v in vals):
            raise ValueError(f"--grid {item!r}: empty value")
        grid[key] = vals
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Cartesian product, last key varying fastest: [{key: value, ...}, ...]."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _add_resource_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("resources (submitit / sbatch)")
    g.add_argument("--job-dir", required=True, type=Path,
                   help="run directory (videored --out) and home of the submitit logs")
    g.add_argument("--cluster", choices=("slurm", "local", "debug"), default=None,
                   help="default: slurm when sbatch is on PATH, else local processes (said on "
                        "stderr); slurm without sbatch is an error; debug: in this process")
    g.add_argument("--job-name", default=None, help="default: videored-<command>")
    g.add_argument("--nodes", type=int, default=1, help="nodes (SLURM --nodes)")
    g.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node; 0: CPU tasks")
    g.add_argument("--tasks-per-node", type=int, default=None,
                   help="processes per node (default: one per GPU, or 1 on CPU)")
    g.add_argument("--cpus-per-task", type=int, default=None,
                   help="CPUs per process (default: the cluster's, often 1): give it data.num_workers "
                        "+ 1 or the loader starves; also sets OMP_NUM_THREADS")
    g.add_argument("--mem", type=parse_mem, default=None,
                   help="memory per node, e.g. 64G (default: the cluster's)")
    g.add_argument("--timeout", type=int, default=60,
                   help="minutes (SLURM --time) each run of the job may take; after it the job is "
                        "requeued (train resumes, eval starts over)")
    g.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    g.add_argument("--account", default=None, help="SLURM account")
    g.add_argument("--qos", default=None, help="SLURM QOS")
    g.add_argument("--constraint", default=None, help="SLURM node constraint, e.g. volta32gb")
    g.add_argument("--signal-delay", type=int, default=120,
                   help="seconds between SLURM's USR2 warning and the kill at timeout")
    g.add_argument("--max-timeouts", type=int, default=10,
                   help="times a job may be requeued after timing out (preemptions do not count)")
    g.add_argument("--wait", action="store_true",
                   help="wait for the job(s) to finish (always on for local and debug)")


def _epilog(command: str, requeue: str) -> str:
    return "\n\n".join(textwrap.fill(" ".join(part.split()), 88)
                        for part in (PASS_THROUGH.format(command=command, requeue=""), requeue))


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a forwarded videored flag must never be taken for a prefix of ours.
    parser = argparse.ArgumentParser(prog="python -m slurm.submit", description=__doc__,
                                     allow_abbrev=False, formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("train", "submit `videored train`"), ("eval", "submit `videored eval`")):
        _add_resource_flags(sub.add_parser(
            name, help=text, description=text, allow_abbrev=False, formatter_class=_HelpFormatter,
            epilog=_epilog(name, REQUEUE[name])))
    sweep = sub.add_parser("sweep", help="job array over a grid of config overrides", allow_abbrev=False,
                           formatter_class=_HelpFormatter,
                           epilog=_epilog("train|eval (--command)", " ".join(REQUEUE.values())))
    _add_resource_flags(sweep)
    sweep.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                       help="one axis per KEY; every combination is one array task")
    sweep.add_argument("--command", choices=("train", "eval"), default="train",
                       help="the videored command every array task runs")
    sweep.add_argument("--array-parallelism", type=int, default=256,
                       help="array tasks allowed to run at once")
    col = sub.add_parser("collect", help="summary table of a sweep", allow_abbrev=False,
                         formatter_class=_HelpFormatter)
    col.add_argument("--job-dir", required=True, type=Path, help="the sweep's --job-dir")
    return parser


def build_executor(args: argparse.Namespace, folder: Path, command: str) -> submitit.AutoExecutor:
    cluster = resolve_cluster(args.cluster)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                     slurm_max_num_timeout=args.max_timeouts)
    tasks = args.tasks_per_node or max(args.gpus_per_node, 1)
    params = dict(name=args.job_name or f"videored-{command}", timeout_min=args.timeout,
                  nodes=args.nodes, tasks_per_node=tasks, slurm_signal_delay_s=args.signal_delay)
    if args.gpus_per_node > 0:  # a GPU-less cluster may reject even --gpus-per-node=0
        params["gpus_per_node"] = args.gpus_per_node
    if args.cpus_per_task is not None:
        params["cpus_per_task"] = args.cpus_per_task
    if args.mem is not None:
        params["mem_gb"] = args.mem
    for flag in ("partition", "account", "qos", "constraint"):
        if getattr(args, flag) is not None:
            params[f"slurm_{flag}"] = getattr(args, flag)
    if getattr(args, "array_parallelism", None):
        params["slurm_array_parallelism"] = args.array_parallelism
    executor.update_parameters(**params)
    return executor


def check_videored_args(argv: list[str]) -> None:
    """Parse the forwarded arguments with videored's own parser now, not on the cluster later."""
    from videored.cli import build_parser as videored_parser

    videored_parser(argv).parse_args(argv)


def _make_importable() -> None:
    # The job unpickles `videored.launch.VideoredJob` (installed) and the launcher itself lives in
    # this checkout: put it on the PYTHONPATH that sbatch and local processes inherit, whatever
    # directory the job starts in.
    root = str(Path(__file__).resolve().parent.parent)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *parts])


def _job_argv(command: str, forwarded: list[str], out: Path) -> list[str]:
    if any(a == "--out" or a.startswith("--out=") for a in forwarded):
        raise ValueError("do not pass --out: the run directory is --job-dir")
    return [command, *forwarded, "--out", str(out)]


def grid_argv(command: str, point: dict[str, str]) -> list[str]:
    """A grid point as arguments of `videored <command>`: `<command>.<name>=v` -> `--<name> v`
    (a flag of the command, e.g. eval.kept_ratios=0.3 -> --kept-ratios 0.3), any other key a
    config override `key=v` (last on the line: they win)."""
    flags, overrides = [], []
    for key, value in point.items():
        if key.startswith(command + "."):
            flags += ["--" + key[len(command) + 1:].replace("_", "-"), value]
        else:
            overrides.append(f"{key}={value}")
    return flags + overrides


def _threads(args: argparse.Namespace) -> int:
    return args.cpus_per_task or 1


def submit_one(args: argparse.Namespace, forwarded: list[str]) -> int:
    out = args.job_dir.resolve()
    argv = _job_argv(args.action, forwarded, out)
    check_videored_args(argv)
    _make_importable()
    executor = build_executor(args, out / "submitit", args.action)
    job = executor.submit(VideoredJob(argv, threads=_threads(args)))
    print(f"submitted {executor.cluster} job {job.job_id}: videored {' '.join(argv)}")
    print(f"logs: {job.paths.stdout}")
    if args.wait or executor.cluster != "slurm":
        return 1 if wait_for_jobs([job], slurm=executor.cluster == "slurm") else 0
    return 0


def submit_sweep(args: argparse.Namespace, forwarded: list[str]) -> int:
    grid = parse_grid(args.grid)
    points = grid_points(grid)
    root = args.job_dir.resolve()
    jobs_argv = []
    for i, point in enumerate(points):
        argv = _job_argv(args.command, forwarded + grid_argv(args.command, point),
                         root / f"p{i:03d}")
        check_videored_args(argv)
        jobs_argv.append(argv)
    _make_importable()
    root.mkdir(parents=True, exist_ok=True)
    executor = build_executor(args, root / "submitit", f"{args.command}-sweep")
    jobs = executor.submit_array([VideoredJob(a, threads=_threads(args)) for a in jobs_argv])
    manifest = {
        "command": args.command,
        "cluster": executor.cluster,
        "grid": grid,
        "submitit_folder": str(root / "submitit"),
        "points": [{"name": f"p{i:03d}", "overrides": point, "run_dir": str(root / f"p{i:03d}"),
                    "job_id": job.job_id, "argv": argv}
                   for i, (point, job, argv) in enumerate(zip(points, jobs, jobs_argv))],
    }
    (root / SWEEP_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    print(f"submitted {len(jobs)} {executor.cluster} array task(s): "
          + ", ".join(str(j.job_id) for j in jobs))
    if args.wait or executor.cluster != "slurm":
        status = 1 if wait_for_jobs(jobs, slurm=executor.cluster == "slurm") else 0
        rows = collect(root)
        md, js = write_summary(root, rows)
        print(f"summary: {md} ({js})")
        _write_curves(root)
        return status
    print(f"when done: python -m slurm.submit collect --job-dir {root}")
    return 0


def _write_curves(job_dir: Path) -> None:
    """An eval sweep over budgets: the same curves, table and figure as one `--kept-ratios` run."""
    summary = collect_curves(job_dir)
    if summary is not None:
        written = write_curves(job_dir, summary)
        print(f"trade-off curves: {', '.join(str(p) for p in written)}")


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, forwarded = parser.parse_known_args(argv)
    if args.action == "collect":
        if forwarded:
            parser.error(f"collect: unexpected arguments {forwarded}")
        rows = collect(args.job_dir)
        md, js = write_summary(args.job_dir, rows)
        print(md.read_text(encoding="utf-8"))
        _write_curves(args.job_dir)
        return 0 if all(r["status"] == "ok" for r in rows) else 1
    try:
        if args.action == "sweep":
            return submit_sweep(args, forwarded)
        return submit_one(args, forwarded)
    except ValueError as err:
        parser.error(str(err))
    return 2


if __name__ == "__main__":
    sys.exit(main())

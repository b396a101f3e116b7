"""`videored quickstart`: the whole pipeline on one CPU machine, in minutes, on real videos.

    videored quickstart --out runs/quickstart

1. writes the synthetic video dataset (H.264 mp4 + per-frame object masks);
2. trains a small JointST TimeSformer densely (one `videored train` job, OUT/train/dense), then
   the IA-RED² interpreter stage (REINFORCE) and the finetune stage from it (OUT/train/iared2);
3. evaluates original / interpreter / random / attention / temporal_difference / tome / evit /
   rlt (`QUICKSTART_METHODS`) with clip-1 and
   three-crop video-1 inference, plus the interpretability metric against the object masks:
   one `videored eval` job; `original` and the baselines use the dense weights, the
   interpreter the IA-RED² ones (paper Table 4);
4. draws per-frame redundancy figures for a few test videos;
5. with --peers: trains SPViT and SViT through their recipes from the dense model
   (configs/quickstart/jointst_tiny_synth_{spvit,svit}.yaml, OUT/train/{spvit,svit}) and evaluates
   each at the interpreter's mean kept ratio (matched ratio) and at the kept ratio whose predicted
   GMACs equal the interpreter's mean GMACs (matched cost, `budget.setting_for_gmacs`); their rows
   join results.json / results.md as "spvit @ ratio", "spvit @ gmacs", ... (OUT/peers/ holds the
   four evals).
Training and evaluation go through submitit's local executor with the same job class the SLURM launcher
submits (`videored.launch.VideoredJob`); their logs are streamed here and kept in OUT/logs.
Leaves OUT/results.json, OUT/results.md, OUT/figures/, OUT/logs/ and OUT/model.pt.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = Path("quickstart/jointst_tiny_synth.yaml")  # packaged: videored/configs/
# The comparison: every method any model runs, plus RLT (training-free, video: at the
# interpreter's kept ratio, clip by clip). SPViT and SViT need their own training jobs: only
# with --peers (PEERS; docs/models.md "RLT, SPViT and SViT").
QUICKSTART_METHODS = ("original", "interpreter", "random", "attention", "temporal_difference",
                      "tome", "evit", "rlt")
PEERS = ("spvit", "svit")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="training config (default: configs/quickstart/jointst_tiny_synth.yaml)")
    p.add_argument("--classes", type=int, default=4,
                   help="object colours (2..6); a no_object class is added unless --skip-no-object-class")
    # 60 x 5 = 300 training videos: enough for a dense val accuracy of 1.0 after 3 epochs and
    # for 37 REINFORCE steps per interpreter epoch, within the 15-minute budget on 2 cores.
    p.add_argument("--videos-per-class", type=int, default=60, help="training videos per class")
    p.add_argument("--skip-no-object-class", action="store_true",
                   help="colour classes only, no 'no_object' class: the classifier's default answer "
                        "then makes one colour's object redundant (see docs/visualization.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figures", type=int, default=5,
                   help="test videos to draw, one per class in turn (default: every class once)")
    p.add_argument("--peers", action="store_true",
                   help="also train SPViT and SViT from the dense model and add their rows at the "
                        "interpreter's kept ratio and at its GMACs (about +2.5 min on 2 cores)")
    p.add_argument("--cluster", default="local", choices=["local", "debug"],
                   help="submitit executor: local processes (default) or this process")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="training config overrides, e.g. schedule.supervised_epochs=2")


def main(args: argparse.Namespace) -> int:
    from videored.data.csv_list import read_dataset_info
    from videored.data.synthetic import write_synthetic_dataset
    from videored.engine.config import ConfigError, resolve_config_path
    from videored.launch import run_local_job

    try:
        args.config = resolve_config_path(args.config).resolve()
    except ConfigError as err:
        print(f"videored quickstart: {err}", file=sys.stderr)
        return 2
    peer_configs = {name: args.config.with_name(f"{args.config.stem}_{name}.yaml")
                    for name in PEERS}
    missing = [str(c) for c in peer_configs.values() if not c.is_file()]
    if args.peers and missing:
        print(f"videored quickstart: --peers needs the peers' training configs next to "
              f"{args.config}: {', '.join(missing)} not found", file=sys.stderr)
        return 2
    out = args.out.resolve()
    data, train_dir, logs = out / "data", out / "train", out / "logs"
    times: dict[str, float] = {}
    steps = 5 if args.peers else 4
    start = time.perf_counter()

    def step(name: str) -> None:
        times[name] = round(time.perf_counter() - start - sum(times.values()), 1)
        print(f"[quickstart] {name} done in {times[name]:.0f} s", flush=True)

    print(f"[quickstart] 1/{steps} synthetic videos -> {data}", flush=True)
    if (data / "test.csv").is_file():
        print("[quickstart] dataset already there, reusing it", flush=True)
    else:
        write_synthetic_dataset(data, num_classes=args.classes,
                                videos_per_class=args.videos_per_class, seed=args.seed,
                                no_object_class=not args.skip_no_object_class)
    step("data")

    num_labels = read_dataset_info(data / "train.csv")["num_classes"]  # + no_object, if written
    overrides = [f"data.root={data}", f"model.num_classes={num_labels}",
                 f"run.seed={args.seed}", *args.overrides]
    # Two jobs: the dense model (kept: it is the "original" of the table and the baselines'
    # weights, as in paper Table 4), then Algorithm 1 starting from it.
    dense_dir, iared2_dir = train_dir / "dense", train_dir / "iared2"
    print(f"[quickstart] 2/{steps} training: dense (supervised), then interpreter (REINFORCE) -> "
          "finetune", flush=True)
    run_local_job(["train", "--config", str(args.config), "--out", str(dense_dir),
                   "--resume", "auto", *overrides, "schedule.stages=[supervised]"], logs,
                  cluster=args.cluster)
    run_local_job(["train", "--config", str(args.config), "--out", str(iared2_dir),
                   "--resume", "auto", *overrides, "schedule.stages=[interpreter,finetune]",
                   f"model.pretrained_path={dense_dir / 'model.pt'}"], logs, cluster=args.cluster)
    step("train")

    model_file = out / "model.pt"
    tmp = model_file.with_name("model.pt.tmp")
    shutil.copyfile(iared2_dir / "model.pt", tmp)
    os.replace(tmp, model_file)
    print(f"[quickstart] 3/{steps} evaluation: {len(QUICKSTART_METHODS)} methods, clip-1 / "
          "video-1, interpretability", flush=True)
    run_local_job(["eval", "--checkpoint", str(model_file), "--out", str(out),
                   "--methods", ",".join(QUICKSTART_METHODS),
                   "--dense-checkpoint", str(dense_dir / "model.pt"),
                   "--interpretability", f"data.root={data}", "data.num_workers=1"], logs,
                  cluster=args.cluster)
    step("eval")

    print(f"[quickstart] 4/{steps} figures -> {out / 'figures'}", flush=True)
    from videored.cli import main as cli
    from videored.data.csv_list import write_video_list

    figure_list = out / "figures" / "videos.csv"
    figure_list.parent.mkdir(parents=True, exist_ok=True)
    write_video_list(figure_list, one_per_class(data / "test.csv", args.figures))
    cli(["visualize", "--checkpoint", str(model_file), "--csv", str(figure_list),
         "-o", str(out / "figures"), "--method", "all"])
    step("figures")

    results = json.loads((out / "results.json").read_text())
    if args.peers:
        print(f"[quickstart] 5/{steps} peers: {', '.join(PEERS)} from the dense model, at the "
              "interpreter's kept ratio and GMACs", flush=True)
        for name in PEERS:
            peer_dir = train_dir / name
            run_local_job(["train", "--config", str(peer_configs[name]),
                           "--out", str(peer_dir), "--resume", "auto", *overrides,
                           f"model.pretrained_path={dense_dir / 'model.pt'}"], logs,
                          cluster=args.cluster)
            for match, ratio in peer_budgets(results, name, peer_dir / "model.pt").items():
                peer_out = out / "peers" / f"{name}_{match}"
                run_local_job(["eval", "--checkpoint", str(peer_dir / "model.pt"),
                               "--out", str(peer_out), "--methods", name,
                               "--kept-ratio", repr(ratio), "--interpretability",
                               f"data.root={data}", "data.num_workers=1"], logs,
                              cluster=args.cluster)
                add_peer_row(results, name, match, ratio,
                             json.loads((peer_out / "results.json").read_text()))
        step("peers")
    results["quickstart_seconds"] = {**times, "total": round(time.perf_counter() - start, 1)}
    from videored.engine.run_eval import write_reports

    write_reports(results, out)  # results.md re-rendered: the peers' rows join the table
    print("\n" + (out / "results.md").read_text())
    for line in method_checks(results):
        print(line)
    print(f"\n[quickstart] total {results['quickstart_seconds']['total'] / 60:.1f} min; "
          f"everything is in {out}")
    return 0


def peer_budgets(results: dict, name: str, checkpoint: Path) -> dict[str, float]:
    """The kept ratios a trained peer (spvit / svit) runs at: "ratio" = the interpreter's mean
    kept ratio; "gmacs" = the ratio whose predicted GMACs (the method's cost formula on this
    model, no forward) come closest to the interpreter's mean GMACs; where even kept ratio 0
    costs more (the blocks before a peer's first stage run every token), that is ratio 0, the
    peer's cheapest setting, and its row shows the GFLOPs it really costs."""
    import torch

    from videored.models import load_model_file
    from videored.models.budget import setting_for_gmacs
    from videored.models.methods import get_method

    interpreter = results["methods"]["interpreter"]
    model = load_model_file(checkpoint)
    target = torch.tensor([float(interpreter["gflops"])], dtype=torch.float64)
    at_cost = float(setting_for_gmacs(model, get_method(name), target)[0])
    return {"ratio": float(interpreter["kept_ratio"]), "gmacs": at_cost}


def add_peer_row(results: dict, name: str, match: str, ratio: float, peer: dict) -> str:
    """Put peer eval `peer` (its results.json: one method, `name`, at a fixed kept ratio) into
    the quickstart's results as the row "<name> @ <match>"; returns the row's name."""
    row = f"{name} @ {match}"
    results["methods"][row] = {**peer["methods"][name], "budget_kept_ratio": ratio}
    if name in peer.get("interpretability", {}):
        results.setdefault("interpretability", {})[row] = peer["interpretability"][name]
    results.setdefault("peers", {})[row] = {
        "method": name, "match": match, "kept_ratio_budget": ratio,
        "interpreter_kept_ratio": results["methods"]["interpreter"]["kept_ratio"],
        "interpreter_gflops": results["methods"]["interpreter"]["gflops"]}
    return row


def one_per_class(csv_path: Path, count: int) -> list[tuple[str, int]]:
    """`count` (path, label) rows of a list, taking each class in turn (first videos first)."""
    from itertools import islice, zip_longest

    from videored.data.csv_list import iter_video_list

    by_class: dict[int, list[tuple[str, int]]] = {}
    for row in iter_video_list(csv_path):
        if row.error is None:
            by_class.setdefault(row.label, []).append((row.path, row.label))
    rounds = zip_longest(*(by_class[label] for label in sorted(by_class)))  # one video per class each
    return list(islice((row for batch in rounds for row in batch if row is not None), count))


def method_checks(results: dict) -> list[str]:
    """The quickstart's claims about the method, checked on this run's numbers."""
    m = results["methods"]
    o, i, r = m["original"], m["interpreter"], m["random"]
    speedup = i["clips_per_s"] / o["clips_per_s"] if o.get("clips_per_s") else float("nan")
    miou = {k: v.get("interpretability", {}).get("miou") for k, v in m.items()}
    checks = [
        (f"dense video-1 error {o['video1_err']:.1f} <= 10", o["video1_err"] <= 10),
        (f"interpreter kept ratio {i['kept_ratio']:.2f} <= 0.7", i["kept_ratio"] <= 0.7),
        (f"interpreter speed-up {speedup:.2f}x >= 1.3x dense clips/s", speedup >= 1.3),
        (f"interpreter video-1 error {i['video1_err']:.1f} <= random {r['video1_err']:.1f}",
         i["video1_err"] <= r["video1_err"]),
    ]
    if miou.get("interpreter") is not None and miou.get("random") is not None:
        checks.append((f"interpreter mask mIoU {miou['interpreter']:.1f} > random "
                       f"{miou['random']:.1f}", miou["interpreter"] > miou["random"]))
    return [f"  [{'ok' if ok else 'MISSED'}] {text}" for text, ok in checks]

"""`videored data synth|scan|k400|bench`: dataset tools."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="TOOL", required=True)

    p = sub.add_parser("synth", help="write the synthetic moving-object video dataset (H.264 mp4 + masks + csvs)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--classes", type=int, default=4, help="number of classes: 2..6 colours or 2..8 directions")
    p.add_argument("--task", choices=("colour", "direction"), default="colour",
                   help="label = the moving object's colour (learnable in CPU minutes) or its motion direction (harder)")
    p.add_argument("--videos-per-class", type=int, default=24, help="train videos per class")
    p.add_argument("--val-per-class", type=int, default=None, help="default max(2, videos-per-class // 4)")
    p.add_argument("--test-per-class", type=int, default=None, help="default max(2, videos-per-class // 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-object-class", action="store_true",
                   help="add a last class of videos without the object (CLASSES + 1 labels): without it "
                        "the classifier's default answer makes one class's object redundant")

    p = sub.add_parser("scan", help="decode every video of a list in worker processes; JSON report of bad "
                                    "and too-short ones")
    p.add_argument("--csv", default=None, help="`path label` list (default with --config: <data.root>/train.csv)")
    p.add_argument("--config", default=None,
                   help="training config: videos shorter than one clip of its sampling (model.num_frames x "
                        "data.sampling_rate at data.target_fps) are reported as too short; its data.decoder "
                        "is the default backend")
    p.add_argument("--out", required=True, help="JSON report: {checked, bad: [{path, line, reason}], too_short: [...]}")
    p.add_argument("--backend", choices=("auto", "pyav", "decord", "torchcodec"), default=None,
                   help="default: the config's data.decoder, else auto")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds per video before its worker is killed and the video counts as a hang")
    p.add_argument("--min-frames", type=int, default=1, help="report videos with fewer frames as too short")
    p.add_argument("--sample-frames", type=int, default=None, help="decode only N evenly spaced frames (faster)")

    k400 = sub.add_parser("k400", aliases=["kinetics400"], help="Kinetics-400 preparation (see datasets/README.md)")
    ksub = k400.add_subparsers(dest="k400_command", metavar="STEP", required=True)
    p = ksub.add_parser("lists", help="annotation CSVs + downloaded clips -> train/val/test.csv + classes.txt")
    p.add_argument("--videos", required=True, nargs="+",
                   help="folder(s) of the downloaded (or resized) clips, flat or per class; a later folder "
                        "overrides an earlier one for the same clip (e.g. CVDF's replacement/)")
    p.add_argument("--annotations", required=True, help="folder with train.csv, validate.csv (or val.csv), optional test.csv")
    p.add_argument("--out", required=True, help="folder for the lists")
    p.add_argument("--test-from", choices=("val", "test"), default="val", help="build test.csv from the validation (paper protocol) or test annotations")
    p.add_argument("--classes-file", default=None, help="fixed class order (default: sorted train labels)")
    p = ksub.add_parser("resize", help="re-encode clips for fast training reads: short side 320, a keyframe "
                                       "every 16 frames (PyAV; parallel, resumable)")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--short-side", type=int, default=320)
    p.add_argument("--reencode", action="store_true",
                   help="keep each video's size (an existing resized folder): only re-encode with the keyframe interval")
    p.add_argument("--keyint", type=int, default=16,
                   help="a keyframe exactly every N frames (-g N -keyint_min N -sc_threshold 0); 0: x264's default "
                        "(up to 250). Size/speed trade-off in docs/data.md")
    p.add_argument("--fastdecode", action="store_true",
                   help="x264 -tune fastdecode: cheaper to decode, larger files (docs/data.md)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))

    p = sub.add_parser("bench", help="loader benchmark: training clips per CPU-second of one worker, per "
                                     "reader, today's loader beside; cores one GPU needs")
    p.add_argument("--clips", type=int, default=20, help="items per timed round")
    p.add_argument("--rounds", type=int, default=3, help="rounds per measurement; the fastest is kept")
    p.add_argument("--out", default=None, help="also write the rows as JSON")
    p.add_argument("--csv", default=None, nargs="+",
                   help="time your own videos (`path label` lists, one table block each; K400 sampling 8 x 32, "
                        "224 crops) instead of the built-in ones")
    p.add_argument("--model-clips-per-s", default="24,81",
                   help="model speeds (clips/s of one GPU, e.g. from `videored bench`) to size the "
                        "loader for (default: the paper's V100 figures, dense <= 24, IA-RED2 >= 81)")
    p.add_argument("--backends", default="decord,pyav,torchcodec",
                   help="readers to time (those not installed are left out); today's loader "
                        "(decord, float output) is always timed when decord is installed")
    p.add_argument("--clips-per-video", default="1,2",
                   help="training clips taken from each decoded video (data.clips_per_video), one row each")


def main(args: argparse.Namespace) -> int:
    tools = {"synth": _synth, "scan": _scan, "k400": _k400, "kinetics400": _k400, "bench": _bench}
    return tools[args.data_command](args)


def _synth(args: argparse.Namespace) -> int:
    from videored.data.synthetic import SynthConfig, write_synthetic_dataset

    summary = write_synthetic_dataset(
        args.out, args.classes, args.videos_per_class, args.seed, args.val_per_class, args.test_per_class,
        cfg=SynthConfig(task=args.task), progress=True, no_object_class=args.no_object_class,
    )
    print(json.dumps({k: summary[k] for k in ("num_classes", "videos", "seed", "object_fraction_mean")}))
    print(f"wrote {Path(args.out) / 'train.csv'}, val.csv, test.csv, classes.txt")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from videored.data.scan import ClipSpec, scan_video_list

    clip, csv, backend = None, args.csv, args.backend
    if args.config:
        from videored.engine.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as err:
            print(f"videored data scan: config error: {err}", file=sys.stderr)
            return 2
        clip = ClipSpec(cfg.model.num_frames, cfg.data.sampling_rate, cfg.data.target_fps)
        csv = csv or str(Path(cfg.data.root) / "train.csv")
        backend = backend or cfg.data.decoder
    if csv is None:
        print("videored data scan: give --csv, or --config to scan its data.root/train.csv", file=sys.stderr)
        return 2
    report = scan_video_list(csv, backend or "auto", args.workers, args.timeout, args.min_frames,
                             args.sample_frames, progress=True, clip=clip)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    for key, label in (("bad", "bad"), ("too_short", "too short")):
        for row in report[key][:20]:
            print(f"{csv}:{row['line']}: {label}: {row['path']}: {row['reason']}", file=sys.stderr)
        if len(report[key]) > 20:
            print(f"... {len(report[key]) - 20} more {label} in {out}", file=sys.stderr)
    needs = f" (one clip: {clip.describe()})" if clip else ""
    print(f"checked {report['checked']}, bad {len(report['bad'])}, too short {len(report['too_short'])}"
          f"{needs} -> {out}")
    return 1 if report["bad"] else 0


def _k400(args: argparse.Namespace) -> int:
    from videored.data import kinetics

    if args.k400_command == "resize":
        counts = kinetics.resize_videos(args.src, args.dst, None if args.reencode else args.short_side,
                                        args.workers, keyint=args.keyint or None, fastdecode=args.fastdecode)
        print(json.dumps(counts))
        return 1 if counts["failed"] else 0
    ann = Path(args.annotations)
    val = next((ann / n for n in ("validate.csv", "val.csv") if (ann / n).is_file()), None)
    missing = [n for n, p in (("train.csv", ann / "train.csv"), ("validate.csv or val.csv", val)) if p is None or not p.is_file()]
    if args.test_from == "test" and not (ann / "test.csv").is_file():
        missing.append("test.csv")
    if missing:
        print(f"error: {ann} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    test = ann / "test.csv" if args.test_from == "test" else None
    report = kinetics.make_kinetics_lists(args.videos, args.out, ann / "train.csv", val, test, args.classes_file)
    for split, r in report["splits"].items():
        print(f"{split}: {r['listed']} listed, {r['missing']} of {r['annotated']} annotated clips missing, "
              f"{len(r['bad_annotation_lines'])} bad annotation lines")
    print(f"{report['num_classes']} classes; lists, missing_*.txt and report.json in {args.out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from videored.bench.decode import format_table, header, run_decode_benchmark, user_video_kinds

    kinds = None
    for csv in args.csv or []:
        if not Path(csv).is_file():
            print(f"error: --csv {csv}: no such file", file=sys.stderr)
            return 2
        kinds = {**(kinds or {}), **user_video_kinds(csv)}
    rows = run_decode_benchmark(clips=args.clips, rounds=args.rounds, kinds=kinds,
                                backends=args.backends.split(","),
                                clips_per_video=[int(k) for k in args.clips_per_video.split(",")],
                                model_clips_per_s=[float(m) for m in args.model_clips_per_s.split(",")])
    print(header())
    print(format_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0

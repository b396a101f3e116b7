"""`videored` command line: one sub-command per module in `videored.commands`.

Sub-command modules are imported only when chosen, so `videored --help` stays fast and a
broken optional dependency of one command cannot break the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under videored.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train with a YAML experiment config (Algorithm 1 stages)"),
    "eval": ("evaluate", "clip-1 / video-1 evaluation of all methods, results.json + results.md"),
    "visualize": ("visualize", "per-frame redundancy heatmaps for a video or image"),
    "bench": ("bench", "speed benchmark: realized speed-up vs the FLOPs ratio"),
    "quickstart": ("quickstart", "the whole pipeline end to end on a synthetic video dataset"),
    "data": ("data", "dataset tools: synth, scan, kinetics400 lists"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videored", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen command's arguments are needed
            importlib.import_module(f"videored.commands.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(f"videored.commands.{COMMANDS[args.command][0]}")
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

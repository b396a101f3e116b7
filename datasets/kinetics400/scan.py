#!/usr/bin/env python
"""Decode every video of a list in worker processes and report the bad ones as JSON.

Thin wrapper of `videored data scan` (logic in videored/data/scan.py); see datasets/README.md.
Example:
    python datasets/kinetics400/scan.py --csv datasets/k400/train.csv --out datasets/k400/bad_train.json
"""
import sys

from videored.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "scan", *sys.argv[1:]]))

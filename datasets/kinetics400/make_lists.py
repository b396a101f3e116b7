#!/usr/bin/env python
"""Kinetics-400 annotation CSVs + downloaded clips -> train/val/test.csv + classes.txt.

Thin wrapper of `videored data k400 lists` (logic in videored/data/kinetics.py); see datasets/README.md.
Example:
    python datasets/kinetics400/make_lists.py --annotations k400/annotations \
        --videos k400/train k400/val k400/replacement --out datasets/k400
"""
import sys

from videored.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "k400", "lists", *sys.argv[1:]]))

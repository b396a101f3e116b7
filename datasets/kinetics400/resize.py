#!/usr/bin/env python
"""Re-encode Kinetics-400 clips to short side 320 (PyAV, parallel, resumable).

Thin wrapper of `videored data k400 resize` (logic in videored/data/kinetics.py); see datasets/README.md.
Example:
    python datasets/kinetics400/resize.py --src k400 --dst k400_320 --workers 16
"""
import sys

from videored.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "k400", "resize", *sys.argv[1:]]))

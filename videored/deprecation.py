"""Deprecated names that still work: one warning per old name and place, then silence.

Used for the budget vocabulary's renames (models/budget.py): keyword arguments, config keys
(engine/config.py) and command-line flags (`add_renamed_flag`).
"""
from __future__ import annotations

import argparse
import warnings

_WARNED: set[tuple[str, str]] = set()


def warn_renamed(old: str, new: str, where: str = "") -> None:
    """A deprecated name was used: one FutureWarning per (place, old name) and process."""
    if (where, old) in _WARNED:
        return
    _WARNED.add((where, old))
    warnings.warn(f"{where + ': ' if where else ''}{old!r} is deprecated, use {new!r} "
                  "(same meaning; the old name will be removed)", FutureWarning, stacklevel=3)


def add_renamed_flag(p: argparse.ArgumentParser, new: str, old: str, **kwargs) -> None:
    """Add flag `new`, and `old` as a hidden alias of it that warns once when used."""
    dest = new.lstrip("-").replace("-", "_")
    p.add_argument(new, dest=dest, **kwargs)

    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            warn_renamed(old, new, parser.prog)
            setattr(namespace, dest, values)

    p.add_argument(old, dest=dest, action=Renamed, help=argparse.SUPPRESS,
                   **{k: v for k, v in kwargs.items() if k == "type"})


__all__ = ["add_renamed_flag", "warn_renamed"]

"""Shared test settings: small thread count so parallel CI cores are not oversubscribed.

decord has no wheels for Linux aarch64 / macOS arm64 (setup.py's environment markers leave it out
there): tests that name decord (in their id, or marked `decord`) are skipped where it does not
import, and every other data test runs on PyAV. `VIDEORED_TEST_WITHOUT_DECORD=1` simulates such a
platform here (decord's import fails) so that case is tested too.
"""
import importlib.abc
import importlib.util
import os
import sys

import pytest
import torch


class _NoDecord(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "decord" or name.startswith("decord."):
            raise ImportError(f"No module named {name!r} (VIDEORED_TEST_WITHOUT_DECORD=1)")
        return None


if os.environ.get("VIDEORED_TEST_WITHOUT_DECORD") == "1":
    sys.meta_path.insert(0, _NoDecord())
    sys.modules.pop("decord", None)


def _decord_importable() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_configure(config):
    config.addinivalue_line("markers", "decord: needs decord (skipped where it does not install)")


def pytest_collection_modifyitems(config, items):
    if _decord_importable():
        return
    skip = pytest.mark.skip(reason="decord is not installed (no wheels for this platform); "
                                   "the PyAV tests cover decoding")
    for item in items:
        if "decord" in item.nodeid or item.get_closest_marker("decord"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic video set (2 classes, 2 train videos each, 1 val, 1 test), read-only:
    written once for every test that trains or evaluates on real decoded files."""
    from videored.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_classes=2, videos_per_class=2, seed=0, val_per_class=1,
                            test_per_class=1)
    return root

"""Shared test settings: small thread count so parallel CI cores are not oversubscribed."""
import pytest
import torch


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

"""Shared test settings: small thread count so parallel CI cores are not oversubscribed."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield

"""MACs as torch's flop counter sees them, with the math SDPA backend forced.

The analytic cost in `videored.models.flops` describes attention as two matrix products
(QKᵀ and AV). torch's math backend computes exactly that and the counter sees both; the fused
CPU/CUDA kernels are opaque to `FlopCounterMode` on some torch releases (2.14 counts nothing for
CPU `scaled_dot_product_attention`), so the reference is taken under `SDPBackend.MATH`.
"""
from __future__ import annotations

from typing import Callable

from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def counted_macs(fn: Callable[[], object]) -> tuple[object, float]:
    """Run `fn()` and return (its result, multiply-accumulates counted by torch)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        result = fn()
    return result, counter.get_total_flops() / 2

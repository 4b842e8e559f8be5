"""Shared by the benchmark scripts: the in-process reference the shares of peak are computed against."""

from __future__ import annotations


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a square ``n``³ sgemm on torch's current threads (best of ``repeats``)."""
    from lumenkit.train import cpu_gflops

    return cpu_gflops(n, repeats)

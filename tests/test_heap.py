"""lumenkit.heap: freed tensor memory kept in glibc's heap within the block, the defaults restored after it."""

from __future__ import annotations

import resource
import statistics

import pytest
import torch

from lumenkit.heap import heap_retention_available, retained_heap

NBYTES = 40_000_000  # above glibc's largest mmap threshold (32 MiB): served by mmap under the defaults
PAGES = NBYTES / 4096

needs_glibc = pytest.mark.skipif(not heap_retention_available(), reason="the heap can be tuned with glibc only")


def _faults_per_tensor(n: int = 12) -> float:
    """Median minor page faults of allocating, filling and freeing one 40-MB tensor, after as many warm-ups."""
    x = torch.ones(NBYTES // 4)
    counts = []
    for i in range(2 * n):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        z = x * 2
        del z
        if i >= n:
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return statistics.median(counts)


@needs_glibc
def test_retained_heap_reuses_freed_memory_and_restores_the_default_after_the_outermost_block():
    assert _faults_per_tensor() > 0.5 * PAGES  # default: fresh pages for every large tensor
    with retained_heap() as tuned:
        assert tuned is True
        assert _faults_per_tensor() < 0.05 * PAGES
        with retained_heap() as inner:
            assert inner is True
        assert _faults_per_tensor() < 0.05 * PAGES  # the inner block's end does not restore the defaults
    assert _faults_per_tensor() > 0.5 * PAGES


@needs_glibc
def test_disabled_block_changes_nothing():
    with retained_heap(False) as tuned:
        assert tuned is False
        assert _faults_per_tensor() > 0.5 * PAGES


def test_elsewhere_the_block_is_a_no_op(monkeypatch):
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    with retained_heap() as tuned:
        assert tuned is False
    assert heap_retention_available() is False

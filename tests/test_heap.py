"""lumenkit.heap: freed tensor memory kept in glibc's heap within the block, the defaults restored after it.

The page-fault counts are taken in a fresh interpreter: in the test process, memory freed by earlier tests
(or by the block itself) stays in the heap's bins and is reused whatever the allocator settings.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lumenkit.heap import heap_retention_available, retained_heap

NBYTES = 40_000_000  # above glibc's largest mmap threshold (32 MiB): served by mmap under the defaults
PAGES = NBYTES / 4096

needs_glibc = pytest.mark.skipif(not heap_retention_available(), reason="the heap can be tuned with glibc only")

_PROBE = """
import json, resource, statistics, torch
from lumenkit.heap import retained_heap

def faults(nbytes, n=8):
    # median minor page faults of allocating, filling and freeing one tensor of nbytes, after n warm-ups
    x, counts = torch.ones(nbytes // 4), []
    for i in range(2 * n):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        z = x * 2
        del z
        if i >= n:
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return statistics.median(counts)

N = %d
out = {"before": faults(N)}
with retained_heap(False) as off:
    out["disabled"], out["off"] = faults(N), off
with retained_heap() as on:
    out["inside"], out["on"] = faults(N), on
    with retained_heap() as inner:
        out["inner"] = inner
    out["after_inner"] = faults(N)
# a size no freed chunk of the block can hold: it shows the settings, not a reused hole
out["after"] = faults(3 * N, n=3)
print(json.dumps(out))
"""


@needs_glibc
def test_retained_heap_reuses_freed_memory_and_restores_the_default_after_the_outermost_block():
    r = subprocess.run([sys.executable, "-c", _PROBE % NBYTES], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout.strip().splitlines()[-1])
    assert f["before"] > 0.5 * PAGES  # default: fresh pages for every large tensor
    assert f["off"] is False and f["disabled"] > 0.5 * PAGES  # a disabled block changes nothing
    assert f["on"] is True and f["inner"] is True
    assert f["inside"] < 0.05 * PAGES
    assert f["after_inner"] < 0.05 * PAGES  # the inner block's end does not restore the defaults
    assert f["after"] > 0.5 * 3 * PAGES  # the outermost one does


def test_elsewhere_the_block_is_a_no_op(monkeypatch):
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    with retained_heap() as tuned:
        assert tuned is False
    assert heap_retention_available() is False

"""Keep freed memory in the process heap while training on the CPU (glibc's allocator).

PyTorch allocates CPU tensors with ``posix_memalign``, i.e. glibc's ``malloc`` on Linux. glibc serves a request
above its mmap threshold (dynamic, at most 32 MiB on 64-bit) with fresh pages from the kernel and hands them back
on ``free``. A training step of the default recipe allocates dozens of activations and gradients of that size (one
16-channel fp32 feature map of a batch of 8 × 256² patches is 33.5 MB), so every step maps, page-faults and unmaps
a few hundred thousand 4-KiB pages. The kernel zeroes each one; on some virtual machines a fault costs several
microseconds, and the step spends a fifth or more of its time in the kernel (``benchmarks/bench_heap.py`` measures
it on your machine: faults per step, system time and the step time with and without).

:func:`retained_heap` switches that off for the duration of a ``with`` block: no mmap'd chunks
(``M_MMAP_MAX = 0``) and no trimming of the heap top below 2 GiB (``M_TRIM_THRESHOLD``), so freed tensors are reused
from the heap as they are in a long-running process with a caching allocator. The price is that the process keeps
its peak heap until the block ends, when the defaults are restored and ``malloc_trim(0)`` returns the free memory.
Elsewhere (macOS, Windows, musl) it does nothing.

Whether training and prediction use it is one process-level setting, on by default: :func:`set_heap_retention`
(``lumenkit --no-retain-heap …`` on the command line, ``LUMENKIT_RETAIN_HEAP=0`` in the environment).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's default number of mmap'd chunks
_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's default, in bytes
_NEVER_TRIM = 2**31 - 1  # bytes, the largest value mallopt takes: the heap top is kept up to 2 GiB
_depth = 0
_setting: bool | None = None  # None: from LUMENKIT_RETAIN_HEAP (default on)


def set_heap_retention(enabled: bool | None) -> None:
    """Turn heap retention on or off for this process (``None``: back to ``LUMENKIT_RETAIN_HEAP``, default on).

    Training (:func:`lumenkit.training.train`) and prediction (:mod:`lumenkit.inference`) open a
    :func:`retained_heap` block that follows this setting; it costs the process its peak heap until they return.
    """
    global _setting
    _setting = None if enabled is None else bool(enabled)


def heap_retention() -> bool:
    """The process-level setting: :func:`set_heap_retention`, else ``LUMENKIT_RETAIN_HEAP`` (``0`` = off), else on."""
    if _setting is not None:
        return _setting
    return os.environ.get("LUMENKIT_RETAIN_HEAP", "1").strip().lower() not in ("0", "false", "no", "off")


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else ``None``."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> None:
    """Return the free memory of every heap arena to the system (``malloc_trim(0)``; glibc only, else nothing).

    Streamed work (:mod:`lumenkit.inference.mosaic`) calls it between units: buffers of many sizes, freed by several
    threads (the tile decoder's), otherwise stay in their arenas and resident memory creeps up with the input.
    """
    if _depth == 0 and (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def heap_retention_available() -> bool:
    """True when this process's allocator is glibc's, the one :func:`retained_heap` can tune."""
    return _glibc() is not None


@contextlib.contextmanager
def retained_heap(enabled: bool | None = None) -> Iterator[bool]:
    """Within the block, serve large allocations from the heap and keep freed memory for reuse (glibc only).

    Args:
        enabled: ``False`` makes the block a no-op (to measure or to save memory); ``None`` follows the
            process-level setting (:func:`heap_retention`).

    Yields:
        Whether the allocator was tuned (``False`` when disabled or the C library is not glibc).

    Nested blocks are allowed; the outermost one restores glibc's defaults (``M_MMAP_MAX`` 65536, trim threshold
    128 KiB; the mmap threshold no longer adapts afterwards) and returns the free heap to the system with
    ``malloc_trim(0)``. Not thread-aware: the setting is process-wide while any block is open.
    """
    global _depth
    if enabled is None:
        enabled = heap_retention()
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    if _depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)

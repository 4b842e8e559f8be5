"""Where and how computation runs: device choice, torch threads, the distributed process group, versions."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist

from lumenkit.errors import ConfigError


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def resolve_device(device: str) -> torch.device:
    """The torch device a device name means.

    ``"auto"`` is CUDA (this process's local rank) when available, else CPU; also ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` and any other device string torch knows (such as ``"mps"``).

    Raises:
        ConfigError: CUDA requested but not available, or a string torch does not read as a device.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} but no CUDA GPU is available; use device='cpu' or 'auto'")
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N (or mps)") from None


def dist_init(dev: torch.device) -> tuple[int, int, bool]:
    """Join the process group when launched by torchrun; returns ``(rank, world_size, started_here)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


def versions() -> dict[str, str]:
    """Versions of lumenkit, torch, numpy and Python (written into every run's ``config.yaml``)."""
    from lumenkit._version import __version__

    return {"lumenkit": __version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads; the previous number is restored after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cpu_gflops(n: int = 1024, repeats: int = 3) -> float:
    """fp32 GFLOP/s of this CPU on torch's current threads: best of ``repeats`` ``n``³ matrix products (≈ 0.1 s).

    Recorded in each run's ``config.yaml`` (``resolved.cpu_sgemm_gflops``) so that the epochs of time-budgeted
    runs on different or differently loaded hosts can be compared.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9

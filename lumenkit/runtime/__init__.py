"""Where computation runs: device, torch threads, the distributed process group and the process heap."""

from lumenkit.runtime.devices import resolve_device
from lumenkit.runtime.heap import heap_retention, heap_retention_available, retained_heap, set_heap_retention

__all__ = [
    "heap_retention",
    "heap_retention_available",
    "resolve_device",
    "retained_heap",
    "set_heap_retention",
]

"""Keep glibc from handing activation buffers back to the kernel after every forward pass.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold with
fresh ``mmap`` s and returns the top of the heap to the kernel once more than the trim threshold
is free, so a network whose activations are a few MB each page-faults (and zero-fills) the same
memory again at every image. On the 2-core machine that is about a third of EfficientNet-Lite0's
time at the README defaults (256x632: 30 -> 20 ms per image with folded batch norms;
``docs/bench/scale.md``). PyTorch's CPU tuning guide suggests swapping the allocator
(jemalloc / tcmalloc via ``LD_PRELOAD``); raising the two thresholds in-process has the same
effect here and needs nothing installed.

:func:`tune_malloc` sets ``M_MMAP_THRESHOLD`` to 32 MB (larger blocks, e.g. feature banks, still
get their own mapping and go back to the kernel when freed) and ``M_TRIM_THRESHOLD`` to 128 MB
(at most that much free heap is kept per arena). It is called where defectforge runs a network
on the CPU; it acts once per process, only on glibc, and never when the environment sets
``DEFECTFORGE_MALLOC=default``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20

_state: dict[str, bool] = {}


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds once; True when they are (now or before) set."""
    if "done" in _state:
        return _state["done"]
    ok = False
    if sys.platform.startswith("linux") and os.environ.get("DEFECTFORGE_MALLOC", "") != "default":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            fn = libc.mallopt
            fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            gnu = ctypes.CDLL(None).gnu_get_libc_version  # glibc only (musl's mallopt does nothing)
            ok = gnu is not None and fn(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and fn(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        except (OSError, AttributeError):
            ok = False
    _state["done"] = ok
    return ok

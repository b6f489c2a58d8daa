"""Numba settings shared by the compiled bank kernels (imported for its effect).

numba's OpenMP threading layer, once started, resets the process's OpenMP thread count, so
torch and faiss in the same process would run on another number of threads after a fit and
give slightly different floats than before it (or than a worker process). The workqueue
layer has no OpenMP. A layer the user chose (``NUMBA_THREADING_LAYER``) is kept.
"""

from __future__ import annotations

import os

from numba import config

if "NUMBA_THREADING_LAYER" not in os.environ and config.THREADING_LAYER == "default":
    config.THREADING_LAYER = "workqueue"

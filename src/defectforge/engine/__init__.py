"""Where per-item work runs: in this process / local worker processes, or on a Ray cluster.

A job is split into **items** (sample indices, image chunks, conditions x seeds) and a
picklable **task**: ``task.setup()`` runs once per worker (load a model, build a
backbone), ``task(item)`` does one item (reads its inputs by path, writes its outputs
atomically into the output folder) and returns a small JSON-able record. The driver only
sees those records: it keeps the journal, the progress bar and the final files.

    from defectforge.engine import get_engine
    with get_engine("ray", address="auto") as eng:
        for item, record in eng.map(task, items):
            ...

Both engines give the same records for the same items; only the order in which they
arrive differs (``map`` yields in completion order), so every caller journals records by
item and rebuilds its final files in item order.
"""

from defectforge.engine.base import Engine, Task, get_engine, ENGINES
from defectforge.engine.local import LocalEngine

__all__ = ["Engine", "Task", "LocalEngine", "get_engine", "ENGINES"]

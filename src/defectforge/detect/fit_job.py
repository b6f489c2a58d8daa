"""``detect fit``'s feature extraction as a job on an engine (:mod:`defectforge.engine`).

The images of a bank are cut into the same batches on every engine (``batch_size``
images for the normal bank, one image for the defect bank); a :class:`FeatureTask`
turns one batch into patch rows with the detector's own ``_rows`` / ``_defect_rows``,
the backbone built once per worker and the images read by path inside the worker. The
rows come back to the driver **in batch order** (:meth:`Engine.map_ordered`), where the
detector spools them and chooses the coreset, so the banks are the same on every engine.

    from defectforge.detect.fit_job import fit_on
    with get_engine("ray", workers=2) as eng:
        fit_on(det, eng, normal, defects)

Warnings a worker raises (a defect image with an empty mask) are raised again on the
driver, so ``detect fit`` prints them whichever engine ran the batch.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator, Sequence

import numpy as np

#: the attribute :func:`fit_on` sets on the detector for the length of one ``fit``
ENGINE_ATTR = "_fit_engine"


class FeatureTask:
    """Rows of one batch of ``(position, item, tag)`` for the ``"normal"`` or ``"defect"``
    bank. In this process it uses the driver's detector; a worker of another process
    rebuilds it from its parameters and input size (the backbone is never pickled)."""

    def __init__(self, det: Any, which: str):
        self.which = which
        self.det = det
        self.cls = type(det)
        self.params = {**{k: v for k, v in det.get_params().items() if k not in det.runtime_params},
                       "device": getattr(det, "device", "cpu")}
        self.fitted = {k: getattr(det, k) for k in ("input_size_", "grid_", "feature_dim_")}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "det": None}

    def setup(self) -> None:
        if self.det is None:
            det = self.cls(**self.params)
            for k, v in self.fitted.items():
                setattr(det, k, v)
            self.det = det

    def __call__(self, batch: Sequence[tuple[int, Any, Any]]) -> tuple[np.ndarray | None, list[tuple[type, str]]]:
        from defectforge.bank.features import to_rgb

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if self.which == "normal":
                rows = self.det._rows([to_rgb(it) for _, it, _ in batch])
            else:
                (k, it, _), = batch
                rows = self.det._defect_rows(it, k)
        return rows, [(w.category, str(w.message)) for w in caught]


def feature_rows(det: Any, which: str, items: Any, batch_size: int) -> Iterator[tuple[np.ndarray | None, int, Any]]:
    """``(rows or None, images in the batch, tag)`` for ``items`` (``(item, tag)`` pairs) in
    their order, computed on the engine :func:`fit_on` set (default: this process)."""
    from defectforge.engine.local import LocalEngine

    pairs = list(items)
    size = max(1, int(batch_size)) if which == "normal" else 1
    batches = [tuple((k, it, tag) for k, (it, tag) in enumerate(pairs[s:s + size], start=s))
               for s in range(0, len(pairs), size)]
    engine = getattr(det, ENGINE_ATTR, None) or LocalEngine(1)
    seen: set[tuple[type, str]] = set()  # each worker building its backbone repeats the same warnings
    for batch, (rows, caught) in engine.map_ordered(FeatureTask(det, which), batches):
        for category, message in caught:
            if (category, message) not in seen:
                seen.add((category, message))
                warnings.warn(message, category, stacklevel=2)
        yield rows, len(batch), batch[0][2]


def fit_on(det: Any, engine: Any, *args: Any, **kwargs: Any) -> Any:
    """``det.fit(*args, **kwargs)`` with the feature extraction on ``engine``."""
    setattr(det, ENGINE_ATTR, engine)
    try:
        return det.fit(*args, **kwargs)
    finally:
        setattr(det, ENGINE_ATTR, None)

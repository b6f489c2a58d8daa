"""Bundled example data.

``load_sample()`` returns a small BSData subset shipped with the package (real
ball-screw pitting photographs, CC BY-SA 4.0: see ``assets/bsdata_sample/README.md``):
40 good + 10 pitting train images, 20 good + 20 pitting test images, 1130x460 JPEGs
with binary masks. It needs no download and no ``../shared`` folder, so examples,
tests and demos can always run.
"""

from __future__ import annotations

from pathlib import Path

from defectforge.data.sample import Dataset

_SAMPLE_DIR = Path(__file__).resolve().parent / "assets" / "bsdata_sample"


def sample_path() -> Path:
    """Folder of the bundled BSData subset (``split.csv``, ``images/``, ``masks/``)."""
    return _SAMPLE_DIR


def load_sample() -> Dataset:
    """The bundled BSData subset as a manifest :class:`~defectforge.data.Dataset`."""
    from defectforge.data.manifest import read_manifest

    return read_manifest(_SAMPLE_DIR / "split.csv")


__all__ = ["load_sample", "sample_path"]

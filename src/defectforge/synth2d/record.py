"""The one typed record of a synthetic sample, and its one metadata schema.

A :class:`SynthRecord` is what making sample ``i`` produces (:mod:`.engine`), what the run
journal stores (:meth:`to_journal` / :meth:`from_journal`), and what becomes a
:class:`~defectforge.data.Sample` (:meth:`to_sample`), whether its pixels are files of a
run folder or arrays in memory. The sample's ``meta`` is the same in both cases
(:data:`META_KEYS`, in this order, with these types)::

    width, height, seed, index, attempts, instances   int
    generator, source, source_path                    str ("" when the source has no file)
    params, instance_boxes                            str (canonical JSON: the generator's
                                                      parameters; [[x0, y0, x1, y1], ...])
    fill, leak, contrast                              float (label QC)

so a manifest written from it and read back gives the same values (as text), and
:meth:`from_meta` turns either back into typed values. In-memory samples also carry
``name`` (they have no file to take it from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectforge.data.sample import Sample

META_KEYS = ("width", "height", "generator", "params", "seed", "source", "source_path", "index", "attempts",
             "fill", "leak", "contrast", "instances", "instance_boxes")
QC_KEYS = ("fill", "leak", "contrast", "instances")
_IDENTITY = ("index", "seed", "generator", "label", "source", "source_path", "rejects")
_DONE = ("file", "mask", "file_size", "mask_size", "params", "qc", "boxes", "attempts", "width", "height")


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


@dataclass
class SynthRecord:
    """Sample ``index`` of a run: where it came from, and (when ``status == 'ok'``) its
    label QC, boxes and either its files (``file``/``mask`` relative to the run folder) or
    its arrays (``image``/``mask_array``). ``png``/``mask_png`` carry encoded bytes from a
    worker to the writer and are never stored."""

    index: int
    seed: int
    generator: str
    label: str
    source: str
    source_path: str | None = None
    rejects: list[str] = field(default_factory=list)
    status: str = "pending"  # ok | failed | error
    error: str = ""
    attempts: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)
    boxes: list[list[int]] = field(default_factory=list)
    width: int = 0
    height: int = 0
    file: str = ""
    mask: str = ""
    file_size: int = 0
    mask_size: int = 0
    image: np.ndarray | None = field(default=None, repr=False)
    mask_array: np.ndarray | None = field(default=None, repr=False)
    png: bytes | None = field(default=None, repr=False)
    mask_png: bytes | None = field(default=None, repr=False)

    @property
    def stem(self) -> str:
        return f"{self.label}_{self.index:06d}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    # -- journal -----------------------------------------------------------------------------
    def to_journal(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _IDENTITY}
        d["status"] = self.status
        if self.ok:
            d.update({k: getattr(self, k) for k in _DONE})
        return d

    @classmethod
    def from_journal(cls, d: dict[str, Any]) -> "SynthRecord":
        keys = set(_IDENTITY) | set(_DONE) | {"status"}
        return cls(**{k: v for k, v in d.items() if k in keys})

    def files_intact(self, root: Path) -> bool:
        """Both files exist with the journaled sizes (a failed sample has none)."""
        if not self.ok:
            return True
        return all((root / f).is_file() and (root / f).stat().st_size == n
                   for f, n in ((self.file, self.file_size), (self.mask, self.mask_size)))

    # -- the sample ----------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        qc = {k: self.qc.get(k) for k in QC_KEYS}
        return {"width": int(self.width), "height": int(self.height), "generator": self.generator,
                "params": _json(self.params), "seed": int(self.seed), "source": self.source,
                "source_path": self.source_path or "", "index": int(self.index), "attempts": int(self.attempts),
                **qc, "instance_boxes": _json(self.boxes)}

    def to_sample(self, root: Path | None = None) -> Sample:
        """The sample: files under ``root`` when given, else the in-memory arrays."""
        if root is not None:
            return Sample(label=self.label, split="train", path=root / self.file, mask_path=root / self.mask,
                          meta=self.meta())
        return Sample(label=self.label, split="train", image_array=self.image, mask_array=self.mask_array,
                      meta={"name": self.stem, **self.meta()})

    @staticmethod
    def from_meta(meta: dict[str, Any]) -> dict[str, Any]:
        """Typed values of a synthetic sample's ``meta`` (from memory or read from a manifest)."""
        out: dict[str, Any] = {}
        for k in META_KEYS:
            v = meta.get(k)
            if v is None or v == "" and k not in ("source", "source_path", "generator"):
                out[k] = None
            elif k in ("params", "instance_boxes"):
                out[k] = json.loads(v) if isinstance(v, str) else v
            elif k in ("width", "height", "seed", "index", "attempts", "instances"):
                out[k] = int(v)
            elif k in ("fill", "leak", "contrast"):
                out[k] = float(v)
            else:
                out[k] = str(v)
        return out

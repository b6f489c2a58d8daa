"""The one sample type every module uses.

A :class:`Sample` is an image (``H x W x C`` uint8/uint16) with an optional binary
defect mask, a label (``"good"`` or a defect type such as ``"pitting"``), a split, the
source path and free metadata. Pixels are loaded lazily from ``path`` / ``mask_path``
unless given in memory, so a dataset of thousands of samples costs almost nothing until
it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from defectforge.data.image_io import as_rgb8, read_image, read_mask

GOOD = "good"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates, ``x0, y0`` inclusive top-left,
    ``x1, y1`` exclusive bottom-right (so ``w = x1 - x0``)."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = "defect"
    score: float | None = None

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.width, self.height)


@dataclass(eq=False)
class Sample:
    """One image with its label, split, optional mask and boxes.

    ``image`` and ``mask`` are read from ``path`` / ``mask_path`` on access unless
    arrays were given (``Sample(image=arr, ...)``). ``mask`` is ``None`` when no mask
    exists; for a good sample that means "all background". ``boxes`` is ``None`` when
    boxes are not given and should be derived from the mask (:meth:`derived_boxes`).

    Every mask any command gets is checked against its image's size here, in
    :attr:`image` and :attr:`mask` (the image's header, when only the mask is read): a
    mask file of another size, or a mask drawn at the size an annotation file declares
    (``label_path``: labelme ``imageWidth``/``imageHeight``, COCO ``width``/``height``) that
    the image file does not have, is an :class:`~defectforge.errors.InputError` naming
    both files.
    """

    label: str = GOOD
    split: str = "train"
    path: Path | None = None
    mask_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    boxes: list[Box] | None = None
    image_array: np.ndarray | None = field(default=None, repr=False)
    mask_array: np.ndarray | None = field(default=None, repr=False)
    #: the annotation file (labelme / COCO JSON) ``mask_array`` was drawn from, named in size errors
    label_path: Path | None = None
    #: ``mask_array`` was found to match the image file's size (so the header is read once)
    _size_ok: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)
        if self.mask_path is not None:
            self.mask_path = Path(self.mask_path)
        if self.label_path is not None:
            self.label_path = Path(self.label_path)
        if self.mask_array is not None:
            self.mask_array = np.asarray(self.mask_array) > 0

    # -- pixels ---------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        if self.image_array is not None:
            return self.image_array
        if self.path is None:
            raise ValueError("sample has neither an image array nor a path")
        img = read_image(self.path)
        if self.mask_array is not None and not self._size_ok:
            self._check_size(self.mask_array.shape, img.shape[:2], None)
            self._size_ok = True
        return img

    def _file_hw(self) -> tuple[int, int] | None:
        """``(H, W)`` of the image file from its header; ``None`` when there is no readable file
        (reading the image itself then reports that)."""
        if self.path is None or not self.path.is_file():
            return None
        from defectforge.data._files import header_size
        from defectforge.errors import InputError

        try:
            return header_size(self.path)
        except InputError:
            return None

    def _check_size(self, mask_hw: tuple[int, ...], image_hw: tuple[int, ...], mask_file: Path | None) -> None:
        """Refuse a mask whose ``(H, W)`` differs from the image's, naming the mask (or the
        annotation file it was drawn from) and the image."""
        (mh, mw), (ih, iw) = tuple(mask_hw[:2]), tuple(image_hw[:2])
        if (mh, mw) == (ih, iw):
            return
        from defectforge.errors import InputError

        image = f"the image is {iw}x{ih}"
        if self.path is not None and self.image_array is None:
            image += f" ({self.path})"
        if mask_file is None and self.label_path is not None:
            raise InputError(self.label_path, f"declares the image size {mw}x{mh} (WxH), but {image}")
        raise InputError(mask_file or self.mask_path or self.path, f"mask is {mw}x{mh} (WxH) but {image}")

    def rgb(self) -> np.ndarray:
        """The image as ``H x W x 3`` uint8."""
        return as_rgb8(self.image)

    @property
    def mask(self) -> np.ndarray | None:
        """The boolean mask (``None`` when there is none), checked against the image's size."""
        if self.mask_array is not None:
            if self.image_array is None and not self._size_ok:
                hw = self._file_hw()
                if hw is not None:
                    self._check_size(self.mask_array.shape, hw, None)
                    self._size_ok = True
            return self.mask_array
        if self.mask_path is None:
            return None
        m = read_mask(self.mask_path)
        hw = self.image_array.shape[:2] if self.image_array is not None else self._file_hw()
        if hw is not None:
            self._check_size(m.shape, hw, self.mask_path)
        return m

    def mask_or_empty(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The mask, or an all-False mask of the image's (or the given) shape."""
        m = self.mask
        if m is not None:
            return m
        if shape is None:
            shape = self.image.shape[:2]
        return np.zeros(shape[:2], dtype=bool)

    def load(self) -> "Sample":
        """A copy with pixels in memory (image and mask), checked for matching sizes."""
        img = self.image
        m = self.mask
        if m is not None:
            self._check_size(m.shape, img.shape[:2], self.mask_path)
        return replace(self, image_array=img, mask_array=m, meta=dict(self.meta))

    # -- labels ---------------------------------------------------------------
    @property
    def is_defect(self) -> bool:
        return self.label != GOOD

    @property
    def name(self) -> str:
        if self.path is not None:
            return self.path.stem
        return str(self.meta.get("name", "sample"))

    def derived_boxes(self, connectivity: int = 8) -> list[Box]:
        """Boxes given explicitly, else one per connected component of the mask."""
        if self.boxes is not None:
            return list(self.boxes)
        m = self.mask
        if m is None or not m.any():
            return []
        return boxes_from_mask(m, self.label, connectivity)

    def with_(self, **changes: Any) -> "Sample":
        return replace(self, **changes)


def boxes_from_mask(mask: np.ndarray, label: str = "defect", connectivity: int = 8) -> list[Box]:
    import cv2

    m = (np.asarray(mask) > 0).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=connectivity)
    out = []
    for i in range(1, n):
        x, y, w, h, _area = stats[i]
        out.append(Box(float(x), float(y), float(x + w), float(y + h), label))
    return out


@dataclass
class Dataset:
    """An ordered collection of samples with the root and format they came from."""

    samples: list[Sample]
    root: Path | None = None
    format: str = "memory"
    #: label/path problems a reader skipped while collecting (``data check``; see data/problems.py)
    read_problems: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        """A summary (format, root, counts per split/label), never every sample."""
        counts = ", ".join(f"{k}: {v}" for k, v in self.counts().items())
        return f"Dataset({len(self.samples)} samples, format={self.format!r}, root={str(self.root) if self.root else None!r}" + \
            (f", {counts})" if counts else ")")

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def filter(self, split: str | Iterable[str] | None = None, label: str | Iterable[str] | None = None,
               defect: bool | None = None) -> "Dataset":
        """Samples of the given split(s) and label(s); ``defect=True/False`` for any defect/good."""
        splits = {split} if isinstance(split, str) else (set(split) if split is not None else None)
        labels = {label} if isinstance(label, str) else (set(label) if label is not None else None)
        out = [
            s for s in self.samples
            if (splits is None or s.split in splits)
            and (labels is None or s.label in labels)
            and (defect is None or s.is_defect == defect)
        ]
        return Dataset(out, self.root, self.format)

    def counts(self) -> dict[str, int]:
        """``{"train/good": 402, ...}`` in a stable order."""
        c: dict[str, int] = {}
        for s in self.samples:
            k = f"{s.split}/{s.label}"
            c[k] = c.get(k, 0) + 1
        return dict(sorted(c.items(), key=lambda kv: (kv[0].split("/")[0] != "train", kv[0])))

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples})

    @property
    def labels(self) -> list[str]:
        return sorted({s.label for s in self.samples})

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.label for s in self.samples if s.is_defect})

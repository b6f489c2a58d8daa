"""MVTec-style folders.

Layout::

    root/train/good/*.png            (train may also hold defect-type folders)
    root/val/<label>/*.png           (optional)
    root/test/good/*.png
    root/test/<type>/*.png
    root/ground_truth/<type>/<stem>_mask.png   (or <stem>.png, as :func:`write_mvtec` names them)

The label is the folder name; masks are paired by stem. ``ground_truth/<split>/<type>/``
is also searched first, so a writer can keep same-named defects of different splits
apart. A defect image without a mask keeps ``mask_path=None``:
:func:`defectforge.data.check.check_dataset` reports it as a problem.
"""

from __future__ import annotations

from pathlib import Path

from defectforge.data._files import export_image, export_mask, image_suffix, list_images, staged_dir, unique_name
from defectforge.data.image_io import IMAGE_SUFFIXES, write_image
from defectforge.data.problems import ReadProblems, strict
from defectforge.data.sample import GOOD, Dataset, Sample
from defectforge.errors import InputError

SPLITS = ("train", "val", "test")
MASK_SUFFIXES = ("_mask",  "")


def looks_like_mvtec(root: Path) -> bool:
    """``root`` has a ``train/`` or ``test/`` folder with label sub-folders holding images."""
    root = Path(root)
    for split in SPLITS:
        d = root / split
        if d.is_dir() and any(sub.is_dir() and list_images(sub) for sub in d.iterdir()):
            return True
    return False


def _mask_index(folder: Path) -> dict[str, Path]:
    """``{stem: mask path}`` for a ground-truth folder, ``<stem>_mask`` preferred over ``<stem>``."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    for p in sorted(files):
        if p.stem.endswith("_mask"):
            out[p.stem[: -len("_mask")]] = p
    for p in sorted(files):
        if not p.stem.endswith("_mask"):
            out.setdefault(p.stem, p)
    return out


def read_mvtec(root: str | Path, problems: ReadProblems | None = None) -> Dataset:
    """Read an MVTec-style folder into a :class:`Dataset` (train, val, test in that order);
    an image or mask that is a link out of the folder is a problem (``problems``)."""
    problems = strict(problems)
    root = Path(root)
    if not root.exists():
        raise InputError(root, "folder not found")
    if not root.is_dir():
        raise InputError(root, "not a folder (expected MVTec-style train/, test/, ground_truth/)")
    if not looks_like_mvtec(root):
        raise InputError(root, "no MVTec-style layout (looked for train/<label>/ or test/<label>/ folders with images)")
    gt = root / "ground_truth"
    samples: list[Sample] = []
    for split in SPLITS:
        d = root / split
        if not d.is_dir():
            continue
        labels = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        # good first, as in MVTec listings
        labels.sort(key=lambda lab: lab != GOOD)
        for label in labels:
            masks = {}
            if label != GOOD or (gt / split / label).is_dir() or (gt / label).is_dir():
                masks = _mask_index(gt / label)
                masks.update(_mask_index(gt / split / label))
            for img in list_images(d / label):
                mask = masks.get(img.stem)
                if problems.outside(img, (root,), img, "image") or (
                        mask is not None and problems.outside(mask, (root,), mask, "mask")):
                    continue
                samples.append(Sample(label=label, split=split, path=img, mask_path=mask))
    return Dataset(samples, root=root, format="mvtec", read_problems=problems.items)


def mvtec_place(sample: Sample) -> tuple[str, str]:
    """``(split folder, label folder)`` of ``sample`` in the anomalib layout: only good
    images of the train split stay in ``train/good``; every other image (defects of any
    split, good images of val/test) goes to ``test/<label>``."""
    if sample.split == "train" and not sample.is_defect:
        return "train", GOOD
    return "test", sample.label


def write_mvtec(dataset: Dataset, dst: str | Path, overwrite: bool = False) -> Path:
    """Write ``dataset`` as an MVTec AD folder at ``dst`` (the layout anomalib's ``MVTecAD``
    and ``Folder`` datamodules read) and return ``dst``.

    - ``train/good/``: the good images of the train split, and nothing else;
    - ``test/good/``, ``test/<type>/``: every other image (MVTec has no val split and
      never trains on defects, so val images and train defects land here);
    - ``ground_truth/<type>/<stem>.png``: one 0/255 mask per ``test/<type>`` image, same
      stem. anomalib pairs masks with images by sorting both lists, so the names must
      sort alike (``<stem>_mask`` would not: ``a_1_mask`` < ``a_mask`` but ``a.png`` <
      ``a_1.png``). Good images get no mask; nor does a defect that has none (no label is
      made up: anomalib's ``MVTecAD`` then refuses the folder, its ``Folder`` datamodule
      without ``mask_dir`` reads it for classification).

    Every image is a PNG (anomalib's ``MVTecAD`` globs ``*.png`` only): PNG files are
    copied byte for byte, other files (JPEG, TIFF, ...) and arrays are written as PNGs of
    their decoded pixels; names are kept unique per label.
    Built in a temporary folder and moved into place at the end; a non-empty ``dst`` is
    refused unless ``overwrite``.
    """
    dst = Path(dst)
    with staged_dir(dst, overwrite, (dataset.root,)) as tmp:
        used_by_label: dict[str, set[str]] = {}
        for s in dataset:
            split, label = mvtec_place(s)
            used = used_by_label.setdefault(label, set())  # unique per label across splits
            name = unique_name(s.name, ".png", used)
            if image_suffix(s) == ".png":
                export_image(s, tmp / split / label / name)  # PNG bytes copied as they are
            else:
                write_image(tmp / split / label / name, s.image)  # decoded pixels, losslessly
            if s.is_defect:
                m = s.mask
                if m is not None:
                    export_mask(m, tmp / "ground_truth" / label / f"{Path(name).stem}.png")
    return dst

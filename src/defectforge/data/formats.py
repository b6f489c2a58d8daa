"""Which dataset format a path holds, and one entry point to load any of them.

Detection order (first match wins):

1. ``manifest``: a ``.csv`` file, or a folder with ``split.csv`` / ``manifest.csv``
   (so ``shared/datasets/bsdata`` is a manifest dataset);
2. ``coco``: a COCO ``.json`` file, or a folder with ``annotations/*.json`` (or ``*.json``)
   holding ``images``;
3. ``labelme``: a labelme ``.json`` file, or a folder of labelme ``*.json`` files;
4. ``yolo``: a folder with ``data.yaml`` or ``labels/`` + ``images/<split>/``;
5. ``mvtec``: a folder with ``train/<label>/`` or ``test/<label>/`` image folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from defectforge.data.problems import ReadProblems
from defectforge.data.sample import Dataset
from defectforge.errors import InputError
from defectforge.registry import Registry

FORMATS = ("mvtec", "manifest", "labelme", "yolo", "coco")

_LOOKED_FOR = ("a manifest (.csv file, or split.csv / manifest.csv in the folder), "
               "COCO (annotations/*.json or *.json with 'images'), labelme (*.json with 'shapes'), "
               "YOLO (data.yaml, or labels/ with images/<split>/), "
               "MVTec (train/<label>/ or test/<label>/ with images)")


def detect_format(path: str | Path) -> str:
    """``"mvtec" | "manifest" | "labelme" | "yolo" | "coco"`` for ``path``.

    Raises :class:`InputError` for a missing path or an unknown layout, listing what
    was looked for. :func:`format_choice` also says why, when the choice was not obvious.
    """
    return format_choice(path)[0]


def format_choice(path: str | Path) -> tuple[str, str]:
    """``(format, note)``: the detected format and, when a folder matches a manifest and
    another layout, which one was chosen and why (else ``""``).

    A manifest whose listed files are not there (e.g. bare file names in a ``manifest.csv``
    beside MVTec ``train/`` / ``test/`` folders) loses to the other layout.
    """
    p = Path(path)
    fmt = _detect(p)
    if fmt != "manifest" or not p.is_dir():
        return fmt, ""
    from defectforge.data.manifest import find_manifest

    other = _detect(p, skip_manifest=True)
    if other is None:
        return fmt, ""
    csv_path = find_manifest(p)
    found, listed = _manifest_files_found(csv_path)
    if listed and found == 0:
        return other, (f"{csv_path.name} lists {listed} file(s) that are not under {p} (first rows checked); "
                       f"read as {other} instead (pass --format manifest to force the manifest)")
    return fmt, (f"the folder also looks like {other}; read {csv_path.name} as a manifest "
                 f"(pass --format {other} for the other layout)")


def _manifest_files_found(csv_path: Path, limit: int = 20) -> tuple[int, int]:
    """``(found, listed)`` over the first ``limit`` rows' ``file`` cells (paths relative to the CSV)."""
    import csv

    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = csv.DictReader(fh)
            cells = [r.get("file") for _, r in zip(range(limit), rows)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0, 0
    cells = [c for c in cells if c]
    return sum((csv_path.parent / c).is_file() for c in cells), len(cells)


def _detect(p: Path, skip_manifest: bool = False) -> str | None:
    """The first matching format of the detection order (``None`` for a folder that matches
    nothing when ``skip_manifest``; :class:`InputError` otherwise)."""
    from defectforge.data._files import read_json
    from defectforge.data.coco import coco_files, is_coco_file
    from defectforge.data.labelme import is_labelme_file, looks_labelme
    from defectforge.data.manifest import find_manifest
    from defectforge.data.mvtec import looks_like_mvtec
    from defectforge.data.yolo import looks_like_yolo

    p = Path(p)
    if not p.exists():
        raise InputError(p, "path not found")
    if p.is_file():
        suf = p.suffix.lower()
        if suf == ".csv":
            return "manifest"
        if suf == ".json":
            if is_coco_file(p):
                return "coco"
            if is_labelme_file(p):
                return "labelme"
            _check_json(p)
            raise InputError(p, "JSON is neither COCO (needs 'images' and 'annotations'/'categories') "
                                "nor labelme (needs 'shapes' and 'imagePath')")
        if suf in (".yaml", ".yml") and looks_like_yolo(p.parent):
            return "yolo"
        raise InputError(p, f"unknown dataset file type {suf or '(no suffix)'!r}; looked for {_LOOKED_FOR}")
    if not skip_manifest and find_manifest(p) is not None:
        return "manifest"
    if coco_files(p):
        return "coco"
    jsons = sorted(q for q in p.glob("*.json") if not q.name.startswith(".") and q.is_file())
    broken = None  # the first *.json that does not parse: named when nothing else matches
    for q in jsons:
        try:
            data = read_json(q)
        except InputError as exc:
            broken = broken or exc
            continue
        if looks_labelme(data):
            return "labelme"
        break  # the first JSON that parses decides (not labelme: the folder is not labelme)
    if looks_like_yolo(p):
        return "yolo"
    if looks_like_mvtec(p):
        return "mvtec"
    if skip_manifest:
        return None
    if broken is not None:
        raise InputError(broken.path, f"{broken.problem} (while detecting the dataset layout of {p})")
    raise InputError(p, f"unknown dataset layout; looked for {_LOOKED_FOR}")


def _check_json(p: Path) -> None:
    """Raise the precise JSON syntax error, if there is one."""
    from defectforge.data._files import read_json

    read_json(p)


def load_dataset(path: str | Path, format: str | None = None, *, allow_outside_root: bool = False,
                 problems: ReadProblems | None = None) -> Dataset:
    """Load a dataset of any supported format (detected unless ``format`` is given).

    Broken labels and files outside the dataset folder raise :class:`InputError` naming the
    file; ``allow_outside_root`` accepts the latter; a collecting ``problems``
    (``ReadProblems(collect=True)``, what ``data check`` uses) lists both in
    ``Dataset.read_problems`` instead (see :mod:`defectforge.data.problems`)."""
    problems = problems if problems is not None else ReadProblems(allow_outside_root=allow_outside_root)
    p = Path(path)
    fmt = format or detect_format(p)
    if fmt not in FORMATS:
        raise InputError(p, f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if not p.exists():
        raise InputError(p, "path not found")
    if fmt == "manifest":
        from defectforge.data.manifest import read_manifest

        return read_manifest(p, problems)
    if fmt == "mvtec":
        from defectforge.data.mvtec import read_mvtec

        return read_mvtec(p, problems)
    if fmt == "coco":
        from defectforge.data.coco import read_coco

        return read_coco(p, problems=problems)
    if fmt == "yolo":
        from defectforge.data.yolo import read_yolo

        return read_yolo(p.parent if p.is_file() else p, problems)
    from defectforge.data.labelme import read_labelme, read_labelme_folder

    if p.is_file():
        one = read_labelme(p, problems=problems)
        return Dataset([one] if one is not None else [], root=p.parent, format="labelme",
                       read_problems=problems.items)
    return read_labelme_folder(p, problems=problems)


#: format name -> writer ``(dataset, dst, overwrite, mode) -> Path``; plug-ins register more
#: (``@EXPORT_FORMATS.register("name")`` or the entry-point group ``defectforge.export_formats``).
EXPORT_FORMATS: Registry[Callable[..., Path]] = Registry("export format", builtin=(__name__,),
                                                         entry_points="defectforge.export_formats")


def write_dataset(dataset: Dataset, dst: str | Path, format: str, overwrite: bool = False,
                  mode: str | None = None) -> Path:
    """Write ``dataset`` to ``dst`` in ``format`` (``mode``: yolo detect|segment, coco polygon|rle)."""
    if format not in EXPORT_FORMATS:
        raise InputError(Path(dst), f"cannot write format {format!r} (choose from {', '.join(EXPORT_FORMATS)})")
    return EXPORT_FORMATS.get(format)(dataset, dst, overwrite=overwrite, mode=mode)


@EXPORT_FORMATS.register("mvtec")
def _write_mvtec(dataset: Dataset, dst: str | Path, overwrite: bool = False, mode: str | None = None) -> Path:
    from defectforge.data.mvtec import write_mvtec

    return write_mvtec(dataset, dst, overwrite=overwrite)


@EXPORT_FORMATS.register("manifest")
def _write_manifest(dataset: Dataset, dst: str | Path, overwrite: bool = False, mode: str | None = None) -> Path:
    from defectforge.data.manifest import export_manifest

    return export_manifest(dataset, dst, overwrite=overwrite)


@EXPORT_FORMATS.register("yolo")
def _write_yolo(dataset: Dataset, dst: str | Path, overwrite: bool = False, mode: str | None = None) -> Path:
    from defectforge.data.yolo import write_yolo

    return write_yolo(dataset, dst, mode=mode or "segment", overwrite=overwrite)


@EXPORT_FORMATS.register("coco")
def _write_coco(dataset: Dataset, dst: str | Path, overwrite: bool = False, mode: str | None = None) -> Path:
    from defectforge.data.coco import write_coco

    return write_coco(dataset, dst, mode=mode or "rle", overwrite=overwrite)


@EXPORT_FORMATS.register("labelme")
def _write_labelme(dataset: Dataset, dst: str | Path, overwrite: bool = False, mode: str | None = None) -> Path:
    from defectforge.data.labelme import write_labelme

    return write_labelme(dataset, dst, overwrite=overwrite)

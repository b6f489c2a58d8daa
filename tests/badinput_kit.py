"""Small builders shared by the bad-input tests (``tests/test_badinput_*.py``).

Every dataset here is a few 24x32 images, generated per test, so the whole bad-input corpus
stays fast. The assertions are the three outcomes a bad input may have: a one-line
``error: <file>: <problem>`` with exit code 2, ``data check`` listing the problem with exit
code 1, or a correct result.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from defectforge.cli import app
from defectforge.data import write_image, write_mask

H, W = 24, 32
runner = CliRunner()


def image(path: Path, seed: int = 0, hw: tuple[int, int] = (H, W)) -> Path:
    rng = np.random.default_rng(seed)
    return write_image(path, rng.integers(0, 256, (*hw, 3), dtype=np.uint8))


def mask(path: Path, box: tuple[int, int, int, int] | None = (4, 5, 12, 14), hw: tuple[int, int] = (H, W)) -> Path:
    m = np.zeros(hw, bool)
    if box is not None:
        y0, x0, y1, x1 = box
        m[y0:y1, x0:x1] = True
    return write_mask(path, m)


def manifest(root: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("file", "split", "label", "mask"),
             name: str = "split.csv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return root / name


def small_manifest(root: Path, n_good: int = 2, n_defect: int = 2, split: str = "test") -> Path:
    """``n_good`` good and ``n_defect`` defect ('dent') images with masks, in one split."""
    rows = []
    for i in range(n_good):
        image(root / "images" / f"g{i}.png", seed=i)
        rows.append((f"images/g{i}.png", split, "good", ""))
    for i in range(n_defect):
        image(root / "images" / f"d{i}.png", seed=100 + i)
        mask(root / "masks" / f"d{i}.png")
        rows.append((f"images/d{i}.png", split, "dent", f"masks/d{i}.png"))
    return manifest(root, rows)


def coco(root: Path, images: list[dict], annotations: list[dict], categories: list[dict] | None = None) -> Path:
    """``root/annotations/instances_train.json``; images listed must exist under ``root/images/train``."""
    for im in images:
        p = root / "images" / "train" / str(im["file_name"])
        if ".." not in str(im["file_name"]) and not p.exists():
            image(p)
    doc = {"images": images, "annotations": annotations,
           "categories": categories if categories is not None else [{"id": 1, "name": "dent"}]}
    p = root / "annotations" / "instances_train.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc))
    return p


def yolo(root: Path, label_text: str, names: list[str] = ("dent",)) -> Path:
    """One image ``images/train/a.png`` with ``labels/train/a.txt`` = ``label_text``."""
    image(root / "images" / "train" / "a.png")
    image(root / "images" / "train" / "b.png", seed=3)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train" / "a.txt").write_text(label_text)
    (root / "data.yaml").write_text(json.dumps({"train": "images/train", "names": list(names)}))
    return root / "labels" / "train" / "a.txt"


def labelme(folder: Path, points: list, image_path: str = "a.png", make_image: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if make_image:
        image(folder / image_path)
    p = folder / (Path(image_path).stem + ".json")
    p.write_text(json.dumps({"version": "5.0.0", "flags": {}, "imagePath": image_path, "imageData": None,
                             "imageHeight": H, "imageWidth": W,
                             "shapes": [{"label": "dent", "points": points, "shape_type": "polygon"}]}))
    return p


def invoke(*args: str | Path, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def one_line_error(res, *needles: str) -> str:
    """Exit 2, no traceback, and exactly one line ``error: ...`` (the last on stderr; progress
    bars that a command drew before may precede it) containing every needle."""
    out = res.output
    assert res.exit_code == 2, f"exit {res.exit_code}: {out}\n{res.exception!r}"
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and lines and lines[-1] == errors[0], out
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def check_lists(path: Path, *needles: str, tmp: Path | None = None, extra: tuple[str, ...] = ()) -> list[dict]:
    """``data check`` exits 1 and lists a problem whose file+text contains every needle."""
    tmp = tmp or path.parent
    js = tmp / f"check-{path.name}.json"
    res = invoke("data", "check", path, "--json", js, *extra)
    assert res.exit_code == 1, f"exit {res.exit_code}: {res.output}\n{res.exception!r}"
    problems = json.loads(js.read_text())["problems"]
    hits = [p for p in problems if all(n in p["file"] + ": " + p["problem"] for n in needles)]
    assert hits, (needles, problems)
    js.unlink()
    return hits


def png_claiming(path: Path, width: int, height: int, mode: int = 0) -> Path:
    """A ~100-byte PNG whose header claims ``width x height`` pixels (grey, 8 bit): a
    decompression bomb as far as any reader that trusts the header is concerned."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def fit_tiny_model(folder: Path) -> Path:
    """A detector fitted on 4 good 24x32 images (random backbone, 32x32 input): ``folder/m.dfm``."""
    root = small_manifest(folder / "train", 4, 0, split="train").parent
    res = invoke("detect", "fit", root, "--out", folder / "m.dfm", "--random-init", "--image-size", "32x32")
    assert res.exit_code == 0, res.output
    return folder / "m.dfm"

"""Exports read back against the layout rules of the libraries they are made for.

anomalib (2.x) ``MVTecAD`` / ``Folder`` and ultralytics (8.x) are too large for CI; the rules
below restate their documented layouts, and docs/interop.md records a run of both libraries
on the bundled sample's exports. The rules (in our words):

- anomalib MVTec: every ``*.png`` under the category folder is ``<split>/<label>/<file>``;
  ``split`` is ``train``, ``test`` or ``ground_truth``; ``label == "good"`` is normal, anything
  else abnormal; abnormal images exist only under ``test/``; the sorted ``ground_truth`` paths
  are assigned one to one to the sorted abnormal test paths, and each image stem must occur
  in its mask's stem.
- ultralytics: ``data.yaml`` has ``train:`` and ``val:`` (``test:`` optional) resolved from the
  yaml's folder (no ``path:``), ``names`` with ``nc == len(names)``; the labels of
  ``.../images/<x>.jpg`` are in ``.../labels/<x>.txt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_data_helpers import make_dataset

from defectforge.data import Dataset, Sample, read_mvtec, read_yolo, write_mvtec, write_yolo
from defectforge.data.image_io import IMAGE_SUFFIXES


def anomalib_mvtec_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``[(abnormal test image, mask)]`` as anomalib's MVTecAD pairs them; AssertionError on a
    layout it would reject or mis-pair."""
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    assert all(p.suffix == ".png" for p in files), "MVTecAD globs *.png only"
    rows = []
    for p in files:
        rel = p.relative_to(root).parts
        assert len(rel) == 3, f"{p}: not <split>/<label>/<file>"
        assert rel[0] in ("train", "test", "ground_truth"), f"{p}: unknown split folder {rel[0]!r}"
        rows.append((str(root / rel[0] / rel[1] / rel[2]), rel))
    abnormal = sorted(s for s, r in rows if r[0] != "ground_truth" and r[1] != "good")
    assert all(Path(s).parts[-3] == "test" for s in abnormal), "abnormal images outside test/"
    masks = sorted(s for s, r in rows if r[0] == "ground_truth")
    assert len(masks) == len(abnormal), f"{len(masks)} masks for {len(abnormal)} abnormal test images"
    pairs = [(Path(a), Path(m)) for a, m in zip(abnormal, masks)]
    for a, m in pairs:
        assert a.stem in m.stem, f"{a.name} paired with {m.name}"
    return pairs


def ultralytics_splits(yml: Path) -> dict[str, list[tuple[Path, Path]]]:
    """``{split key: [(image, label file)]}`` as ultralytics resolves ``data.yaml``."""
    spec = yaml.safe_load(yml.read_text(encoding="utf-8"))
    assert "train" in spec and "val" in spec, "'train' and 'val' are required"
    assert "path" not in spec or Path(spec["path"]).is_absolute()
    names = spec["names"]
    assert spec.get("nc", len(names)) == len(names)
    base = Path(spec.get("path") or yml.parent)
    out = {}
    for key in ("train", "val", "test"):
        if key not in spec:
            continue
        d = base / spec[key]
        assert d.is_dir(), f"{key}: {d} missing"
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        assert imgs, f"{key}: no images in {d}"
        pairs = []
        for p in imgs:
            s = str(p)
            i = s.rfind("/images/")
            lab = Path(s[:i] + "/labels/" + s[i + len("/images/"):]).with_suffix(".txt")
            assert lab.is_file(), f"no label file for {p}"
            pairs.append((p, lab))
        out[key] = pairs
    return out


def test_mvtec_export_follows_anomalib_layout(tmp_path):
    ds = make_dataset(tmp_path)
    # names whose "<stem>_mask" forms would sort unlike the images ("a_1_mask" < "a_mask")
    m = np.zeros((12, 16), bool)
    m[3:6, 4:9] = True
    img = np.full((12, 16, 3), 90, np.uint8)
    extra = [Sample("dent", "train", image_array=img, mask_array=m, meta={"name": n}) for n in ("a", "a_1", "a1")]
    extra.append(Sample("good", "val", image_array=img, meta={"name": "v"}))
    out = write_mvtec(Dataset(list(ds) + extra), tmp_path / "cat")
    pairs = anomalib_mvtec_pairs(out)
    assert len(pairs) == sum(s.is_defect for s in ds) + 3
    assert sorted(p.name for p in (out / "train" / "good").iterdir()) == ["g1.png", "g2.png", "g3.png"]
    assert (out / "test" / "good" / "v.png").is_file()  # val images go to test (MVTec has no val)
    back = {(s.label, s.name): s for s in read_mvtec(out)}
    for a, mk in pairs:  # the mask anomalib pairs is the one we wrote for that image
        s = back[(a.parent.name, a.stem)]
        assert s.mask_path == mk


def test_yolo_data_yaml_has_val_and_never_uses_test(tmp_path):
    ds = make_dataset(tmp_path)  # train + test, no val
    out = write_yolo(ds, tmp_path / "y", mode="detect")
    text = (out / "data.yaml").read_text()
    splits = ultralytics_splits(out / "data.yaml")
    assert set(splits) == {"train", "val", "test"}
    assert [p for p, _ in splits["val"]] == [p for p, _ in splits["train"]]  # val falls back to train
    assert "never the test images" in text
    n_test = sum(s.split == "test" for s in ds)
    assert len(splits["test"]) == n_test
    # with a real val split, val: names it
    val = [s.with_(split="val") if s.name in ("g2", "d1") else s for s in ds]
    out2 = write_yolo(Dataset(val), tmp_path / "y2", mode="segment")
    sp2 = ultralytics_splits(out2 / "data.yaml")
    assert sorted(p.stem for p, _ in sp2["val"]) == ["d1", "g2"]
    assert read_yolo(out2).counts() == Dataset(val).counts()


def test_yolo_data_yaml_without_train_split(tmp_path):
    ds = make_dataset(tmp_path)
    out = write_yolo(Dataset([s for s in ds if s.split == "test"]), tmp_path / "t")
    sp = ultralytics_splits(out / "data.yaml")
    assert [p for p, _ in sp["train"]] == [p for p, _ in sp["test"]]  # points at existing folders only


@pytest.mark.parametrize("fmt", ["mvtec", "yolo"])
def test_synth_export_uses_the_same_writers(tmp_path, fmt):
    from defectforge.synth2d.export import export

    ds = make_dataset(tmp_path)
    got = export(ds, tmp_path / "exp", fmt)
    if fmt == "mvtec":
        anomalib_mvtec_pairs(Path(got["mvtec"]))
    else:
        ultralytics_splits(Path(got["yolo"]) / "data.yaml")
        ultralytics_splits(Path(got["yolo_seg"]) / "data.yaml")

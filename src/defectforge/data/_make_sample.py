"""Build the bundled BSData subset ``defectforge/assets/bsdata_sample/`` (reproducible).

Run from the repository root::

    .venv/bin/python -m defectforge.data._make_sample [--src ../shared/datasets/bsdata] [--dst ...]

Selection (deterministic, no randomness): rows of BSData's ``split.csv`` keep their split
and label. Pitting images are spread over the wear sequences (``group``): the picks are
dealt round-robin over the groups (sorted by name), and inside a group they are evenly
spaced in time (file-name order). Good images are evenly spaced over the split's good
rows in file-name order. Images are copied byte for byte, masks copied as they are; the
manifest rows are BSData's own rows (same columns). If the subset would exceed the size
budget, good images are dropped (from the evenly spaced list, test first) until it fits.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
from pathlib import Path

from defectforge._atomic import atomic_write_bytes, atomic_write_text

PICKS = {("train", "good"): 40, ("train", "pitting"): 10, ("test", "good"): 20, ("test", "pitting"): 20}
BUDGET_BYTES = 4_900_000  # strictly under 5 MB with room for the text files
DEFAULT_SRC = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "bsdata"
DEFAULT_DST = Path(__file__).resolve().parents[1] / "assets" / "bsdata_sample"
SOURCE_COMMIT = "7204b28a621733c01cd75899ed9ea27f6ea0b9e3"

README = """# BSData sample (bundled subset)

A small subset of **BSData**, real photographs of ball-screw-drive spindles with
surface **pitting**, bundled so that examples and tests run without the full dataset.

| split | good | pitting |
| --- | --- | --- |
{table}

- Files: `images/*.jpg` (byte-for-byte copies of the source JPEGs, 1130x460),
  `masks/*.png` (binary 0/255 masks of the labelme polygons), `split.csv`
  (`file,split,label,mask,width,height,group`, the rows of the full split).
- Every image keeps the split side it has in the full split (`train` pitting images come
  from train wear sequences only). Pitting images are spread over {n_groups} wear sequences.
- Chosen deterministically by `src/defectforge/data/_make_sample.py` (see its docstring).

## Source and license

- Source: the public BSData repository, https://github.com/2Obe/BSData,
  commit {commit}.
- Paper: T. Schlagenhauf, M. Landwehr, "Industrial machine tool component surface defect
  dataset", Data in Brief 39 (2021) 107643, doi:10.1016/j.dib.2021.107643.
- License: **Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0)**,
  full text in `LICENSE`. This subset (images, masks and the manifest derived from the
  labels) is shared under the same license, CC BY-SA 4.0. Changes: selection of a subset
  of images; masks rasterised from the labelme polygons.
- The rest of defectforge is under its own license; this folder is not.
"""


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices evenly spaced over ``range(n)``."""
    k = min(k, n)
    return [min(n - 1, int((j + 0.5) * n / k)) for j in range(k)]


def select(rows: list[dict[str, str]], picks: dict[tuple[str, str], int] = PICKS) -> dict[tuple[str, str], list[dict[str, str]]]:
    """The chosen rows per (split, label), in a deterministic order."""
    out: dict[tuple[str, str], list[dict[str, str]]] = {}
    for (split, label), k in picks.items():
        pool = sorted((r for r in rows if r["split"] == split and r["label"] == label), key=lambda r: r["file"])
        if label == "good":
            out[(split, label)] = [pool[i] for i in _spread(len(pool), k)]
            continue
        groups: dict[str, list[dict[str, str]]] = {}
        for r in pool:
            groups.setdefault(r["group"], []).append(r)
        names = sorted(groups)
        quota = {g: 0 for g in names}  # deal round-robin, skipping exhausted groups
        j = 0
        while sum(quota.values()) < min(k, len(pool)):
            g = names[j % len(names)]
            if quota[g] < len(groups[g]):
                quota[g] += 1
            j += 1
        chosen = []
        for g in names:
            chosen += [groups[g][i] for i in _spread(len(groups[g]), quota[g])]
        out[(split, label)] = sorted(chosen, key=lambda r: r["file"])
    return out


def _size(src: Path, chosen: dict[tuple[str, str], list[dict[str, str]]]) -> int:
    total = (src / "LICENSE").stat().st_size + 4096  # README and split.csv
    for rows in chosen.values():
        for r in rows:
            total += (src / r["file"]).stat().st_size + 200
            if r["mask"]:
                total += (src / r["mask"]).stat().st_size
    return total


def build(src: Path = DEFAULT_SRC, dst: Path = DEFAULT_DST, budget: int = BUDGET_BYTES) -> Path:
    """Write the subset to ``dst`` (replacing it) and return ``dst``."""
    src, dst = Path(src), Path(dst)
    with open(src / "split.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    picks = dict(PICKS)
    chosen = select(rows, picks)
    while _size(src, chosen) > budget:
        key = ("test", "good") if picks[("test", "good")] * 2 > picks[("train", "good")] else ("train", "good")
        picks[key] -= 1
        chosen = select(rows, picks)
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    order = [("train", "good"), ("train", "pitting"), ("test", "good"), ("test", "pitting")]
    out_rows = []
    for key in order:
        for r in chosen[key]:
            atomic_write_bytes(dst / r["file"], (src / r["file"]).read_bytes())
            if r["mask"]:
                atomic_write_bytes(dst / r["mask"], (src / r["mask"]).read_bytes())
            out_rows.append(r)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(out_rows)
    atomic_write_text(dst / "split.csv", buf.getvalue())
    shutil.copyfile(src / "LICENSE", dst / "LICENSE")
    table = "\n".join(f"| {sp} | {len(chosen[(sp, 'good')])} | {len(chosen[(sp, 'pitting')])} |" for sp in ("train", "test"))
    n_groups = len({r["group"] for key in order if key[1] == "pitting" for r in chosen[key]})
    atomic_write_text(dst / "README.md", README.format(table=table, n_groups=n_groups, commit=SOURCE_COMMIT))
    return dst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--dst", type=Path, default=DEFAULT_DST)
    args = ap.parse_args(argv)
    out = build(args.src, args.dst)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")  # script output, not library code


if __name__ == "__main__":
    main()

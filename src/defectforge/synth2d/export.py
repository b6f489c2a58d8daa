"""The end of a synthesis run: everything rebuilt from the journal, in index order, so the
bytes are the same however the run was split (workers, interruptions, resumes).

``manifest.csv`` (one row per accepted sample, :mod:`.record` metadata), the exports
(``export/mvtec``, ``export/yolo``, ``export/yolo_seg``, ``export/coco``, written by
:func:`defectforge.data.formats.write_dataset`), the dataset card and the HTML report. When
the source split has real defects with masks, the card and the report carry the realism
of the set against them (:func:`defectforge.filter.c2st.set_realism`: C2ST AUC with its
interval and real-vs-real floor, per generator, KID and PRDC on the same crops).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from defectforge.data.sample import Dataset
from defectforge.errors import ConfigError
from defectforge.runfolder import RunFolder
from defectforge.synth2d.record import SynthRecord

# export format -> [(folder under export/, write_dataset format, mode)]
EXPORTS: dict[str, list[tuple[str, str, str | None]]] = {
    "mvtec": [("mvtec", "mvtec", None)],
    "yolo": [("yolo", "yolo", "detect"), ("yolo_seg", "yolo", "segment")],
    "coco": [("coco", "coco", "rle")],
}


def export(ds: Dataset, root: Path, fmt: str) -> dict[str, str]:
    """Write the exports of format ``fmt`` under ``root`` (replacing older ones)."""
    from defectforge.data.formats import write_dataset

    if fmt not in EXPORTS:
        raise ConfigError(f"unknown export format {fmt!r} (choose from {', '.join(EXPORTS)})")
    return {name: str(write_dataset(ds, root / name, f, overwrite=True, mode=mode)) for name, f, mode in EXPORTS[fmt]}


def write_outputs(run: Any, rf: RunFolder, cfg: Any, recs: list[SynthRecord], total: int, facts: dict[str, Any],
                  gallery: int) -> None:
    """Canonical journal, manifest, exports, card and report of a finished run; fills ``run``."""
    from defectforge.data.manifest import write_manifest
    from defectforge.synth2d.card import write_card

    out = rf.path
    rf.journal.rewrite([r.to_journal() for r in recs])  # index order: resumed == straight run
    samples = [r.to_sample(out) for r in recs if r.ok]
    run.samples = samples
    run.failed = sum(r.status == "failed" for r in recs)
    rej: Counter = Counter()
    for r in recs:
        rej.update(r.rejects)
    run.rejected = dict(sorted(rej.items()))
    write_manifest(Dataset(samples, root=out, format="manifest"), out / "manifest.csv")
    exp_ds = Dataset(samples, root=None, format="manifest")  # exports live inside out/: no source overlap check
    for fmt in cfg.formats:
        run.exports.update(export(exp_ds, out / "export", fmt))
    realism = None
    from defectforge.synth2d.gallery import real_defects

    real = real_defects(run)
    if real and samples:
        from defectforge.filter.c2st import set_realism

        realism = set_realism(real, samples, seed=cfg.seed)
    write_card(out, cfg, [r.to_journal() for r in recs], total, facts, run, realism)
    if gallery:
        from defectforge.synth2d.gallery import write_report

        write_report(out, samples[:gallery], run, realism)

"""The end of a synthesis run: everything rebuilt from the journal, in index order, so the
bytes are the same however the run was split (workers, interruptions, resumes).

``manifest.csv`` (one row per accepted sample not rejected in review, :mod:`.record` metadata), the exports
(``export/mvtec``, ``export/yolo``, ``export/yolo_seg``, ``export/coco``, written by
:func:`defectforge.data.formats.write_dataset`), the dataset card and the HTML report. When
the source split has real defects with masks, the card and the report carry the realism
of the (review-accepted) set against them (:func:`defectforge.filter.c2st.set_realism`: C2ST
AUC with its interval and real-vs-real floor, per generator, KID and PRDC on the same crops).

Review decisions (``.synth/review.json``, ``{index: "accepted" | "rejected"}``, written by the
studio's Review page) are honoured here: rejected samples stay in the journal and on disk but
leave the manifest and the exports, so every reader (``detect fit --synthetic``,
``train-detector --synthetic``, ``filter``) skips them, also after a rerun or resume.
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


REVIEW = "review.json"


def review_decisions(state_dir: Path) -> dict[str, str]:
    """The review decisions of a run (``{str(index): decision}``; empty when none)."""
    import json

    p = Path(state_dir) / REVIEW
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        from defectforge.errors import InputError

        raise InputError(p, "review decisions are not valid JSON") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_listing(out: Path, state_dir: Path, recs: list[SynthRecord], formats: list[str]) -> tuple[list[Any], dict[str, str]]:
    """``manifest.csv`` and the exports of the accepted, not review-rejected records; returns
    the samples listed."""
    from defectforge.data.manifest import write_manifest

    rejected = {k for k, v in review_decisions(state_dir).items() if v == "rejected"}
    samples = [r.to_sample(out) for r in recs if r.ok and str(r.index) not in rejected]
    write_manifest(Dataset(samples, root=out, format="manifest"), out / "manifest.csv")
    exp_ds = Dataset(samples, root=None, format="manifest")  # exports live inside out/: no source overlap check
    exports: dict[str, str] = {}
    for fmt in formats:
        exports.update(export(exp_ds, out / "export", fmt))
    return samples, exports


def export(ds: Dataset, root: Path, fmt: str) -> dict[str, str]:
    """Write the exports of format ``fmt`` under ``root`` (replacing older ones)."""
    from defectforge.data.formats import write_dataset

    if fmt not in EXPORTS:
        raise ConfigError(f"unknown export format {fmt!r} (choose from {', '.join(EXPORTS)})")
    return {name: str(write_dataset(ds, root / name, f, overwrite=True, mode=mode)) for name, f, mode in EXPORTS[fmt]}


def write_outputs(run: Any, rf: RunFolder, cfg: Any, recs: list[SynthRecord], total: int, facts: dict[str, Any],
                  gallery: int) -> None:
    """Canonical journal, manifest, exports, card and report of a finished run; fills ``run``."""
    from defectforge.synth2d.card import write_card

    out = rf.path
    rf.journal.rewrite([r.to_journal() for r in recs])  # index order: resumed == straight run
    samples, exports = write_listing(out, rf.state_dir, recs, list(cfg.formats))
    run.samples = samples
    run.exports.update(exports)
    run.failed = sum(r.status == "failed" for r in recs)
    rej: Counter = Counter()
    for r in recs:
        rej.update(r.rejects)
    run.rejected = dict(sorted(rej.items()))
    realism = None
    from defectforge.synth2d.gallery import real_defects, source_dataset

    source = source_dataset(run)  # read once: real defects, host scenes, report
    real = real_defects(run, source) if source is not None else []
    if real and samples:
        from defectforge.filter.c2st import set_realism, source_groups

        realism = set_realism(real, samples, seed=cfg.seed,  # synthetic crops grouped by their host's scene
                              host_groups=source_groups(source))
    write_card(out, cfg, [r.to_journal() for r in recs], total, facts, run, realism)
    if gallery:
        from defectforge.synth2d.gallery import write_report

        write_report(out, samples[:gallery], run, realism, real)

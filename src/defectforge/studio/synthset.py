"""Accepting studio previews into a synthetic set with the same layout as ``defectforge synth``.

A set is a folder with ``images/``, ``masks/``, the journal ``.synth/journal.jsonl``,
``manifest.csv``, ``dataset_card.{json,md}``, ``report.html`` and ``export/<format>``; all
written by :mod:`defectforge.synth2d.pipeline`'s own writers (one journal line per sample,
atomic files), so ``detect fit --synthetic`` and every reader take a studio set like a
``synth`` output. ``.synth/studio.json`` records the source, the generator specs used so far
and the export formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from defectforge._atomic import atomic_write_json
from defectforge.errors import InputError

STUDIO_CONFIG = "studio.json"


def accept(out: Path, rec: Any, source: dict[str, Any], formats: list[str]) -> dict[str, Any]:
    """Add the preview record ``rec`` (a :class:`~defectforge.synth2d.record.SynthRecord`
    from ``Engine.make(encode=True)``) to the set ``out``.

    ``source``: ``{"path", "split", "generator": {"name", "params"}, "real_defects"}``.
    Returns ``{"index", "file", "n"}``. Refuses a non-empty folder that is not a set, a set
    made from another dataset, and unknown export formats (before writing anything). The set
    is a :mod:`defectforge.runfolder` run folder (job ``studio-set``): locked while a sample
    is added, never overlapping the source dataset.
    """
    import dataclasses

    from defectforge.runfolder import RunFolder
    from defectforge.synth2d import pipeline as pl
    from defectforge.synth2d.config import FORMATS, SynthConfig
    from defectforge.synth2d.export import write_outputs

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(None, f"unknown export format(s) {bad} (choose from {', '.join(FORMATS)})")
    meta_p = out / pl.STATE / STUDIO_CONFIG
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not meta_p.is_file():
        raise InputError(out, "folder is not empty and is not a studio set; choose another set name")
    meta = json.loads(meta_p.read_text(encoding="utf-8")) if meta_p.is_file() else {
        "source": {"path": source["path"], "split": source["split"], "real_defects": bool(source["real_defects"])},
        "generators": []}
    if meta["source"]["path"] != source["path"]:
        raise InputError(out, f"this set holds samples made from {meta['source']['path']}; "
                              "choose another set for another dataset")
    spec = {"name": source["generator"]["name"], "params": source["generator"]["params"]}
    if spec not in meta["generators"]:
        meta["generators"].append(spec)
    meta["formats"] = list(formats)
    with RunFolder.open(out, job="studio-set", config={"source": meta["source"]}, state=pl.STATE,
                        inputs=[source["path"]], outputs=pl.OUR_OUTPUTS, adopt=meta_p.is_file()) as rf:
        done = pl.read_records(rf)
        index = max(done) + 1 if done else 0
        new = dataclasses.replace(rec, index=index, rejects=list(rec.rejects))
        pl.add_record(rf, new)
        done[index] = new
        atomic_write_json(meta_p, meta)
        cfg = SynthConfig(source={"path": meta["source"]["path"], "split": meta["source"]["split"],
                                  "real_defects": meta["source"]["real_defects"]},
                          generators=meta["generators"], n=len(done), formats=formats)
        facts = {"split": meta["source"]["split"], "good_images": len({d.source for d in done.values()}),
                 "real_defect_images": None, "made_with": "defectforge studio (one sample per accepted preview)"}
        run = pl.SynthRun(cfg, out)
        write_outputs(run, rf, cfg, [done[i] for i in sorted(done)], len(done), facts, gallery=12)
    from defectforge.studio.review import apply, decisions

    if decisions(out):  # keep earlier review decisions in the rebuilt manifest and exports
        apply(out, decisions(out))
    return {"index": index, "file": new.file or None, "n": len(run.samples)}

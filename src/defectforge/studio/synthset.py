"""Accepting studio previews into a synthetic set with the same layout as ``defectforge synth``.

A set is a run folder (:mod:`defectforge.runfolder`, job ``studio-set``, state in ``.synth``)
with ``images/``, ``masks/``, the journal, ``manifest.csv``, ``dataset_card.{json,md}``,
``report.html`` and ``export/<format>``, all written by the synth pipeline's own pieces
(:class:`~defectforge.synth2d.record.SynthRecord`, ``read_records`` / ``add_record``,
:func:`~defectforge.synth2d.export.write_outputs`), so ``detect fit --synthetic`` and every
reader take a studio set like a ``synth`` output. The run's identity (its fingerprint) is the
source dataset, split and real-defect use; ``.synth/studio.json`` lists the generator specs
and export formats used so far.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from defectforge._atomic import atomic_write_json
from defectforge.errors import ConfigError

JOB = "studio-set"
STUDIO_META = "studio.json"


def accept(out: Path, rec: Any, source: dict[str, Any], formats: list[str]) -> dict[str, Any]:
    """Add the preview record ``rec`` (a ``SynthRecord`` with PNG bytes) to the set ``out``.

    ``source``: ``{"path" (absolute), "split", "generator": {"name", "params"}, "real_defects"}``.
    Returns ``{"index", "file", "n"}``. A folder holding something else, a set made from another
    dataset, or an unknown export format is refused before anything is written.
    """
    from defectforge.runfolder import RunFolder
    from defectforge.studio.forms import FieldError
    from defectforge.synth2d.config import FORMATS, SynthConfig
    from defectforge.synth2d.export import write_outputs
    from defectforge.synth2d.pipeline import OUR_OUTPUTS, STATE, SynthRun, add_record, read_records

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise FieldError("formats", f"unknown export format(s) {bad} (choose from {', '.join(FORMATS)})")
    identity = {"source": {"path": source["path"], "split": source["split"],
                           "real_defects": bool(source["real_defects"])}}
    try:
        rf = RunFolder.open(out, job=JOB, config=identity, state=STATE, inputs=[source["path"]],
                            outputs=OUR_OUTPUTS, overwrite_flag=None)
    except ConfigError:
        raise FieldError("set", f"{out.name}: this set holds samples made from another dataset, split or "
                                "real-defect setting; choose another set") from None
    with rf:
        meta_p = rf.state_dir / STUDIO_META
        meta = json.loads(meta_p.read_text(encoding="utf-8")) if meta_p.is_file() else {"generators": []}
        spec = {"name": source["generator"]["name"], "params": source["generator"]["params"]}
        if spec not in meta["generators"]:
            meta["generators"].append(spec)
        meta["formats"] = sorted(set(formats))
        done = read_records(rf)
        new = dataclasses.replace(rec, index=max(done) + 1 if done else 0, rejects=list(rec.rejects))
        add_record(rf, new)
        done[new.index] = new
        atomic_write_json(meta_p, meta)
        cfg = SynthConfig(source=identity["source"], generators=meta["generators"], n=len(done),
                          formats=meta["formats"])
        facts = {"split": source["split"], "good_images": len({r.source for r in done.values()}),
                 "real_defect_images": None, "made_with": "defectforge studio (one sample per accepted preview)"}
        run = SynthRun(cfg, out)
        write_outputs(run, rf, cfg, [done[i] for i in sorted(done)], len(done), facts, gallery=12)  # honours review
    return {"index": new.index, "file": new.file, "n": len(run.samples)}


def formats_of(rf: Any) -> list[str]:
    """Export formats of a set or a synth run (``studio.json`` or the run's config)."""
    from defectforge.synth2d.pipeline import run_config

    meta_p = rf.state_dir / STUDIO_META
    if meta_p.is_file():
        return list(json.loads(meta_p.read_text(encoding="utf-8")).get("formats", []))
    return list(run_config(rf.path).get("formats", []))


def reopen(out: Path):
    """The run folder of an existing set or synth run, opened (locked) with its own job and
    config, so nothing else writes it meanwhile."""
    from defectforge.runfolder import RUN_FILE, RunFolder
    from defectforge.synth2d.pipeline import STATE

    run = json.loads((out / STATE / RUN_FILE).read_text(encoding="utf-8"))
    return RunFolder.open(out, job=run["job"], config=run["config"], state=STATE, outputs=run.get("outputs", ()),
                          overwrite_flag=None)

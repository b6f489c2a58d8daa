"""One typed synthetic-sample record, one metadata schema on disk and in memory."""

from __future__ import annotations

import json

import numpy as np

from defectforge.data.formats import load_dataset
from defectforge.datasets import load_sample
from defectforge.synth2d import generate_samples, parse_config, synthesize
from defectforge.synth2d.pipeline import read_records
from defectforge.synth2d.record import META_KEYS, SynthRecord


def test_disk_and_memory_samples_share_one_metadata_schema(tmp_path):
    ds = load_sample()
    goods = list(ds.filter(split="train", label="good"))[:3]
    reals = [s for s in ds.filter(split="train") if s.is_defect][:3]
    mem = generate_samples(goods, "pitting", 2, seed=0, real_defects=reals, roi="border")
    assert mem
    for s in mem:
        assert list(s.meta) == ["name", *META_KEYS]
        typed = SynthRecord.from_meta(s.meta)
        assert isinstance(typed["params"], dict) and typed["params"]["generator"] == "pitting"
        assert isinstance(typed["instance_boxes"], list) and len(typed["instance_boxes"]) == typed["instances"]
        assert all(isinstance(typed[k], float) for k in ("fill", "leak", "contrast"))
        assert typed["source_path"].endswith(tuple(".png .jpg .jpeg".split())) and typed["source"] == s.meta["source"]

    cfg = parse_config({"source": {"path": str(ds.root), "roi": "border"}, "generators": [{"name": "pitting"}],
                        "n": 2, "seed": 0})
    run = synthesize(cfg, tmp_path / "s", workers=1, gallery=0)
    recs = read_records(tmp_path / "s")
    on_disk = {int(s.meta["index"]): s for s in load_dataset(tmp_path / "s")}  # read back from manifest.csv
    assert sorted(on_disk) == sorted(i for i, r in recs.items() if r.ok) == [int(s.meta["index"]) for s in run.samples]
    for i, s in on_disk.items():
        assert list(s.meta)[:len(META_KEYS)] == list(META_KEYS)
        assert SynthRecord.from_meta(s.meta) == SynthRecord.from_meta(recs[i].meta())  # same values, same types
        assert SynthRecord.from_meta(s.meta) == SynthRecord.from_meta(run.samples[[int(x.meta["index"]) for x in
                                                                                   run.samples].index(i)].meta)


def test_record_round_trips_through_the_journal():
    r = SynthRecord(3, 123, "pitting", "pitting", "good1", "/d/good1.png", ["no change"], "ok", attempts=2,
                    params={"generator": "pitting", "n": 2}, qc={"fill": 0.5, "leak": 0.0, "contrast": 9.5,
                                                              "tau": 2.0, "instances": 1},
                    boxes=[[1, 2, 3, 4]], width=10, height=8, file="images/pitting_000003.png",
                    mask="masks/pitting_000003.png", file_size=10, mask_size=5, image=np.zeros((8, 10, 3), np.uint8))
    j = json.loads(json.dumps(r.to_journal()))
    back = SynthRecord.from_journal(j)
    assert back.to_journal() == r.to_journal() and back.stem == "pitting_000003"
    failed = SynthRecord(4, 1, "pitting", "pitting", "g", None, ["leak"] * 3, "failed")
    assert set(failed.to_journal()) == {"index", "seed", "generator", "label", "source", "source_path", "rejects",
                                        "status"}

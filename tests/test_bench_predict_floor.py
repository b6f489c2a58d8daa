"""bench/bench_predict_floor.py: the cluster-bound share it reports and the page it writes."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_predict_floor as bp  # noqa: E402


def _clusters(rng, centres, per, spread):
    return np.concatenate([c + spread * rng.standard_normal((per, centres.shape[1])) for c in centres]).astype(np.float32)


def test_prunable_skips_far_clusters_and_keeps_the_nearest():
    rng = np.random.default_rng(0)
    centres = 100.0 * np.eye(4, 8)  # four tight groups, 100 apart
    bank = _clusters(rng, centres, 50, 0.5)
    near = _clusters(rng, centres, 64, 0.5)  # queries inside the groups: only their own group can hold the nearest
    res = bp.prunable(bank, near, clusters=(4,))
    assert abs(res[4]["per_query"] - 0.25) < 1e-9
    # sorted by cluster, each block of 64 queries is one group's
    assert abs(res[4]["per_block_64"] - 0.25) < 1e-9
    # a query equidistant from every group (the origin) is bounded away from none
    mid = np.zeros((3, 8), np.float32)
    assert bp.prunable(bank, mid, clusters=(4,))[4]["per_query"] == 1.0


def test_page_states_the_floor_and_appends_the_notes(tmp_path):
    res = {"date": "2026-12-07 09:29 UTC", "machine": "test CPU", "n": 4, "threads": 2, "uptime_before": "u0",
           "uptime_after": "u1", "command": "python bench/bench_predict_floor.py --n 4",
           "models": {"exdd": {"fit_s": 35.0, "predict_ms": 55.0, "backbone_ms": 18.5,
                               "parts": {"resize + backbone + embedding": 18.5, "search, normal bank": 23.0},
                               "shape": [2528, 9151, 160], "product": {"bfloat16": 19.5, "float32": 56.0},
                               "prunable": {"256": {"per_query": 0.43, "per_block_64": 0.75}}}}}
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "result.json").write_text(json.dumps(res))
    notes = tmp_path / "notes.md"
    notes.write_text("## Reading\n\nhand-written reading\n")
    out = tmp_path / "page.md"
    bp.main(["--page-only", "--results", str(tmp_path / "results"), "--out", str(out), "--notes", str(notes)])
    page = out.read_text()
    assert "**38.0 ms/image**" in page  # 18.5 + 19.5
    assert "| bfloat16 | 19.5 | 380 |" in page  # 2 x 2528 x 9151 x 160 flop in 19.5 ms
    assert "| 256 | 43% | 75% |" in page
    assert page.rstrip().endswith("hand-written reading")
    assert "`python bench/bench_predict_floor.py --n 4`" in page

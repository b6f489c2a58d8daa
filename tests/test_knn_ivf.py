"""The opt-in approximate search (``nn_backend="ivf[:N]"``): each query searches only its N
nearest clusters of the pruned index; never chosen by ``auto``."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.bank import knn
from defectforge.bank.knn import NearestNeighbors, check_backend
from defectforge.bank.knn_pruned import PrunedIndex
from defectforge.errors import ConfigError
from tests.test_knn_pruned import _brute, _data, _true_dist

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")


@pytest.mark.parametrize("seed", range(3))
def test_enough_probes_give_the_exact_search(seed):
    rng = np.random.default_rng(seed)
    bank, q = _data(rng, 1500, 24, clusters=10), _data(rng, 400, 24, clusters=10)
    exact = PrunedIndex(bank, cluster_size=64, seed=seed)
    every = PrunedIndex(bank, cluster_size=64, seed=seed, probes=len(exact.cp))  # every cluster is a probe
    for k in (1, 3):
        (de, ie), (da, ia) = exact.search(q, k), every.search(q, k)
        assert np.array_equal(de, da) and np.array_equal(ie, ia)


def test_few_probes_are_approximate_and_never_closer_than_the_truth():
    rng = np.random.default_rng(3)
    bank, q = _data(rng, 4000, 16, clusters=40, spread=1.0), _data(rng, 600, 16, clusters=40, spread=1.0)
    want = _brute(bank, q, 3)
    recall = []
    for probes in (1, 4):
        d2, idx = PrunedIndex(bank, cluster_size=32, probes=probes).search(q, 3)
        d = np.sqrt(d2)
        assert (idx >= 0).all() and (np.diff(d, axis=1) >= 0).all()
        np.testing.assert_allclose(_true_dist(bank, q, idx), d, rtol=1e-5, atol=1e-5)  # true distances of what it returns
        assert (d >= want - 1e-4).all()  # a missed row can only make a distance larger
        recall.append(float(np.isclose(d[:, 0], want[:, 0], rtol=1e-5, atol=1e-5).mean()))
    assert recall[0] < 0.95, "one cluster per query must miss some nearest rows on this data"
    assert recall[0] < recall[1], "more probes find more of the true nearest rows"


def test_a_probe_with_fewer_than_k_rows_goes_on_to_the_next_clusters():
    rng = np.random.default_rng(4)
    bank, q = _data(rng, 300, 8, clusters=30, spread=0.05), _data(rng, 50, 8, clusters=30, spread=0.05)
    index = PrunedIndex(bank, cluster_size=4, probes=1)
    assert index.largest < 20
    d2, idx = index.search(q, 20)
    assert (idx >= 0).all() and np.isfinite(d2).all() and all(len(set(r)) == 20 for r in idx)


def test_backend_spellings_and_small_banks():
    assert check_backend("ivf") == ("ivf", knn.IVF_PROBES) and check_backend("ivf:16") == ("ivf", 16)
    assert check_backend("auto") == ("auto", 0)
    for bad in ("ivf:0", "ivf:x", "ivf:", "pruned:4", "annoy"):
        with pytest.raises(ConfigError, match=r"nn backend must be one of .*ivf:N"):
            check_backend(bad)
    rng = np.random.default_rng(5)
    bank, q = _data(rng, knn.PRUNED_MIN_ROWS + 100, 16), _data(rng, 100, 16)
    big = NearestNeighbors(bank, "ivf:2")
    assert big.backend == "ivf" and big._index.probes == 2
    small = NearestNeighbors(bank[:knn.PRUNED_MIN_ROWS - 1], "ivf")  # small banks: the exact flat search
    np.testing.assert_allclose(small.search(q, 2)[0], _brute(bank[:knn.PRUNED_MIN_ROWS - 1], q, 2), rtol=1e-4, atol=1e-3)
    assert NearestNeighbors(bank, "auto").backend != "ivf"


def test_patchcore_with_ivf_close_to_exact_and_stored_in_the_model(tmp_path):
    import warnings

    from defectforge.bank.backbone import RandomInitWarning
    from defectforge.detect import load_detector
    from defectforge.detect.exdd import PatchCore
    from tests.test_detect_model import SMALL, toy_samples

    train, test = toy_samples(0, 8, 0, "train"), toy_samples(2, 2, 2, "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        model = PatchCore(**{**SMALL, "image_size": (128, 192), "normal_ratio": 0.5, "nn_backend": "ivf:1"}).fit(train)
        assert len(model.bank_normal_) >= knn.PRUNED_MIN_ROWS, "the bank must be large enough for clusters"
        assert model._nn_normal.backend == "ivf"
        got = model.predict(test)
        model.save(tmp_path / "m.pt")
        loaded = load_detector(tmp_path / "m.pt")
    assert loaded.nn_backend == "ivf:1"
    ref = model.set_params(nn_backend="pruned").predict(test)
    assert (got.pred_score >= ref.pred_score - 1e-4).all()  # approximate distances are never smaller
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(got.anomaly_map, ref.anomaly_map)), \
        "one probe must change some map on this data"


def test_detect_fit_nn_backend_option(tmp_path):
    import torch
    from typer.testing import CliRunner

    from defectforge.cli import app
    from tests.test_runs_kill import _dataset

    data = _dataset(tmp_path / "data")
    runner = CliRunner()
    bad = runner.invoke(app, ["detect", "fit", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "m.pt"),
                              "--nn-backend", "ivf:0"])
    assert bad.exit_code == 2 and "nn backend must be one of" in bad.output  # before the data are read
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "m.pt").exists()
    ok = runner.invoke(app, ["-q", "detect", "fit", str(data), "--out", str(tmp_path / "m.pt"), "--random-init",
                             "--image-size", "64", "--model", "patchcore", "--nn-backend", "ivf:4"])
    assert ok.exit_code == 0, ok.output
    stored = torch.load(tmp_path / "m.pt", weights_only=True, map_location="cpu")
    assert "ivf:4" in repr(stored)
    # predict / eval: this run's search instead of the file's; it reaches the workers' copies of the model
    pred = runner.invoke(app, ["-q", "detect", "predict", str(tmp_path / "m.pt"), str(data / "images"), "--out",
                               str(tmp_path / "pred"), "--nn-backend", "nope"])
    assert pred.exit_code == 2 and "nn backend must be one of" in pred.output and not (tmp_path / "pred").exists()
    ev = runner.invoke(app, ["-q", "detect", "eval", str(tmp_path / "m.pt"), str(data), "--json", str(tmp_path / "e.json"),
                             "--nn-backend", "ivf:2"])
    assert ev.exit_code == 0, ev.output
    import json

    assert json.loads((tmp_path / "e.json").read_text())["nn_backend"] == "ivf:2"


def test_a_run_time_search_choice_reaches_the_workers(tmp_path):
    import pickle
    import warnings

    from defectforge.bank.backbone import RandomInitWarning
    from defectforge.detect import load_detector
    from defectforge.detect.evaluate import ScoreTask
    from defectforge.detect.exdd import PatchCore
    from defectforge.detect.predict_job import PredictTask
    from tests.test_detect_model import SMALL, toy_samples

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        PatchCore(**SMALL).fit(toy_samples(0, 4, 0, "train")).save(tmp_path / "m.pt")
        det = load_detector(tmp_path / "m.pt").set_params(nn_backend="ivf:3")
        for task in (PredictTask(tmp_path / "m.pt", tmp_path / "o", (None, None, None), det),
                     ScoreTask(str(tmp_path / "m.pt"), (8, 8), det)):
            worker = pickle.loads(pickle.dumps(task))  # what another process gets: no model, the file's path
            assert worker.model is None
            worker.setup()
            assert worker.model.nn_backend == "ivf:3"
        plain = pickle.loads(pickle.dumps(ScoreTask(str(tmp_path / "m.pt"), (8, 8), load_detector(tmp_path / "m.pt"))))
        plain.setup()
    assert plain.model.nn_backend == "auto"

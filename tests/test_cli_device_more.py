"""``--device`` on the commands that gained it in issue 16's second pass: ``detect3d
fit|predict|eval``, ``recipe search``, ``filter select|quality``. One reading
(:func:`defectforge._device.resolve_device`): a device torch does not have is one line
``error: ...`` and exit 2 before anything is written; ``--device cpu`` on a CPU machine gives
the results of the default."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from test_cli_grammar import _commands, _one_line_error
from test_detect3d_cli import tree  # noqa: F401  (the tiny Real3D-AD-layout tree, a fixture)

from defectforge.cli import app

runner = CliRunner()
NEW = ("detect3d fit", "detect3d predict", "detect3d eval", "recipe search", "filter select", "filter quality")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")


def test_the_commands_declare_device_with_the_one_default():
    commands = _commands()
    for path in NEW:
        opts = {o: p for p in commands[path].params for o in p.opts}
        assert "--device" in opts, path
        assert opts["--device"].default == "cpu", path


@no_cuda
def test_an_unavailable_device_is_one_line_before_anything_is_written(tree, tmp_path):
    model, pred, js = tmp_path / "m.pt", tmp_path / "pred", tmp_path / "m.json"
    cloud = str(tree / "flange" / "test" / "5_good.pcd")
    for args in (["detect3d", "fit", str(tree), "--out", str(model)],
                 ["detect3d", "predict", str(model), cloud, "--out", str(pred)],
                 ["detect3d", "eval", str(model), str(tree), "--json", str(js)],
                 ["recipe", "search", str(tree), "--out", str(tmp_path / "search")],
                 ["filter", "select", str(tree), "--real", str(tree), "--out", str(tmp_path / "sel")],
                 ["filter", "quality", str(tree), str(tree), "--json", str(tmp_path / "q.json")]):
        _one_line_error(runner.invoke(app, [*args, "--device", "cuda:9"]), "cuda:9", "CUDA is not available")
        _one_line_error(runner.invoke(app, [*args, "--device", "gpu0"]), "unknown device 'gpu0'")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_detect3d_device_cpu_gives_the_default_results(tree, tmp_path):
    clouds = [str(tree / "flange" / "test" / n) for n in ("6_bulge.pcd", "5_good.pcd")]
    outs = {}
    for tag, extra in (("default", []), ("cpu", ["--device", "cpu"])):
        model = tmp_path / f"{tag}.pt"
        r = runner.invoke(app, ["detect3d", "fit", str(tree), "--model", "fpfh", "--voxel", "0.04", "--out", str(model),
                                *extra])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["detect3d", "predict", str(model), *clouds, "--out", str(tmp_path / f"p_{tag}"), *extra])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["detect3d", "eval", str(model), str(tree), "--json", str(tmp_path / f"{tag}.json"), *extra])
        assert r.exit_code == 0, r.output
        outs[tag] = (np.loadtxt(tmp_path / f"p_{tag}" / "6_bulge.txt"),
                     (tmp_path / f"p_{tag}" / "scores.csv").read_text(), json.loads((tmp_path / f"{tag}.json").read_text()))
    np.testing.assert_array_equal(outs["default"][0], outs["cpu"][0])
    assert outs["default"][1:] == outs["cpu"][1:]
    assert len(outs["cpu"][1].splitlines()) == 3 and np.ptp(outs["cpu"][0][:, 3]) > 0  # real scores, not empty


def test_a_worker_of_another_process_loads_the_model_on_the_run_time_device(tree, tmp_path):
    from defectforge.detect3d import get_detector3d, save_models
    from defectforge.detect3d.data import load_dataset3d
    from defectforge.detect3d.score_job import CloudScoreTask

    ds = load_dataset3d(tree)
    det = get_detector3d("fpfh", voxel=0.04).fit([s.load() for s in ds.filter(split="train").samples])
    path = save_models(tmp_path / "m.pt", {"flange": det})
    task = pickle.loads(pickle.dumps(CloudScoreTask(path, {"flange": det}, runtime={"device": "cuda:5"})))
    assert task.models is None  # the worker loads the file itself ...
    task.setup()
    assert task.models["flange"].device == "cuda:5"  # ... with the run-time device (not stored in the file)
    plain = pickle.loads(pickle.dumps(CloudScoreTask(path)))
    plain.setup()
    assert plain.models["flange"].device == "cpu"


def test_recipe_search_fits_its_detector_on_the_device_which_is_not_part_of_the_study(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import defectforge.detect
    import defectforge.supervised.train
    from defectforge.recipe.search import SearchSettings, score_boxes, score_exdd

    assert SearchSettings(device="cuda:1").key() == SearchSettings().key()  # a search resumes on another device
    seen: dict = {}

    class Stop(Exception):
        pass

    def record(*a, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(defectforge.detect, "ExDD", record)
    monkeypatch.setattr(defectforge.supervised.train, "train_detector", record)
    sp = SimpleNamespace(fit_good=[], guide=[], val=[], defect_type="scratch")
    with pytest.raises(Stop):
        score_exdd(sp, [], SearchSettings(device="cuda:2"))
    assert seen.pop("device") == "cuda:2"
    with pytest.raises(Stop):
        score_boxes(sp, [], SearchSettings(detector="fcos-lite0", device="cuda:3"), tmp_path / "w")
    assert seen.pop("device") == "cuda:3"


def test_filter_device_cpu_gives_the_default_numbers(tmp_path):
    from test_filter_c2st import _pit

    from defectforge.data import Dataset
    from defectforge.data.formats import write_dataset

    rng = np.random.default_rng(3)
    rp = write_dataset(Dataset([_pit(rng, 5, -60) for _ in range(4)]), tmp_path / "real", "manifest")
    sp = write_dataset(Dataset([_pit(rng, 9, +50) for _ in range(4)]), tmp_path / "syn", "manifest")
    got = {}
    for tag, extra in (("default", []), ("cpu", ["--device", "cpu"])):
        r = runner.invoke(app, ["filter", "quality", str(rp), str(sp), "--no-c2st", "--k", "2", "--subsets", "5",
                                "--json", str(tmp_path / f"{tag}.json"), *extra])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["filter", "select", str(sp), "--real", str(rp), "--out", str(tmp_path / f"sel_{tag}"),
                                "--top-k", "2", *extra])
        assert r.exit_code == 0, r.output
        got[tag] = (json.loads((tmp_path / f"{tag}.json").read_text()),
                    (tmp_path / f"sel_{tag}" / "scores.csv").read_text())
    assert got["default"] == got["cpu"]
    assert got["cpu"][0]["n_real_crops"] == 4 and len(got["cpu"][1].splitlines()) == 5


def test_embedders_run_their_model_on_the_device_and_return_cpu_arrays():
    from defectforge.filter.embed import BackboneEmbedder, TorchEmbedder, default_embedder

    crops = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    a = BackboneEmbedder(random_init=True).embed(crops)
    b = BackboneEmbedder(random_init=True, device="cpu").embed(crops)
    np.testing.assert_array_equal(a, b)
    assert default_embedder(device="cuda:1").device == "cuda:1"  # built lazily: nothing runs until embed()
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.device.type)
            return x.mean(dim=(2, 3))

    out = TorchEmbedder(Probe(), size=16, device="cpu").embed(crops)
    assert isinstance(out, np.ndarray) and out.shape == (3, 3) and seen == ["cpu"]


def test_synth_device_sets_model_based_generators_only(tmp_path):
    """``synth --device`` reaches the generators that run a model (their ``device``
    parameter) and leaves weight-free ones alone; a bad device is one line, exit 2."""
    import yaml
    from typer.testing import CliRunner

    from defectforge.cli import app
    from defectforge.synth2d.cli import with_device
    from defectforge.synth2d.config import parse_config

    cfg = parse_config({"source": {"path": str(tmp_path)}, "n": 2,
                        "generators": [{"name": "pitting"},
                                       {"name": "inpaint-diffusion", "params": {"model": str(tmp_path / "m")}}]})
    out = with_device(cfg, "cpu")
    params = {g.name: g.params for g in out.generators}
    assert params["inpaint-diffusion"]["device"] == "cpu" and "device" not in params["pitting"]
    r = CliRunner().invoke(app, ["synth", str(tmp_path), "--generator", "pitting", "--device", "cpu",
                                 "--print-config"])
    assert r.exit_code == 0, r.output
    assert all("device" not in g.get("params", {}) for g in yaml.safe_load(r.stdout)["generators"])
    r = CliRunner().invoke(app, ["synth", str(tmp_path), "--device", "cuda:9", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "CUDA is not available" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()

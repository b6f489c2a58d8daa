"""The Ray engine on a local 2-CPU Ray (started here, shut down after): same bytes as the
local engine for synth / synth3d / detect predict / detect eval whatever the worker count,
a killed worker costs only its unfinished items, a killed driver resumes on either engine,
and input errors raised inside a worker reach the user as one line."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'defectforge[dist]')")

from defectforge.engine import LocalEngine, get_engine  # noqa: E402
from defectforge.errors import ConfigError, InputError  # noqa: E402
from defectforge.synth2d import synthesize  # noqa: E402

from test_contract_cli import tree3d  # noqa: E402,F401 (a module fixture: tiny 3D tree)
from test_detect_cli import mvtec  # noqa: E402,F401 (a module fixture: toy MVTec folder)
from test_filter_scores import _sets, embedder  # noqa: E402,F401 (embedder: a module fixture)
from test_experiments_runner import _st, small  # noqa: E402,F401 (small: a module fixture)
from test_synth2d_pipeline import _cfg, make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for this module (about 10 s to start)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             object_store_memory=100 * 2**20, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def eng2(local_ray):
    """A Ray engine with 2 workers, shared by the tests (its actors start once)."""
    eng = get_engine("ray", workers=2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth_src"))


@pytest.fixture(scope="module")
def local_synth(data, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("local") / "out"
    synthesize(_cfg(data, n=8), out, workers=1)
    return _digest(out)


def _digest(out: Path) -> dict[str, str]:
    """Hashes of every output file (report.html carries a date and is left out)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "report.html"}


def test_synth_on_ray_gives_the_local_bytes(local_ray, data, local_synth, tmp_path):
    # before eng2 exists: its actors hold both CPUs of this Ray
    for workers in (1, 2):
        with get_engine("ray", workers=workers) as eng:
            run = synthesize(_cfg(data, n=8), tmp_path / f"o{workers}", engine=eng)
        assert run.written == 8
        assert _digest(tmp_path / f"o{workers}") == local_synth
    assert ray.is_initialized()  # an engine leaves a Ray it did not start running


def test_killed_worker_costs_only_its_items(eng2, data, local_synth, tmp_path):
    eng = eng2
    killed: list[int] = []
    seen: list[int] = []

    def kill_one(stage: str, done: int, total: int) -> None:
        seen.append(done)
        if done == 2 and not killed:
            killed.append(eng.worker_pids[0])
            os.kill(eng.worker_pids[0], signal.SIGKILL)

    run = synthesize(_cfg(data, n=8), tmp_path / "o", engine=eng, progress=kill_one)
    assert killed and run.written == 8
    assert seen == list(range(9))  # every item reported once, none twice
    out = tmp_path / "o"
    assert _digest(out) == local_synth
    journal = [json.loads(x) for x in (out / ".synth" / "journal.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in journal) == list(range(8))
    assert not [p for p in out.rglob("*.tmp")]


@pytest.mark.parametrize("first,second", [("ray", "local"), ("local", "ray")])
def test_killed_driver_resumes_on_either_engine(eng2, data, local_synth, tmp_path, first, second):
    class DriverDied(Exception):
        pass

    def die_after_3(stage: str, done: int, total: int) -> None:
        if done >= 3:
            raise DriverDied

    engines = {"ray": eng2, "local": LocalEngine(1)}
    with pytest.raises(DriverDied):
        synthesize(_cfg(data, n=8), tmp_path / "o", engine=engines[first], progress=die_after_3)
    assert not (tmp_path / "o" / "manifest.csv").exists()
    run = synthesize(_cfg(data, n=8), tmp_path / "o", engine=engines[second])
    assert run.resumed >= 3 and run.resumed + run.written == 8
    assert _digest(tmp_path / "o") == local_synth


def test_synth_cli_with_engine_ray(local_ray, data, local_synth, tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli import app

    cfg = _cfg(data, n=8).model_dump(mode="json")
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["synth", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"),
                                 "--engine", "ray", "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert _digest(tmp_path / "o") == local_synth
    r = CliRunner().invoke(app, ["synth", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "p"),
                                 "--engine", "spark"])
    assert r.exit_code == 2 and "--engine must be one of local, ray" in r.output
    r = CliRunner().invoke(app, ["synth", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "p"),
                                 "--ray-address", "auto"])
    assert r.exit_code == 2 and "--ray-address needs --engine ray" in r.output


def test_worker_input_error_reaches_the_driver(eng2, tmp_path):
    from defectforge.engine import Task

    class Fails(Task):
        def __call__(self, item):
            if item == 3:
                raise InputError(f"/data/img{item}.png", "not an image")
            return item * 2

    with pytest.raises(InputError, match=r"img3.png: not an image") as exc:
        list(eng2.map(Fails(), range(6)))
    assert exc.value.problem == "not an image"
    assert sorted(r for _, r in eng2.map(Fails(), [0, 1, 2, 4])) == [0, 2, 4, 8]

    class BadSetup(Task):
        def setup(self):
            raise ConfigError("model file is for another detector")

    with pytest.raises(ConfigError, match="another detector"):
        list(eng2.map(BadSetup(), [1, 2, 3]))


def test_synth3d_on_ray_gives_the_local_bytes(eng2, tmp_path):
    from defectforge.synth3d.describe import parse_description
    from defectforge.synth3d.pipeline import run_synthesis

    inst = parse_description("a dent and a scratch")
    run_synthesis("part:all", inst, 4, 3, tmp_path / "a", n_points=1500)
    s = run_synthesis("part:all", inst, 4, 3, tmp_path / "b", n_points=1500, engine=eng2)
    assert s["generated"] == 4
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db and len([k for k in da if k.endswith(".ply")]) == 4


@pytest.fixture(scope="module")
def toy_model(mvtec, one_torch_thread):
    """An ExDD (random backbone) fitted on the toy MVTec folder's train/good images."""
    import warnings

    from defectforge.data.formats import load_dataset
    from defectforge.detect.exdd import ExDD

    normal = [s for s in load_dataset(mvtec).filter(split="train") if not s.is_defect]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = ExDD(random_init=True, image_size=(64, 96), val_fraction=0.34).fit(normal)
    det.save(mvtec / "m.dfm")
    return mvtec


def test_detect_predict_and_eval_on_ray(eng2, toy_model, tmp_path):
    from defectforge.data.formats import load_dataset
    from defectforge.detect.evaluate import evaluate_detector
    from defectforge.detect.exdd import ExDD
    from defectforge.detect.predict_job import predict_files

    files = sorted((toy_model / "test").rglob("*.png"))
    model = toy_model / "m.dfm"
    predict_files(model, files, tmp_path / "local")
    predict_files(model, files, tmp_path / "ray", engine=eng2)
    a, b = _digest(tmp_path / "local"), _digest(tmp_path / "ray")
    assert a == b and len([k for k in a if k.startswith("heatmaps/")]) == len(files) == 8
    rows = list(csv.DictReader(open(tmp_path / "ray" / "scores.csv")))
    assert [r["file"] for r in rows] == [str(f) for f in files]

    det = ExDD.load(model)
    ds = load_dataset(toy_model)
    loc = evaluate_detector(det, ds, chunk=2, engine=LocalEngine(1))
    rem = evaluate_detector(det, ds, chunk=2, engine=eng2, model_path=str(model))
    assert np.array_equal(loc["scores"], rem["scores"])
    for k in ("image_auroc", "pixel_auroc", "aupro", "n_images"):
        assert loc["metrics"][k] == rem["metrics"][k]
    with pytest.raises(ConfigError, match="model_path"):
        evaluate_detector(det, ds, engine=eng2)


def test_experiment_conditions_on_ray(eng2, small, tmp_path, one_torch_thread):
    from defectforge.experiments import run_experiment

    st = _st(seeds=(0, 1), only=("exdd +3 synthetic",))
    loc = run_experiment("exdd-augmentation", small, tmp_path / "local", st)
    rem = run_experiment("exdd-augmentation", small, tmp_path / "ray", st, engine=eng2)
    key = lambda r: (r["condition"], r["seed"])  # noqa: E731
    a, b = sorted(loc["runs"], key=key), sorted(rem["runs"], key=key)
    assert [key(r) for r in a] == [key(r) for r in b] == [("exdd +3 synthetic", 0), ("exdd +3 synthetic", 1)]
    compared = 0
    for ra, rb in zip(a, b):
        for k, v in ra.items():
            if k != "seconds" and isinstance(v, float):
                assert np.isclose(v, rb[k], rtol=1e-6, equal_nan=True), k
                compared += 1
    assert compared >= 4


# -- faults: which items a killed worker costs; a SIGKILLed driver -------------------------------------
def test_killed_worker_redoes_only_its_unfinished_items(eng2, tmp_path):
    from defectforge.engine import Task
    from defectforge.engine.ray_engine import QUEUE_PER_WORKER

    log = tmp_path / "runs.log"

    class Slow(Task):
        """Logs the start and the end of every execution (item, pid) and takes a moment."""

        def __call__(self, item):
            import time

            with open(log, "a") as fh:
                fh.write(f"start {item} {os.getpid()}\n")
            time.sleep(0.3)
            with open(log, "a") as fh:
                fh.write(f"end {item} {os.getpid()}\n")
            return item * 10

    def running_on(pid):
        """Items that ``pid`` has started and not finished (read from the log)."""
        open_items = set()
        for line in log.read_text().splitlines():
            what, i, p = line.split()
            if int(p) == pid:
                (open_items.add if what == "start" else open_items.discard)(int(i))
        return open_items

    got, killed = [], []
    for item, rec in eng2.map(Slow(), range(12)):
        got.append((item, rec))
        if len(got) == 3:
            # Kill the worker while it is inside an item (not between two), so the kill
            # always costs exactly what had started there: without this wait the test raced.
            pid = eng2.worker_pids[0]
            deadline = time.monotonic() + 30
            while not running_on(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert running_on(pid), "worker 0 never started an item"
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)
    assert sorted(got) == [(i, 10 * i) for i in range(12)]  # each item once, none missing
    runs: dict[int, list[int]] = {}
    for line in log.read_text().splitlines():
        what, i, pid = line.split()
        if what == "start":
            runs.setdefault(int(i), []).append(int(pid))
    redone = [i for i, pids in runs.items() if len(pids) > 1]
    assert sorted(runs) == list(range(12))
    assert 1 <= len(redone) <= QUEUE_PER_WORKER  # only what was queued on the killed worker ...
    assert all(runs[i][0] == killed[0] for i in redone)  # ... and had started there
    done_before = {i for i, _ in got[:3]}
    assert all(len(runs[i]) == 1 for i in done_before)  # finished items are never redone


def test_sigkilled_driver_resumes_to_the_same_bytes(data, tmp_path):
    """The CLI on Ray (its own local Ray) is SIGKILLed after a few samples; the same
    command again finishes the run, and the files equal an uninterrupted local run."""
    import subprocess
    import sys
    import time

    import yaml

    n = 96  # enough items that the run cannot finish between two looks at the journal (16 could)
    synthesize(_cfg(data, n=n), tmp_path / "ref", workers=1)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_cfg(data, n=n).model_dump(mode="json")))
    cmd = [sys.executable, "-m", "defectforge", "synth", "--config", str(tmp_path / "c.yaml"), "--out",
           str(tmp_path / "o"), "--engine", "ray", "--workers", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    journal = tmp_path / "o" / ".synth" / "journal.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t0, lines = time.time(), 0
    while proc.poll() is None and time.time() - t0 < 300:
        lines = len(journal.read_text().splitlines()) if journal.is_file() else 0
        if lines >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 3 <= lines < n and not (tmp_path / "o" / "manifest.csv").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _digest(tmp_path / "o") == _digest(tmp_path / "ref")
    journal_idx = [json.loads(x)["index"] for x in journal.read_text().splitlines()]
    assert sorted(set(journal_idx)) == list(range(n))


# -- detect fit, filter scoring and detect3d on Ray: the local engine's results ----------------------------
class _Counting:
    """An engine wrapper counting the items sent through ``map_ordered``."""

    def __init__(self, eng):
        self.eng, self.items, self.name = eng, 0, eng.name

    def map_ordered(self, task, items):
        items = list(items)
        self.items += len(items)
        return self.eng.map_ordered(task, items)


def test_detect_fit_features_on_ray(eng2, toy_model, tmp_path):
    import warnings

    from defectforge.data.formats import load_dataset
    from defectforge.detect.exdd import EmptyDefectMaskWarning, ExDD
    from defectforge.detect.fit_job import fit_on

    train = load_dataset(toy_model).filter(split="train")
    normal = [s for s in train if not s.is_defect]
    defects = [s for s in train if s.is_defect]
    blank = (np.full((48, 72, 3), 128, np.uint8), np.zeros((48, 72), bool))  # warns: empty mask
    kw = dict(random_init=True, image_size=(64, 96), val_fraction=0.34, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loc = ExDD(**kw).fit(normal, defects + [blank])
    eng = _Counting(eng2)
    with pytest.warns(EmptyDefectMaskWarning, match="empty mask"):
        rem = fit_on(ExDD(**kw), eng, normal, defects + [blank])
    n_train = loc.fit_info_["n_train_normal"]
    assert eng.items == -(-n_train // 2) + len(defects) + 1  # batches of 2 normal images, 1 per defect image
    assert np.array_equal(loc.bank_normal_, rem.bank_normal_) and np.array_equal(loc.bank_defect_, rem.bank_defect_)
    assert len(rem.bank_defect_) > 0 and (loc.threshold_, loc.pixel_threshold_) == (rem.threshold_, rem.pixel_threshold_)
    assert rem.fit_info_["defect_sets"] == loc.fit_info_["defect_sets"]


def test_filter_scoring_on_ray(eng2, embedder, tmp_path):
    from defectforge.filter.run import filter_dataset
    from defectforge.filter.select import SelectionPolicy

    rp, sp = _sets(tmp_path)
    res = {}
    for name, eng in (("local", None), ("ray", _Counting(eng2))):
        res[name] = filter_dataset(sp, rp, tmp_path / name, SelectionPolicy(top_k=3), embedder=embedder, engine=eng)
    assert res["ray"]["n_scored"] == 6 and eng.items == 1  # one chunk of 6 samples
    assert (tmp_path / "local" / "scores.csv").read_bytes() == (tmp_path / "ray" / "scores.csv").read_bytes()
    assert [s.name for s in res["local"]["kept"]] == [s.name for s in res["ray"]["kept"]]


@pytest.fixture(scope="module")
def model3d(tree3d, tmp_path_factory):
    from defectforge.detect3d import get_detector3d, save_models
    from defectforge.detect3d.data import load_dataset3d

    ds = load_dataset3d(tree3d)
    det = get_detector3d("fpfh", voxel=0.03).fit([s.load() for s in ds.filter(category="flange", split="train").samples])
    return save_models(tmp_path_factory.mktemp("m3") / "m.dfm", {"flange": det})


def test_detect3d_predict_and_eval_on_ray(eng2, tree3d, model3d, tmp_path):
    from defectforge.detect3d import load_models3d
    from defectforge.detect3d.data import load_dataset3d
    from defectforge.detect3d.evaluate import evaluate_detector3d
    from defectforge.detect3d.score_job import predict_clouds

    clouds = sorted((tree3d / "flange" / "test").glob("*.pcd"))
    models = load_models3d(model3d)
    predict_clouds(model3d, "flange", clouds, tmp_path / "local", models=models, chunk=1)
    predict_clouds(model3d, "flange", clouds, tmp_path / "ray", engine=eng2, chunk=1)
    a, b = _digest(tmp_path / "local"), _digest(tmp_path / "ray")
    assert a == b and len([k for k in a if k.endswith(".ply")]) == len(clouds) == 2
    ds = load_dataset3d(tree3d)
    loc = evaluate_detector3d(models, ds)
    rem = evaluate_detector3d(models, ds, engine=eng2, model_path=model3d)
    assert loc.scores == rem.scores and all(np.array_equal(x, y) for x, y in zip(loc.point_scores, rem.point_scores))
    assert json.dumps(loc.metrics, sort_keys=True) == json.dumps(rem.metrics, sort_keys=True)
    with pytest.raises(ConfigError, match="model_path"):
        evaluate_detector3d(models, ds, engine=eng2)


def test_cli_fit_filter_detect3d_with_engine_ray(eng2, toy_model, tree3d, model3d, tmp_path):
    """The --engine/--ray-address wiring of detect fit, filter select and detect3d predict/eval."""
    from typer.testing import CliRunner

    from defectforge.cli import app
    from defectforge.detect.base import load_detector

    run = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    ray_opts = ("--engine", "ray", "--workers", "2")
    fit = ("detect", "fit", toy_model, "--random-init", "--image-size", "64x96")
    for name, opts in (("local", ()), ("ray", ray_opts)):
        r = run(*fit, "--out", tmp_path / f"{name}.dfm", *opts)
        assert r.exit_code == 0, r.output
    a, b = load_detector(tmp_path / "local.dfm"), load_detector(tmp_path / "ray.dfm")
    assert np.array_equal(a.bank_normal_, b.bank_normal_) and np.array_equal(a.bank_defect_, b.bank_defect_)
    clouds = sorted((tree3d / "flange" / "test").glob("*.pcd"))
    for name, opts in (("local", ()), ("ray", ray_opts)):
        r = run("detect3d", "predict", model3d, *clouds, "--out", tmp_path / f"p3_{name}", *opts)
        assert r.exit_code == 0, r.output
        r = run("detect3d", "eval", model3d, tree3d, "--json", tmp_path / f"e3_{name}.json", *opts)
        assert r.exit_code == 0, r.output
    assert _digest(tmp_path / "p3_local") == _digest(tmp_path / "p3_ray")
    assert (tmp_path / "e3_local.json").read_text() == (tmp_path / "e3_ray.json").read_text()
    rp, sp = _sets(tmp_path)
    for name, opts in (("local", ()), ("ray", ray_opts)):
        r = run("filter", "select", sp, "--real", rp, "--out", tmp_path / f"f_{name}", "--top-k", "3", *opts)
        assert r.exit_code == 0, r.output
    assert (tmp_path / "f_local" / "scores.csv").read_bytes() == (tmp_path / "f_ray" / "scores.csv").read_bytes()
    r = run("detect3d", "predict", model3d, *clouds, "--out", tmp_path / "bad", "--ray-address", "auto")
    assert r.exit_code == 2 and "--ray-address needs --engine ray" in r.output

"""Studio jobs: a synth run from the browser API goes through ``synthesize`` (same files as
the CLI), reports progress, can be cancelled and resumed, and the list survives a restart."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import warnings  # noqa: E402

with warnings.catch_warnings():  # starlette's note about its httpx client, not about this project
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from defectforge.studio.app import create_app  # noqa: E402

CONFIG = {"source": {"path": "@sample", "split": "train", "real_defects": False},
          "generators": [{"name": "pitting"}], "seed": 1}


def _wait(c, jid, states, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = next(j for j in c.get("/api/jobs").json()["jobs"] if j["id"] == jid)
        if j["status"] in states:
            return j
        time.sleep(0.1)
    raise AssertionError(f"job {jid} stuck in {j['status']}")


def test_synth_job_runs_the_synth_pipeline(tmp_path):
    from defectforge.data.formats import load_dataset

    c = TestClient(create_app(tmp_path))
    j = c.post("/api/jobs", json={"kind": "synth", "config": {**CONFIG, "n": 3}, "out": "runs/a"}).json()
    done = _wait(c, j["id"], ("done", "failed"))
    assert done["status"] == "done", done["message"]
    assert done["done"] == done["total"] == 3
    ds = load_dataset(tmp_path / "runs" / "a")
    assert len(ds) == 3 and {s.label for s in ds} == {"pitting"}
    assert (tmp_path / "runs" / "a" / ".synth" / "journal.jsonl").is_file()
    y = c.get(f"/api/jobs/{j['id']}/config.yaml")
    assert "pitting" in y.text and "attachment" in y.headers["content-disposition"]


def test_bad_job_configs_are_refused_before_queueing(tmp_path):
    c = TestClient(create_app(tmp_path))
    r = c.post("/api/jobs", json={"kind": "synth", "config": {**CONFIG, "n": 0}, "out": "runs/a"})
    assert r.status_code == 400 and r.json()["field"] == "config" and "impossible count" in r.json()["error"]
    r = c.post("/api/jobs", json={"kind": "synth", "config": {**CONFIG, "n": 2}, "out": "../x"})
    assert r.status_code == 403
    r = c.post("/api/jobs", json={"kind": "synth", "yaml_text": "source: [", "out": "runs/a"})
    assert r.status_code == 400 and r.json()["field"] == "config"
    assert c.get("/api/jobs").json()["jobs"] == []


def test_cancel_resume_and_restart(tmp_path):
    from defectforge.data.formats import load_dataset

    c = TestClient(create_app(tmp_path))
    j = c.post("/api/jobs", json={"kind": "synth", "config": {**CONFIG, "n": 10}, "out": "runs/b"}).json()
    t0 = time.time()
    while c.get("/api/jobs").json()["jobs"][0]["done"] < 1 and time.time() - t0 < 60:
        time.sleep(0.05)
    c.post(f"/api/jobs/{j['id']}/cancel")
    stopped = _wait(c, j["id"], ("cancelled", "done"))
    assert stopped["status"] == "cancelled" and stopped["done"] < 10
    journal = (tmp_path / "runs" / "b" / ".synth" / "journal.jsonl").read_text().splitlines()
    assert len(journal) >= 1  # what was written before the cancel is kept
    # a restarted server sees the same list (and marks a job that was running as interrupted)
    store = tmp_path / ".studio" / "jobs.json"
    data = json.loads(store.read_text())
    data.append({**data[0], "id": "zzz", "status": "running", "created": data[0]["created"] + 1})
    store.write_text(json.dumps(data))
    c2 = TestClient(create_app(tmp_path))
    jobs = {x["id"]: x for x in c2.get("/api/jobs").json()["jobs"]}
    assert jobs[j["id"]]["status"] == "cancelled" and jobs["zzz"]["status"] == "interrupted"
    c2.post(f"/api/jobs/{j['id']}/resume")
    done = _wait(c2, j["id"], ("done", "failed"))
    assert done["status"] == "done" and "resumed" in done["message"]
    assert int(done["message"].split("(")[1].split(" new, ")[1].split(" resumed")[0]) >= 1
    assert len(load_dataset(tmp_path / "runs" / "b")) == 10


def test_synth3d_job(tmp_path):
    c = TestClient(create_app(tmp_path))
    inst = {"version": 1, "defects": [{"type": "dent", "location": "top"}]}
    j = c.post("/api/jobs", json={"kind": "synth3d", "config": {"input": "part:flange", "instructions": inst, "n": 2,
                                                                "n_points": 3000}, "out": "runs/c"}).json()
    done = _wait(c, j["id"], ("done", "failed"))
    assert done["status"] == "done", done["message"]
    assert (tmp_path / "runs" / "c" / "manifest.csv").is_file() and len(list((tmp_path / "runs" / "c").glob("*.txt"))) == 2
    # the output opens in the data page as a 3D dataset, with labelled points for the viewer
    d = c.get("/api/dataset", params={"path": "runs/c"}).json()
    assert (d["kind"], d["format"], d["n"]) == ("3d", "synth3d", 2)
    cl = c.get("/api/cloud", params={"path": "runs/c", "i": 0}).json()
    assert cl["n"] > 2000 and cl["n_defect"] > 0


@pytest.mark.slow
def test_cli_job_runs_the_detect_commands(tmp_path):
    """``detect fit`` then ``detect predict`` as child processes of the CLI (tiny random-init model),
    and the predict output on the Results page."""
    c = TestClient(create_app(tmp_path))
    form = {f["name"]: f for f in c.get("/api/jobs/commands").json()["commands"]["detect fit"]}
    assert form["data"]["option"] is None and form["random_init"]["flag"] and form["out"]["path"]
    fit = {"command": "detect fit", "args": {"data": "@sample", "out": "models/m.pt", "model": "patchcore",
                                             "image_size": "64", "random_init": True}}
    j = c.post("/api/jobs", json={"kind": "cli", "config": fit}).json()
    done = _wait(c, j["id"], ("done", "failed"), timeout=400)
    assert done["status"] == "done", done["message"]
    assert (tmp_path / "models" / "m.pt").is_file()
    log = (tmp_path / done["log"]).read_text()
    assert log.startswith("$ defectforge detect fit")
    # predict into the project, then open it on the Results page with ground truth
    import shutil

    from defectforge.datasets import sample_path

    shutil.copytree(sample_path(), tmp_path / "data")
    ds = c.get("/api/samples", params={"path": "data", "split": "test", "limit": 100}).json()["items"]
    picked = [it for it in ds if it["defect"]][:3] + [it for it in ds if not it["defect"]][:3]
    files = [f"data/images/{it['name']}.jpg" for it in picked]
    pr = {"command": "detect predict", "args": {"model_path": "models/m.pt", "images": files, "out": "pred"}}
    j = c.post("/api/jobs", json={"kind": "cli", "config": pr}).json()
    done = _wait(c, j["id"], ("done", "failed"), timeout=400)
    assert done["status"] == "done", done["message"]
    res = c.get("/api/results", params={"path": "pred", "dataset": "data"}).json()
    assert len(res["items"]) == 6 and res["matched"] == 6
    assert sum(it["defect"] for it in res["items"]) == 3
    k = next(it["k"] for it in res["items"] if it["defect"])
    for kind in ("image", "gt", "heatmap", "mask"):
        r = c.get("/api/results/image", params={"path": "pred", "k": k, "kind": kind, "dataset": "data"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", (kind, r.text[:200])
    assert res["heatmaps"] is True
    # the same with --heatmaps none: the page is told there are no panels, and asking for one is a field error
    pr["args"].update(out="pred2", heatmaps="none")
    j = c.post("/api/jobs", json={"kind": "cli", "config": pr}).json()
    done = _wait(c, j["id"], ("done", "failed"), timeout=400)
    assert done["status"] == "done", done["message"]
    res2 = c.get("/api/results", params={"path": "pred2", "dataset": "data"}).json()
    assert res2["heatmaps"] is False and [it["score"] for it in res2["items"]] == [it["score"] for it in res["items"]]
    r = c.get("/api/results/image", params={"path": "pred2", "k": k, "kind": "heatmap"})
    assert r.status_code == 400 and r.json()["field"] == "kind" and "--heatmaps none" in r.json()["error"]
    assert c.get("/api/results/image", params={"path": "pred2", "k": k, "kind": "mask"}).status_code == 200


def test_cli_jobs_refuse_unknown_commands_params_and_paths(tmp_path):
    c = TestClient(create_app(tmp_path))
    for cfg, field in (({"command": "rm -rf", "args": {}}, "command"),
                       ({"command": "detect fit", "args": {"data": "@sample", "out": "m.pt", "evil": 1}}, "config"),
                       ({"command": "detect fit", "args": {"out": "m.pt"}}, "config")):
        r = c.post("/api/jobs", json={"kind": "cli", "config": cfg})
        assert r.status_code == 400 and r.json()["field"] == field, r.json()
    r = c.post("/api/jobs", json={"kind": "cli", "config": {"command": "detect fit",
                                                            "args": {"data": "@sample", "out": "../m.pt"}}})
    assert r.status_code == 403
    assert c.get("/api/jobs").json()["jobs"] == []


def test_cli_job_argument_lists(tmp_path):
    """The argument list follows the CLI's declarations: positionals, options, flags, paths
    made absolute inside the project (outputs may not exist yet)."""
    from defectforge.studio.cli_jobs import argv

    app = create_app(tmp_path)
    st = app.state.studio
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.pt").write_bytes(b"x")
    got = argv(st, {"command": "detect eval", "args": {"model_path": "models/m.pt", "data": "@sample",
                                                       "json_out": "eval/m.json", "split": "test"}})
    assert got[:4] == ["detect", "eval", str(tmp_path / "models" / "m.pt"), str(st.paths.sample)]
    assert got[got.index("--json") + 1] == str(tmp_path / "eval" / "m.json")
    assert got[got.index("--split") + 1] == "test"
    fit = argv(st, {"command": "detect fit", "args": {"data": "@sample", "out": "m2.pt", "random_init": True,
                                                     "seed": 3}})
    assert "--random-init" in fit and fit[fit.index("--seed") + 1] == "3"
    off = argv(st, {"command": "detect fit", "args": {"data": "@sample", "out": "m2.pt", "random_init": False}})
    assert "--random-init" not in off


@pytest.mark.slow
def test_review_rejections_are_honoured_by_reruns_and_detect_fit(tmp_path):
    """A sample rejected in Review leaves the manifest and exports, stays out after the synth
    job is run again on the folder, and ``detect fit --synthetic`` puts only the kept samples
    into ExDD's defect bank (the model file records how many went in)."""
    from typer.testing import CliRunner

    from defectforge.cli import app
    from defectforge.data.formats import load_dataset
    from defectforge.datasets import sample_path
    from defectforge.detect.base import load_detector

    c = TestClient(create_app(tmp_path))
    cfg = {**CONFIG, "n": 4, "formats": ["mvtec"]}
    j = c.post("/api/jobs", json={"kind": "synth", "config": cfg, "out": "runs/r"}).json()
    assert _wait(c, j["id"], ("done", "failed"))["status"] == "done"
    items = c.get("/api/review", params={"set": "runs/r"}).json()["items"]
    assert len(items) == 4
    gone = items[2]
    assert c.post("/api/review/decide", json={"set": "runs/r", "index": gone["index"],
                                              "decision": "rejected"}).json()["kept"] == 3
    out = tmp_path / "runs" / "r"
    listed = lambda: sorted(s.path.name for s in load_dataset(out))  # noqa: E731
    assert len(listed()) == 3 and gone["file"].split("/")[-1] not in listed()
    n_export = len(list((out / "export" / "mvtec").rglob("*.png")))
    # the job run again on the same folder (everything resumed) keeps the decision
    c.post(f"/api/jobs/{j['id']}/resume")
    again = _wait(c, j["id"], ("done", "failed"))
    assert again["status"] == "done" and "4 resumed" in again["message"], again["message"]
    assert len(listed()) == 3 and len(list((out / "export" / "mvtec").rglob("*.png"))) == n_export
    model = tmp_path / "m.pt"
    r = CliRunner().invoke(app, ["detect", "fit", str(sample_path()), "--out", str(model), "--model", "exdd",
                                 "--random-init", "--image-size", "48", "--no-real-defects", "--synthetic", str(out)])
    assert r.exit_code == 0, r.output
    sets = load_detector(model).fit_info_["defect_sets"]
    assert [s["images"] for s in sets if s["name"].startswith("synthetic:")] == [3]


@pytest.mark.slow
def test_cli_jobs_live_progress_cancel_resume_and_config(tmp_path):
    """``detect fit`` and ``detect eval`` jobs report the child's progress while they run,
    can be cancelled (nothing half-written) and resumed, and show their YAML config with
    the command line."""
    c = TestClient(create_app(tmp_path))
    fit = {"command": "detect fit", "args": {"data": "@sample", "out": "models/m.pt", "model": "patchcore",
                                             "image_size": "64", "random_init": True}}
    j = c.post("/api/jobs", json={"kind": "cli", "config": fit}).json()
    seen = []
    t0 = time.time()
    while time.time() - t0 < 300:
        cur = next(x for x in c.get("/api/jobs").json()["jobs"] if x["id"] == j["id"])
        if cur["status"] == "running" and cur["total"]:
            seen.append((cur["stage"], cur["done"], cur["total"]))
        if cur["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert cur["status"] == "done", cur["message"]
    assert seen and all(st and 0 <= d <= t for st, d, t in seen), seen  # live, while running
    assert cur["done"] == cur["total"] and cur["total"] > 0
    text = c.get(f"/api/jobs/{j['id']}/config.yaml", params={"download": 0}).text
    assert text.startswith("# runs: defectforge detect fit ") and "--random-init" in text and "model: patchcore" in text
    ev = {"command": "detect eval", "args": {"model_path": "models/m.pt", "data": "@sample", "json_out": "eval/m.json"}}
    e = c.post("/api/jobs", json={"kind": "cli", "config": ev}).json()
    done = _wait(c, e["id"], ("done", "failed"), timeout=300)
    assert done["status"] == "done", done["message"]
    n_test = len(json.loads((tmp_path / "eval" / "m.json").read_text())["per_image"])
    assert (done["stage"], done["done"], done["total"]) == ("eval", n_test, n_test)
    # cancel a fit while it runs: the model file is not written; resume runs it to the end
    fit2 = {"command": "detect fit", "args": {**fit["args"], "out": "models/m2.pt", "image_size": "96"}}
    k = c.post("/api/jobs", json={"kind": "cli", "config": fit2}).json()
    t0 = time.time()
    while time.time() - t0 < 300:
        cur = next(x for x in c.get("/api/jobs").json()["jobs"] if x["id"] == k["id"])
        if cur["status"] == "running" and cur["total"] or cur["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    c.post(f"/api/jobs/{k['id']}/cancel")
    stopped = _wait(c, k["id"], ("cancelled", "done", "failed"), timeout=120)
    assert stopped["status"] == "cancelled", stopped
    assert not (tmp_path / "models" / "m2.pt").exists()
    c.post(f"/api/jobs/{k['id']}/resume")
    again = _wait(c, k["id"], ("done", "failed"), timeout=300)
    assert again["status"] == "done" and (tmp_path / "models" / "m2.pt").is_file(), again["message"]


@pytest.fixture(scope="module")
def eval_project(tmp_path_factory):
    """A project with a tiny random-init PatchCore and its ``detect eval --json`` output."""
    from typer.testing import CliRunner

    from defectforge.cli import app
    from defectforge.datasets import sample_path

    root = tmp_path_factory.mktemp("evalproj")
    import shutil

    shutil.copytree(sample_path(), root / "data")
    run = CliRunner().invoke
    r = run(app, ["detect", "fit", str(root / "data"), "--out", str(root / "m.pt"), "--model", "patchcore",
                  "--random-init", "--image-size", "64"])
    assert r.exit_code == 0, r.output
    r = run(app, ["detect", "eval", str(root / "m.pt"), str(root / "data"), "--json", str(root / "eval.json")])
    assert r.exit_code == 0, r.output
    return root


@pytest.mark.slow
def test_results_open_an_eval_output_with_maps_on_one_scale(eval_project):
    import cv2
    import numpy as np

    root = eval_project
    data = json.loads((root / "eval.json").read_text())
    c = TestClient(create_app(root))
    r = c.get("/api/results", params={"path": "eval.json"}).json()
    assert r["kind"] == "eval" and r["maps"] and r["matched"] == len(data["per_image"]) == len(r["items"])
    assert [it["score"] for it in r["items"]] == [p["score"] for p in data["per_image"]]
    assert any(it["defect"] for it in r["items"]) and not all(it["defect"] for it in r["items"])
    k = next(it["k"] for it in r["items"] if it["defect"])
    m = c.get("/api/results/map", params={"path": "eval.json", "k": k}).json()
    amap = np.frombuffer(__import__("base64").b64decode(m["map"]), np.float32).reshape(m["h"], m["w"])
    assert [m["h"], m["w"]] == data["eval_size"]
    assert m["score"] == pytest.approx(data["per_image"][k]["score"], rel=1e-4)  # the evaluation's own scoring
    pthr = data["pixel_threshold"]
    assert (m["scale"]["lo"], m["scale"]["hi"]) == (0.0, pytest.approx(2 * pthr))  # one scale for every image
    m2 = c.get("/api/results/map", params={"path": "eval.json", "k": 0}).json()
    assert m2["scale"] == m["scale"] and amap.std() > 0
    shapes = {}
    for kind in ("image", "gt", "heatmap", "colorbar"):
        resp = c.get("/api/results/image", params={"path": "eval.json", "k": k, "kind": kind})
        assert resp.status_code == 200, resp.text
        shapes[kind] = cv2.imdecode(np.frombuffer(resp.content, np.uint8), cv2.IMREAD_COLOR)
    assert shapes["image"].shape == shapes["gt"].shape == shapes["heatmap"].shape == (m["h"], m["w"], 3)
    assert shapes["gt"].max() == 255  # a defect row has its ground truth
    (root / "other.json").write_text('{"image_auroc": 0.5}')
    bad = c.get("/api/results", params={"path": "other.json"})
    assert bad.status_code == 400 and "per-image scores" in bad.json()["error"]


def test_progress_file_for_child_processes(tmp_path, monkeypatch):
    """``DEFECTFORGE_PROGRESS_FILE``: the CLI's progress callbacks also write JSON lines (each
    stage's first and last update at least), which a studio job follows."""
    from defectforge.progress import PROGRESS_FILE_ENV, rich_progress
    from defectforge.studio.cli_jobs import _Follow

    f = tmp_path / "p.jsonl"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(f))
    got = []
    follow = _Follow(f, lambda *a: got.append(a))
    with rich_progress() as cb:
        for i in range(0, 101):
            cb("features", i, 100)
        follow()
        cb("bank", 1, None)
    follow()
    lines = [json.loads(x) for x in f.read_text().splitlines()]
    assert lines[0] == {"stage": "features", "done": 0, "total": 100} and {"stage": "features", "done": 100, "total": 100} in lines
    assert got[0] == ("features", 0, 100) and ("features", 100, 100) in got and got[-1] == ("bank", 1, None)
    assert len(got) == len(lines)  # every line read exactly once across calls
    monkeypatch.delenv(PROGRESS_FILE_ENV)
    with rich_progress() as cb:
        cb("other", 1, 2)
    assert "other" not in f.read_text()


def test_cancel_reaches_the_child_when_the_server_ignores_sigint():
    """A server started with SIGINT ignored (a shell's background job: ``studio ... &``)
    passes that on to its children; the job's child takes SIGINT with the default action
    again, so cancel becomes ``KeyboardInterrupt`` in the CLI instead of being ignored."""
    import signal
    import subprocess
    import sys

    from defectforge.studio.cli_jobs import _child_setup

    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"]
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        inherited = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
        fixed = subprocess.run(probe, capture_output=True, text=True, check=True, preexec_fn=_child_setup).stdout.strip()
    finally:
        signal.signal(signal.SIGINT, old)
    assert inherited == "False"  # what a plain child of such a server gets: SIGINT ignored
    assert fixed == "True"


def test_a_failed_cli_job_says_why_even_for_a_usage_error(tmp_path):
    """click prints a usage error inside a box; the job's message is its text, not the box's border."""
    c = TestClient(create_app(tmp_path))
    cfg = {"command": "detect fit", "args": {"data": ["@sample", "@sample"], "out": "models/m.pt"}}
    r = c.post("/api/jobs", json={"kind": "cli", "config": cfg})  # a list for one value: refused at submit
    assert r.status_code == 400 and "data takes one value" in r.json()["error"]
    cfg = {"command": "detect fit", "args": {"data": "@sample", "out": "models/m.pt", "seed": "x"}}
    j = c.post("/api/jobs", json={"kind": "cli", "config": cfg}).json()
    done = _wait(c, j["id"], ("done", "failed"), timeout=120)
    assert done["status"] == "failed"
    assert "exited with 2" in done["message"] and "Invalid value for '--seed'" in done["message"], done["message"]
    assert "╰" not in done["message"]

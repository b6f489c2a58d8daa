"""Studio API through FastAPI's test client: path confinement, token, data page, author 2D
(preview = the label the synth pipeline derives; accept writes a synth-layout set), author 3D."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import warnings  # noqa: E402

with warnings.catch_warnings():  # starlette's note about its httpx client, not about this project
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from defectforge.studio.app import create_app  # noqa: E402


@pytest.fixture()
def client(tmp_path):
    return TestClient(create_app(tmp_path), raise_server_exceptions=False)


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", "C:/windows"])
def test_paths_outside_the_project_are_refused(client, bad):
    r = client.get("/api/dataset", params={"path": bad})
    assert r.status_code == 403
    assert "refused" in r.json()["error"]


def test_symlink_escape_is_refused(tmp_path, client):
    outside = tmp_path.parent / (tmp_path.name + "_outside")
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    r = client.get("/api/dataset", params={"path": "link"})
    assert r.status_code == 403 and "outside the project" in r.json()["error"]


def test_the_bundled_sample_is_read_only(client):
    r = client.post("/api/author3d/save", json={"path": "@sample/x.yaml",
                                                "instructions": {"defects": [{"type": "dent"}]}})
    assert r.status_code == 403 and "read-only" in r.json()["error"]


def test_token_is_required_when_set(tmp_path):
    c = TestClient(create_app(tmp_path, token="s3cret"))
    assert c.get("/api/project").status_code == 401
    assert c.get("/api/project", headers={"X-Studio-Token": "s3cret"}).status_code == 200
    assert c.get("/api/project", params={"token": "wrong"}).status_code == 401


def test_large_bodies_are_refused(client):
    r = client.post("/api/author3d/describe", content=b"x" * (17 * 2**20),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no content-length: the middleware counts what arrives
        for _ in range(17):
            yield b"x" * 2**20

    r = client.post("/api/author3d/describe", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_token_cookie_after_the_printed_url(tmp_path):
    c = TestClient(create_app(tmp_path, token="s3cret"))
    assert c.get("/", params={"token": "s3cret"}).status_code == 200
    assert c.get("/api/project").status_code == 200  # the cookie set by the first request
    assert c.get("/static/app.js").status_code == 200
    c.cookies.clear()
    assert c.get("/static/app.js").status_code == 401


def test_data_page_counts_filters_and_overlays(client):
    d = client.get("/api/dataset", params={"path": "@sample"}).json()
    assert d["kind"] == "2d" and d["n"] == sum(d["counts"].values())
    r = client.get("/api/samples", params={"path": "@sample", "split": "test", "label": "pitting"}).json()
    assert r["total"] == d["counts"]["test/pitting"] and all(it["label"] == "pitting" for it in r["items"])
    i = r["items"][0]["i"]
    plain = client.get("/api/thumb", params={"path": "@sample", "i": i, "size": 0, "overlay": 0})
    over = client.get("/api/thumb", params={"path": "@sample", "i": i, "size": 0, "overlay": 1})
    import cv2

    a = cv2.imdecode(np.frombuffer(plain.content, np.uint8), cv2.IMREAD_COLOR)
    b = cv2.imdecode(np.frombuffer(over.content, np.uint8), cv2.IMREAD_COLOR)
    assert a.shape == b.shape and (a != b).any()  # the mask overlay changed pixels
    assert client.get("/api/thumb", params={"path": "@sample", "i": 10_000}).status_code == 400


def test_3d_dataset_and_cloud_files_open(tmp_path, client):
    from defectforge.synth3d.cloud_io import write_xyz_label
    from defectforge.synth3d.parts import make_part

    pc = make_part("flange", 2000, 0)
    lab = np.zeros(len(pc), np.int64)
    lab[:50] = 1
    write_xyz_label(tmp_path / "part.txt", pc.points, lab)
    proj = client.get("/api/project").json()
    assert "part.txt" in proj["clouds"]
    c = client.get("/api/cloud", params={"path": "part.txt"}).json()
    assert c["n"] == 2000 and c["n_defect"] == 50
    labels = np.frombuffer(base64.b64decode(c["labels"]), np.uint8)
    assert labels.sum() == 50


def _first_good(client, split="train"):
    r = client.get("/api/samples", params={"path": "@sample", "split": split, "label": "good", "limit": 1}).json()
    return r["items"][0]["i"]


def test_author2d_preview_places_the_defect_at_the_click(client):
    i = _first_good(client)
    r = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": i, "generator": "pitting",
                                                   "click": [500, 230], "radius": 90, "seed": 3}).json()
    assert r["accepted"] and r["n_label_pixels"] > 0
    for x0, y0, x1, y1 in r["boxes"]:  # inside the disk's bounding square
        assert 410 <= x0 and x1 <= 591 and 140 <= y0 and y1 <= 321
    import cv2

    m = cv2.imdecode(np.frombuffer(client.get(f"/api/author2d/preview/{r['id']}.png", params={"kind": "mask"}).content,
                                   np.uint8), cv2.IMREAD_GRAYSCALE)
    assert int((m > 0).sum()) == r["n_label_pixels"]


def test_author2d_drawn_mask_is_the_region(client):
    import cv2

    i = _first_good(client)
    mask = np.zeros((460, 1130), np.uint8)
    mask[100:200, 700:900] = 255
    ok, buf = cv2.imencode(".png", mask)
    r = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": i, "generator": "stain",
                                                   "mask_png": base64.b64encode(buf.tobytes()).decode()}).json()
    assert r["accepted"]
    for x0, y0, x1, y1 in r["boxes"]:
        assert 700 <= x0 and x1 <= 900 and 100 <= y0 and y1 <= 200
    empty = cv2.imencode(".png", mask * 0)[1]
    e = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": i, "generator": "stain",
                                                   "mask_png": base64.b64encode(empty.tobytes()).decode()})
    assert e.status_code == 400 and e.json()["field"] == "mask"


def test_author2d_errors_name_the_field(client):
    i = _first_good(client)
    base = {"dataset": "@sample", "index": i, "generator": "scratch"}
    r = client.post("/api/author2d/preview", json={**base, "params": {"width": [5, 1]}})
    assert r.status_code == 400 and r.json()["field"] == "width"
    r = client.post("/api/author2d/preview", json={**base, "params": {"nope": 1}})
    assert r.status_code == 400 and r.json()["field"] == "nope"
    r = client.post("/api/author2d/preview", json={**base, "click": [5000, 10]})
    assert r.status_code == 400 and r.json()["field"] == "click"
    bad = client.get("/api/samples", params={"path": "@sample", "label": "pitting", "limit": 1}).json()["items"][0]["i"]
    r = client.post("/api/author2d/preview", json={**base, "index": bad})
    assert r.status_code == 400 and r.json()["field"] == "index"


def test_generator_forms_come_from_the_config_models(client):
    from defectforge.synth2d.base import GENERATORS

    gens = {g["name"]: g for g in client.get("/api/generators").json()["generators"]}
    assert set(gens) == set(GENERATORS.names())
    for name, g in gens.items():
        props = GENERATORS.get(name).Config.model_json_schema()["properties"]
        assert [f["name"] for f in g["fields"]] == list(props)
        for f in g["fields"]:
            assert f["default"] == props[f["name"]].get("default")


def test_accept_writes_a_synth_layout_set(tmp_path, client):
    from defectforge.data.formats import load_dataset

    i = _first_good(client)
    ids = []
    for gen, click in (("scratch", [300, 200]), ("pitting", [700, 250])):
        r = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": i, "generator": gen,
                                                       "click": click, "radius": 80}).json()
        assert r["accepted"]
        ids.append(r["id"])
        a = client.post("/api/author2d/accept", json={"id": r["id"], "set": "sets/s1", "formats": ["mvtec", "coco"]})
        assert a.status_code == 200, a.json()
    out = tmp_path / "sets" / "s1"
    for name in ("manifest.csv", "dataset_card.json", "dataset_card.md", "export/mvtec", "export/coco"):
        assert (out / name).exists(), name
    ds = load_dataset(out)
    assert sorted(s.label for s in ds) == ["pitting", "scratch"]
    card = json.loads((out / "dataset_card.json").read_text())
    assert card["samples"]["accepted"] == 2 and card["by_generator"] == {"pitting": 1, "scratch": 1}
    # the written image is the previewed one
    img = client.get(f"/api/author2d/preview/{ids[1]}.png", params={"kind": "image"}).content
    from defectforge.data.image_io import read_image
    import cv2

    prev = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    written = [s for s in ds if s.label == "pitting"][0]
    assert np.array_equal(read_image(written.path), prev)
    # the set and its exports open in the data page (manifest, MVTec, COCO readers)
    for path, fmt in (("sets/s1", "manifest"), ("sets/s1/export/mvtec", "mvtec"), ("sets/s1/export/coco", "coco")):
        d = client.get("/api/dataset", params={"path": path}).json()
        assert (d["format"], d["n"], d["defect_types"]) == (fmt, 2, ["pitting", "scratch"]), (path, d)
    # a folder that is not a set is refused, and nothing is written into it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    r = client.post("/api/author2d/accept", json={"id": ids[0], "set": "other"})
    assert r.status_code == 400 and sorted(os.listdir(tmp_path / "other")) == ["keep.txt"]


def test_author3d_place_preview_describe_save(tmp_path, client):
    from defectforge.synth3d.instructions import load_instructions

    L = client.post("/api/author3d/load", json={"kind": "part", "name": "flange", "n_points": 5000}).json()
    assert L["n"] == 5000 and L["n_defect"] == 0
    I = client.post("/api/author3d/instructions", json={"cloud": L["id"], "operator": "dent", "point": 42}).json()
    loc = I["instructions"]["defects"][0]["location"]
    assert loc["kind"] == "point"
    P = client.post("/api/author3d/preview", json={"cloud": L["id"], "instructions": I["instructions"]}).json()
    labels = np.frombuffer(base64.b64decode(P["labels"]), np.uint8)
    assert P["n_defect"] > 0 and labels.sum() == P["n_defect"]
    # the defect is where the click was: its centre lies near the clicked point
    centre = np.array(P["records"][0]["center"])
    assert np.linalg.norm(centre - np.array(loc["xyz"])) <= 0.011 * P["diag"] + 1e-6
    bad = client.post("/api/author3d/instructions", json={"cloud": L["id"], "operator": "dent", "point": 42,
                                                          "params": {"radius": [0.5, 0.6]}})
    assert bad.status_code == 400 and bad.json()["field"] == "radius"
    d = client.post("/api/author3d/describe", json={"text": "two scratches on the top and a dent"}).json()
    assert [x["type"] for x in d["instructions"]["defects"]] == ["scratch", "dent"]
    e = client.post("/api/author3d/describe", json={"text": "a blorp on the top"})
    assert e.status_code == 400 and e.json()["field"] == "text" and "defect type" in e.json()["error"]
    s = client.post("/api/author3d/save", json={"path": "inst/a.yaml", "instructions": d["instructions"]}).json()
    assert load_instructions(tmp_path / s["path"]).defects[0].type == "scratch"


def test_review_decisions_rebuild_the_manifest(tmp_path, client):
    from defectforge.data.formats import load_dataset

    for k in range(3):
        r = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": k, "generator": "pitting",
                                                       "click": [500, 230], "radius": 100}).json()
        assert client.post("/api/author2d/accept", json={"id": r["id"], "set": "sets/r", "formats": ["mvtec"]}).status_code == 200
    items = client.get("/api/review", params={"set": "sets/r"}).json()["items"]
    assert [it["decision"] for it in items] == ["undecided"] * 3
    d = client.post("/api/review/decide", json={"set": "sets/r", "index": items[1]["index"], "decision": "rejected"}).json()
    assert d["kept"] == 2
    out = tmp_path / "sets" / "r"
    names = sorted(s.path.name for s in load_dataset(out))
    assert items[1]["file"].split("/")[-1] not in names and len(names) == 2
    assert len(list((out / "export" / "mvtec").rglob("*.png"))) < len(list((out / "images").glob("*.png"))) * 2
    assert (out / items[1]["file"]).is_file()  # the image stays: a decision can be undone
    # a later accept keeps the decision
    r = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": 4, "generator": "pitting",
                                                   "click": [500, 230], "radius": 100}).json()
    client.post("/api/author2d/accept", json={"id": r["id"], "set": "sets/r", "formats": ["mvtec"]})
    assert len(load_dataset(out)) == 3
    client.post("/api/review/decide", json={"set": "sets/r", "index": items[1]["index"], "decision": "undecided"})
    assert len(load_dataset(out)) == 4
    bad = client.post("/api/review/decide", json={"set": "sets/r", "index": 99, "decision": "rejected"})
    assert bad.status_code == 400 and bad.json()["field"] == "index"
    crop = client.get("/api/review/crop", params={"set": "sets/r", "index": 0, "size": 128})
    real = client.get("/api/review/real", params={"real": "@sample", "label": "pitting", "size": 128})
    import cv2

    a = cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR)
    b = cv2.imdecode(np.frombuffer(real.content, np.uint8), cv2.IMREAD_COLOR)
    assert a.shape == b.shape == (128, 128, 3)  # same window, same zoom
    assert client.get("/api/review", params={"set": "@sample"}).status_code == 400


def test_studio_command_errors(tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli import app

    r = CliRunner().invoke(app, ["studio", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "project folder not found" in r.output
    r = CliRunner().invoke(app, ["studio", str(tmp_path), "--port", "70000"])
    assert r.exit_code == 2 and "not a valid port" in r.output
    r = CliRunner().invoke(app, ["studio", str(tmp_path), "--data", "bsdata"])
    assert r.exit_code == 2 and "give NAME=FOLDER" in r.output
    r = CliRunner().invoke(app, ["studio", str(tmp_path), "--data", f"x={tmp_path / 'nope'}"])
    assert r.exit_code == 2 and "data folder to mount not found" in r.output


class _FakeLLM:
    """Stands in for defectforge.llm.ChatClient (no model server here): answers with a fixed
    instruction set, or fails like an unreachable server."""

    model = "fake"

    def __init__(self, answer=None):
        self.answer = answer
        self.asked = []

    def complete_json(self, messages, schema_model):
        from defectforge.llm import LLMConnectionError

        self.asked.append(messages[-1]["content"])
        if self.answer is None:
            raise LLMConnectionError("connection refused")
        return schema_model.model_validate(self.answer)


def test_describe_uses_the_llm_when_configured_and_falls_back(tmp_path):
    llm = _FakeLLM({"version": 1, "defects": [{"type": "crack", "location": {"kind": "region", "name": "side"}}]})
    c = TestClient(create_app(tmp_path, llm=llm))
    assert c.get("/api/operators").json()["llm"] == "fake"
    r = c.post("/api/author3d/describe", json={"text": "a crack on the side wall"}).json()
    assert r["parser"] == "llm" and r["instructions"]["defects"][0]["type"] == "crack"
    assert "a crack on the side wall" in llm.asked[0]
    down = TestClient(create_app(tmp_path, llm=_FakeLLM(None)))
    r = down.post("/api/author3d/describe", json={"text": "a dent on the top"}).json()
    assert r["parser"].startswith("rules (LLM unavailable") and r["instructions"]["defects"][0]["type"] == "dent"
    r = c.post("/api/author3d/describe", json={"text": "a dent", "use_llm": False}).json()
    assert r["parser"] == "rules"


def _png(arr) -> bytes:
    import cv2

    return cv2.imencode(".png", arr)[1].tobytes()


def test_upload_image_mask_and_cloud_decoded_by_the_cli_readers(tmp_path, client):
    from defectforge.data.formats import load_dataset

    img = np.full((40, 60, 3), 120, np.uint8)
    r = client.put("/api/upload", params={"path": "mine/images/a.png", "kind": "image"}, content=_png(img))
    assert r.status_code == 200, r.json()
    assert r.json()["shape"] == [40, 60, 3] and (tmp_path / "mine" / "images" / "a.png").is_file()
    m = np.zeros((40, 60), np.uint8)
    m[10:20, 10:30] = 255
    r = client.put("/api/upload", params={"path": "mine/masks/a.png", "kind": "mask", "image": "mine/images/a.png"},
                   content=_png(m))
    assert r.status_code == 200 and r.json()["defect_pixels"] == 200
    wrong = client.put("/api/upload", params={"path": "mine/masks/b.png", "kind": "mask", "image": "mine/images/a.png"},
                       content=_png(np.zeros((10, 10), np.uint8)))
    assert wrong.status_code == 400 and "but the image is 60x40" in wrong.json()["error"]
    cloud = "\n".join(f"{x} {x * 2} {x * 3}" for x in range(50)).encode()
    r = client.put("/api/upload", params={"path": "clouds/c.xyz", "kind": "cloud"}, content=cloud)
    assert r.status_code == 200 and r.json()["n_points"] == 50
    assert "clouds/c.xyz" in client.get("/api/project").json()["clouds"]
    # an uploaded image is a dataset the data page (and the CLI) reads
    (tmp_path / "mine" / "manifest.csv").write_text("file,mask,split,label\nimages/a.png,masks/a.png,train,dent\n")
    assert len(load_dataset(tmp_path / "mine")) == 1
    # never replaced silently
    again = client.put("/api/upload", params={"path": "mine/images/a.png", "kind": "image"}, content=_png(img))
    assert again.status_code == 400 and "already exists" in again.json()["error"]
    assert client.put("/api/upload", params={"path": "mine/images/a.png", "kind": "image", "overwrite": 1},
                      content=_png(img)).status_code == 200


def test_bad_uploads_are_refused_with_one_line_and_leave_nothing(tmp_path, client, monkeypatch):
    bad = client.put("/api/upload", params={"path": "up/x.png", "kind": "image"}, content=b"\x89PNG\r\n\x1a\nnot really")
    assert bad.status_code == 400 and bad.json()["field"] == "file"
    assert bad.json()["error"].startswith("x.png: ") and "\n" not in bad.json()["error"]
    monkeypatch.setenv("DEFECTFORGE_MAX_PIXELS", "1000")  # the CLI's limit: a 100x100 image is a "bomb" here
    bomb = client.put("/api/upload", params={"path": "up/big.png", "kind": "image"},
                      content=_png(np.zeros((100, 100), np.uint8)))
    assert bomb.status_code == 400 and "decompression bomb" in bomb.json()["error"]
    broken = client.put("/api/upload", params={"path": "up/c.ply", "kind": "cloud"}, content=b"ply\nformat nonsense\n")
    assert broken.status_code == 400 and "\n" not in broken.json()["error"]
    assert not (tmp_path / "up").exists() or list((tmp_path / "up").iterdir()) == []  # no file, no leftover temp
    for params, code in (({"path": "../x.png"}, 403), ({"path": "/tmp/x.png"}, 403), ({"path": "@sample/x.png"}, 403),
                         ({"path": "up/x.exe"}, 400), ({"path": "up/x.png", "kind": "script"}, 400)):
        r = client.put("/api/upload", params={"kind": "image", **params}, content=_png(np.zeros((4, 4), np.uint8)))
        assert r.status_code == code, (params, r.json())


def test_upload_size_limit(tmp_path, monkeypatch):
    from defectforge.studio import upload

    monkeypatch.setattr(upload, "UPLOAD_MAX", 2**20)
    c = TestClient(create_app(tmp_path), raise_server_exceptions=False)
    r = c.put("/api/upload", params={"path": "up/x.png", "kind": "image"}, content=b"x" * (2**20 + 10))
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert not (tmp_path / "up").exists()


def test_data_mounts_are_read_only_and_listed(tmp_path):
    from defectforge.datasets import sample_path

    (tmp_path / "p").mkdir()
    c = TestClient(create_app(tmp_path / "p", mounts={"real": sample_path()}), raise_server_exceptions=False)
    assert any(d["path"] == "@real" for d in c.get("/api/project").json()["datasets"])
    assert c.get("/api/dataset", params={"path": "@real"}).json()["n"] > 0
    r = c.put("/api/upload", params={"path": "@real/x.png", "kind": "image"}, content=_png(np.zeros((4, 4), np.uint8)))
    assert r.status_code == 403 and "read-only" in r.json()["error"]
    assert c.get("/api/dataset", params={"path": "@nope"}).status_code == 403


# -- bad input found by an audit of the API (2026-12-07): one JSON error {error, field}, never a 500


@pytest.mark.parametrize("path", ["datasets/\x00x", "a" * 300 + ".png", "d/" * 3000])
def test_nul_bytes_and_overlong_paths_are_refused_not_500(client, path):
    r = client.get("/api/dataset", params={"path": path})
    assert r.status_code == 403 and r.json()["field"] == "path"


def test_request_validation_errors_use_the_error_format(client):
    r = client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] and "detail" not in r.json()
    r = client.post("/api/author3d/describe", content=b'{"text": "a 2 mm dent", "part_diag_mm": NaN}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "part_diag_mm", r.json()


def test_generator_folder_parameters_stay_in_the_project(tmp_path, client):
    outside = tmp_path.parent / (tmp_path.name + "_tex")
    outside.mkdir()
    for params, status in (({"source": "folder", "folder": str(outside)}, 403),
                           ({"source": "folder", "folder": "../" + outside.name}, 403),
                           ({"source": "folder", "folder": "nope"}, 400)):
        r = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": 0, "generator": "texture",
                                                       "params": params, "click": [20, 20]})
        assert r.status_code == status, r.json()
        assert status == 403 or r.json()["field"] == "folder"
    r = client.post("/api/jobs", json={"kind": "synth", "out": "o", "config": {
        "source": {"path": "@sample"}, "generators": [{"name": "texture", "params": {"source": "folder",
                                                                                   "folder": str(outside)}}]}})
    assert r.status_code == 403


@pytest.mark.parametrize("n,field", [(10**30, "config.n"), ("abc", "config.n"), (None, "config.n"), (0, "config.n")])
def test_synth3d_job_counts_are_checked_at_submit(client, n, field):
    from defectforge.synth3d.instructions import InstructionSet

    inst = InstructionSet.model_validate({"defects": [{"type": "dent"}]}).model_dump(mode="json")
    r = client.post("/api/jobs", json={"kind": "synth3d", "out": "o3", "config": {"n": n, "instructions": inst}})
    assert r.status_code == 400 and r.json()["field"] == field, r.json()
    r = client.post("/api/jobs", json={"kind": "synth3d", "out": "o3", "config": {"input": "part:nope",
                                                                                "instructions": inst}})
    assert r.status_code == 400 and "nope" in r.json()["error"]


def test_bad_mask_png_and_malformed_result_files_are_400(tmp_path, client):
    r = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": 0, "generator": "scratch",
                                                   "mask_png": "notbase64!!"})
    assert r.status_code == 400 and r.json()["field"] == "mask_png"
    r = client.post("/api/author2d/preview", json={"dataset": "@sample", "index": 0, "generator": "scratch",
                                                   "mask_png": base64.b64encode(b"not a png").decode()})
    assert r.status_code == 400 and r.json()["field"] == "mask_png" and "/tmp" not in r.json()["error"]
    (tmp_path / "pr").mkdir()
    (tmp_path / "pr" / "scores.csv").write_text("file,score,anomalous,threshold,heatmap,mask\na.png,abc,0,,,m.png\n")
    r = client.get("/api/results", params={"path": "pr"})
    assert r.status_code == 400 and "line 2: score 'abc'" in r.json()["error"]
    (tmp_path / "ev.json").write_text(json.dumps({"per_image": [{"file": "/etc/passwd", "score": "x"}]}))
    r = client.get("/api/results", params={"path": "ev.json"})
    assert r.status_code == 400 and "per_image[0]" in r.json()["error"]

"""Ultralytics adapter, tested against a small fake ``ultralytics`` package (CI cannot install
the real one: AGPL extra in a separate venv) that records what we hand it."""

from __future__ import annotations

import json
import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from defectforge.data import Dataset, Sample, load_dataset, write_dataset
from defectforge.errors import ConfigError
from defectforge.supervised import TrainConfig, evaluate_boxes, gt_boxes
from defectforge.supervised import ultralytics_adapter as ua
from defectforge.cli import area_app  # wired as the console script: error boundary, --config, --device

ENV_KEYS = ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR")


def _data(n: int, seed: int = 0, split: str = "train") -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = (rng.random((40, 56, 3)) * 40 + 100).astype(np.uint8)
        if i % 3 == 2:
            out.append(Sample(label="good", split=split, image_array=img, meta={"name": f"{split}{i}"}))
            continue
        m = np.zeros((40, 56), bool)
        y, x = rng.integers(2, 24, 2)
        m[y:y + 10, x:x + 12] = True
        label = "pit" if i % 3 == 0 else "scratch"
        out.append(Sample(label=label, split=split, image_array=img, mask_array=m, meta={"name": f"{split}{i}"}))
    return out


@pytest.fixture
def clean_env(monkeypatch):
    for k in ENV_KEYS:
        monkeypatch.delenv(k, raising=False)  # restored after the test


class _Settings(dict):
    def update(self, *a, **kw):  # ultralytics' SettingsManager saves on update
        super().update(*a, **kw)
        self.saved = True


@pytest.fixture
def fake_ultralytics(monkeypatch, clean_env):
    """Inject a fake ``ultralytics`` that records calls; training writes a dummy weights file."""
    calls: dict = {"init": [], "train": [], "predict": [], "env_at_import": None}
    settings = _Settings(sync=True, datasets_dir="/somewhere", weights_dir="/w", runs_dir="/r")

    class Boxes:
        def __init__(self, h, w):
            self.xyxy = np.array([[1.0, 2.0, w - 3.0, h - 4.0]])
            self.cls = np.array([1.0])
            self.conf = np.array([0.9])

    class YOLO:
        def __init__(self, model):
            calls["init"].append(model)
            self.model = model

        def train(self, **kw):
            calls["train"].append({"kwargs": kw, "env": {k: os.environ.get(k) for k in ENV_KEYS}})
            torch_mod = sys.modules["torch"]
            torch_mod.manual_seed(1234)  # ultralytics seeds the global generators
            np.random.seed(1234)
            random.seed(1234)
            save = Path(kw["project"]) / kw["name"]
            (save / "weights").mkdir(parents=True, exist_ok=True)
            (save / "weights" / "best.pt").write_bytes(b"fake-weights")
            (save / "results.csv").write_text("  epoch, metrics/mAP50(B)\n 1, 0.0\n 2, 0.25\n")
            self.trainer = types.SimpleNamespace(best=str(save / "weights" / "best.pt"),
                                                 last=str(save / "weights" / "last.pt"), save_dir=str(save))

        def predict(self, images, **kw):
            calls["predict"].append({"n": len(images), "kwargs": kw, "first_pixel": images[0][0, 0].tolist()})
            return [types.SimpleNamespace(boxes=Boxes(*im.shape[:2])) for im in images]

    mod = types.ModuleType("ultralytics")
    mod.YOLO = YOLO
    utils = types.ModuleType("ultralytics.utils")
    utils.SETTINGS = settings
    mod.utils = utils
    monkeypatch.setitem(sys.modules, "ultralytics", mod)
    monkeypatch.setitem(sys.modules, "ultralytics.utils", utils)
    calls["settings"] = settings
    return calls


def test_offline_environment_sets_variables_and_fonts(tmp_path, clean_env):
    import matplotlib

    env = ua.offline_environment(tmp_path / "cfg")
    assert env == {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "YOLO_CONFIG_DIR": str((tmp_path / "cfg").resolve())}
    assert all(os.environ[k] == v for k, v in env.items())
    font = (Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf").read_bytes()
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        assert (tmp_path / "cfg" / "Ultralytics" / name).read_bytes() == font
    assert ua.offline_environment(tmp_path / "cfg") == env  # idempotent


def test_model_names_never_download(tmp_path):
    assert ua.resolve_model("yolov8n") == "yolov8n.yaml" and ua.resolve_model("yolo11n") == "yolo11n.yaml"
    assert ua.resolve_model("yolov8s.yaml") == "yolov8s.yaml"  # bundled config, found by name
    with pytest.raises(ConfigError, match="download"):
        ua.resolve_model("yolov8n.pt")
    with pytest.raises(ConfigError, match="URL"):
        ua.resolve_model("https://example.com/yolov8n.pt")
    local = tmp_path / "mine.pt"
    local.write_bytes(b"x")
    assert ua.resolve_model(str(local)) == str(local.resolve())
    with pytest.raises(ConfigError, match="unknown ultralytics model"):
        ua.resolve_model("yolov99")
    assert ua.is_ultralytics_arch("yolov8n") and ua.is_ultralytics_arch("x.pt")
    assert not ua.is_ultralytics_arch("yolox-nano") and not ua.is_ultralytics_arch("fcos-lite0")
    with pytest.raises(ConfigError, match="train-detector --arch yolo11n"):
        TrainConfig(arch="yolo11n").check()


def test_dataset_export_round_trips_boxes(tmp_path):
    train, val = _data(6), _data(3, seed=1, split="whatever")
    yml, names = ua.export_yolo_dataset(train, val, tmp_path / "y")
    spec = yaml.safe_load(yml.read_text())
    assert spec["path"] == str((tmp_path / "y").resolve()) and Path(spec["path"]).is_absolute()
    assert spec["train"] == "images/train" and spec["val"] == "images/val"
    assert spec["names"] == names == ["pit", "scratch"] and spec["nc"] == 2
    back = load_dataset(tmp_path / "y")
    assert back.counts().get("val/pit", 0) + back.counts().get("val/scratch", 0) + back.counts()["val/good"] == 3
    by_name = {s.name: s for s in back if s.split == "train"}
    def key(s):
        return sorted((round(b.x0, 3), round(b.y0, 3), round(b.x1, 3), round(b.y1, 3), b.label) for b in gt_boxes(s))

    for s in train:
        assert key(by_name[s.name]) == key(s)
    assert sum(len(gt_boxes(s)) for s in train) == 4
    # no validation images: ultralytics still needs a val entry
    yml2, _ = ua.export_yolo_dataset(train, [], tmp_path / "y2")
    assert yaml.safe_load(yml2.read_text())["val"] == "images/train"


def test_training_goes_through_ultralytics_offline_and_from_scratch(tmp_path, fake_ultralytics):
    import torch

    train, val, test = _data(6), _data(3, seed=1), _data(3, seed=2, split="test")
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    det = ua.train_ultralytics(train, tmp_path / "run", "yolov8n", val=val, image_size=64, epochs=2,
                               batch_size=2, patience=3, seed=7)
    assert fake_ultralytics["init"][0] == "yolov8n.yaml"
    (call,) = fake_ultralytics["train"]
    kw = call["kwargs"]
    assert kw["pretrained"] is False and kw["device"] == "cpu" and kw["amp"] is False and kw["workers"] == 0
    assert kw["epochs"] == 2 and kw["imgsz"] == 64 and kw["batch"] == 2 and kw["seed"] == 7 and kw["plots"] is False
    assert not any(str(v).endswith(".pt") for v in kw.values())
    assert Path(kw["project"]).is_relative_to((tmp_path / "run").resolve())
    assert call["env"] == {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0",
                           "YOLO_CONFIG_DIR": str((tmp_path / "run" / "ultralytics_config").resolve())}
    assert fake_ultralytics["settings"]["sync"] is False
    assert fake_ultralytics["settings"]["weights_dir"].startswith(str(tmp_path.resolve()))
    assert yaml.safe_load(Path(kw["data"]).read_text())["names"] == ["pit", "scratch"]
    # the caller's global random state is untouched by ultralytics' seeding
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist() and random.getstate() == py_state
    assert (tmp_path / "run" / "model.pt").read_bytes() == b"fake-weights"
    assert det.classes_ == ["pit", "scratch"] and [h["metrics/mAP50(B)"] for h in det.info_["history"]] == [0.0, 0.25]
    # prediction: BGR images in, boxes in original pixels with our class names out, scored by our mAP
    test[0].image_array[0, 0] = (200, 10, 50)
    preds = det.predict(test[:1]).boxes
    assert fake_ultralytics["predict"][0]["first_pixel"] == [50, 10, 200]
    assert fake_ultralytics["predict"][0]["kwargs"]["device"] == "cpu"
    assert preds == [[ua.Box(1.0, 2.0, 53.0, 36.0, "scratch", 0.9)]]
    m = evaluate_boxes(det, test)
    assert m["n_images"] == 3 and 0.0 <= m["map50"] <= 1.0
    # a finished run is reused; other settings in the same folder are refused
    again = ua.train_ultralytics(train, tmp_path / "run", "yolov8n", val=val, image_size=64, epochs=2,
                                 batch_size=2, patience=3, seed=7)
    assert len(fake_ultralytics["train"]) == 1 and again.classes_ == det.classes_
    with pytest.raises(ConfigError, match="other settings"):
        ua.train_ultralytics(train, tmp_path / "run", "yolo11n", val=val, image_size=64, epochs=2)
    assert len(fake_ultralytics["train"]) == 1


def _cli_app():

    from defectforge.supervised import cli as scli

    app = area_app(scli)
    return app


def test_cli_dispatches_ultralytics_archs(tmp_path, fake_ultralytics):
    from typer.testing import CliRunner

    root = write_dataset(Dataset(_data(9) + _data(3, seed=2, split="test")), tmp_path / "ds", "manifest")
    r = CliRunner().invoke(_cli_app(), ["train-detector", str(root), "-o", str(tmp_path / "run"), "--arch", "yolo11n",
                                        "--image-size", "64", "--epochs", "1", "--val-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    assert fake_ultralytics["init"][0] == "yolo11n.yaml" and fake_ultralytics["train"][0]["kwargs"]["pretrained"] is False
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["arch"] == "yolo11n" and m["classes"] == ["pit", "scratch"] and m["test"]["n_images"] == 3
    r = CliRunner().invoke(_cli_app(), ["train-detector", str(root), "-o", str(tmp_path / "r2"), "--arch", "yolov8n.pt"])
    assert r.exit_code == 2 and "download" in r.output and not fake_ultralytics["train"][1:]


def test_missing_ultralytics_names_the_pip_command(tmp_path, monkeypatch, clean_env):
    from typer.testing import CliRunner

    monkeypatch.setitem(sys.modules, "ultralytics", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'pip install "defectforge\[yolo\]"'):
        ua.train_ultralytics(_data(3), tmp_path / "x", "yolov8n")
    root = write_dataset(Dataset(_data(6)), tmp_path / "ds", "manifest")
    r = CliRunner().invoke(_cli_app(), ["train-detector", str(root), "-o", str(tmp_path / "run"), "--arch", "yolov8n"])
    assert r.exit_code == 2 and 'pip install "defectforge[yolo]"' in r.output
    assert not (tmp_path / "run").exists()

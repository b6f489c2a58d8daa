"""Supervised box detectors: build, train a few steps, checkpoint/resume, mAP, bad input, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from defectforge.data import Dataset, Sample, write_dataset
from defectforge.errors import ConfigError, InputError
from defectforge.supervised import BoxDetector, TrainConfig, build_detector, evaluate_boxes, train_detector
from defectforge.supervised.train import split_train_val
from defectforge.cli import area_app  # wired as the console script: error boundary, --config, --device

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZE = 48


def _data(n: int = 8, seed: int = 0, split: str = "train") -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = (rng.random((SIZE, SIZE + 16, 3)) * 40 + 110).astype(np.uint8)
        if i % 4 == 3:
            out.append(Sample(label="good", split=split, image_array=img, meta={"name": f"{split}{i}"}))
            continue
        m = np.zeros(img.shape[:2], bool)
        y, x = rng.integers(4, SIZE - 20, 2)
        m[y:y + 14, x:x + 14] = True
        img[m] = 15
        out.append(Sample(label="pit", split=split, image_array=img, mask_array=m, meta={"name": f"{split}{i}"}))
    return out


def _cfg(**kw) -> TrainConfig:
    base = dict(arch="fcos-lite0", image_size=SIZE, epochs=2, batch_size=4, lr=0.01, warmup_iters=1,
                val_fraction=0.0, neg_per_pos=None)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("arch", ["fasterrcnn-lite0", "retinanet-lite0"])
def test_other_architectures_train_step(arch):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_detector(arch, 1, image_size=SIZE)
    model.train()
    x = [torch.rand(3, SIZE, SIZE + 16)]
    t = [{"boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0]]), "labels": torch.tensor([1])}]
    losses = model(x, t)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    assert sum(p.numel() for p in model.backbone.body.parameters() if p.requires_grad) == 0  # frozen body


def test_training_reduces_loss_and_predictions_go_through_map(tmp_path):
    data = _data(8)
    det = train_detector(data, tmp_path / "run", _cfg(epochs=4))
    losses = [h["loss"] for h in det.info_["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    m = evaluate_boxes(det, _data(4, seed=1, split="test"))
    assert m["n_gt_boxes"] == 3 and 0.0 <= m["map50"] <= 1.0 and 0.0 <= m["map50_95"] <= m["map50"]
    preds = det.predict(data[:2]).boxes
    assert all(b.score is not None and b.label == "pit" for p in preds for b in p)
    assert (tmp_path / "run" / "model.pt").exists() and (tmp_path / "run" / "history.json").exists()
    again = BoxDetector.load(tmp_path / "run" / "model.pt")
    assert again.classes_ == ["pit"]
    for a, b in zip(again.model_.state_dict().values(), det.model_.state_dict().values()):
        assert torch.equal(a, b)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    data = _data(8)
    full = train_detector(data, tmp_path / "full", _cfg(epochs=2))

    def stop(epoch, rec):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_detector(data, tmp_path / "cut", _cfg(epochs=2), on_epoch=stop)
    assert (tmp_path / "cut" / "checkpoint.pt").exists() and not (tmp_path / "cut" / "model.pt").exists()
    resumed = train_detector(data, tmp_path / "cut", _cfg(epochs=2))
    assert resumed.info_["resumed_from_epoch"] == 1 and len(resumed.info_["history"]) == 2
    for a, b in zip(full.model_.state_dict().values(), resumed.model_.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    # a different run in the same folder is refused, nothing is overwritten
    before = (tmp_path / "cut" / "model.pt").read_bytes()
    with pytest.raises(ConfigError, match="different run"):
        train_detector(data, tmp_path / "cut", _cfg(epochs=2, lr=0.02))
    assert (tmp_path / "cut" / "model.pt").read_bytes() == before


def test_early_stopping_uses_validation_from_train(tmp_path):
    data = _data(12)
    tr, va = split_train_val(data, 0.25, 0)
    assert {s.name for s in tr}.isdisjoint({s.name for s in va})
    assert any(s.is_defect for s in va) and any(not s.is_defect for s in va)
    det = train_detector(data, tmp_path / "r", _cfg(epochs=3, val_fraction=0.25, patience=1))
    hist = det.info_["history"]
    assert all("val_map50" in h for h in hist)
    assert det.info_["n_val"] == len(va)


def test_bad_input(tmp_path, monkeypatch):
    data = _data(4)
    with pytest.raises(ConfigError, match="unknown detector architecture"):
        train_detector(data, tmp_path / "a", _cfg(arch="yolo-nope"))
    unlabeled = [Sample(label="pit", image_array=data[0].image, meta={"name": "x"})] + data
    with pytest.raises(InputError, match="no labels"):
        train_detector(unlabeled, tmp_path / "b", _cfg())
    with pytest.raises(InputError, match="not among the detector's classes"):
        train_detector(data, tmp_path / "c", _cfg(), classes=["scratch"])
    with pytest.raises(InputError, match="no defect samples"):
        train_detector([s for s in data if not s.is_defect], tmp_path / "d", _cfg())
    monkeypatch.setattr("defectforge.supervised.train_data._mem_available", lambda: 1000)
    with pytest.raises(ConfigError, match="GiB"):
        train_detector(data, tmp_path / "e", _cfg())
    assert not (tmp_path / "e" / "model.pt").exists()


def test_train_detector_cli(tmp_path):
    from typer.testing import CliRunner

    from defectforge.supervised import cli as scli

    app = area_app(scli)
    root = write_dataset(Dataset(_data(8) + _data(4, seed=2, split="test")), tmp_path / "ds", "manifest")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-detector", str(root), "-o", str(out), "--arch", "fcos-lite0",
                                 "--image-size", str(SIZE), "--epochs", "1", "--val-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["test"]["map50"] <= 1.0 and m["n_val"] >= 1
    # the same data as a YOLO detection set (boxes only, no masks)
    yolo = write_dataset(Dataset(_data(8) + _data(4, seed=2, split="test")), tmp_path / "yolo", "yolo", mode="detect")
    r = CliRunner().invoke(app, ["train-detector", str(yolo), "-o", str(tmp_path / "ry"), "--arch", "fcos-lite0",
                                 "--image-size", str(SIZE), "--epochs", "1", "--val-fraction", "0"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ry" / "metrics.json").read_text())["test"]["n_gt_boxes"] == 3
    r = CliRunner().invoke(app, ["train-detector", str(root), "-o", str(tmp_path / "x"), "--arch", "nope"])
    assert r.exit_code == 2 and "unknown detector architecture" in r.output


def test_device_is_a_run_time_setting(tmp_path):
    from defectforge.runfolder import load_state

    data = _data(8)
    det = train_detector(data, tmp_path / "run", _cfg(epochs=1), device="cpu")
    assert det.device == "cpu" and next(det.model_.parameters()).device.type == "cpu"
    saved = load_state(tmp_path / "run" / "model.pt", "model")
    assert "device" not in saved["params"] and "progress" not in saved["params"]
    ck = load_state(tmp_path / "run" / "checkpoint.pt")
    assert all(v.device.type == "cpu" for v in ck["model"].values())
    # the device is not part of the run: 'auto' finds the finished run of the 'cpu' one
    again = train_detector(data, tmp_path / "run", _cfg(epochs=1), device="auto")
    for a, b in zip(again.model_.state_dict().values(), det.model_.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    loaded = BoxDetector.load(tmp_path / "run" / "model.pt", device="auto")
    assert loaded.device == "auto" and len(loaded.predict(data[:1]).boxes) == 1
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            BoxDetector.from_config(_cfg(), ["pit"], device="cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        BoxDetector.from_config(_cfg(), ["pit"], device="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda_and_resumes_on_the_cpu(tmp_path):
    data = _data(8)

    def stop(epoch, rec):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # one epoch on the GPU, then interrupted
        train_detector(data, tmp_path / "run", _cfg(epochs=3, random_init=True), device="cuda", on_epoch=stop)
    from defectforge.runfolder import load_state

    st = load_state(tmp_path / "run" / "checkpoint.pt")
    assert st["epoch"] == 0 and all(v.device.type == "cpu" for v in st["model"].values())
    # the same run finishes on the CPU
    det = train_detector(data, tmp_path / "run", _cfg(epochs=3, random_init=True), device="cpu")
    assert det.info_["resumed_from_epoch"] == 1 and len(det.info_["history"]) == 3
    gpu = BoxDetector.load(tmp_path / "run" / "model.pt", device="cuda")
    assert next(gpu.model_.parameters()).is_cuda
    a, b = gpu.predict(data[:3]).pred_score, det.predict(data[:3]).pred_score
    assert np.allclose(a, b, atol=1e-3)


def test_steps_per_epoch_fixes_the_optimiser_steps_whatever_the_data(tmp_path):
    """``steps_per_epoch``: every run takes epochs x steps optimiser steps, more or fewer images
    alike (equal-steps comparisons of training sets); the default stays one pass."""
    from defectforge.supervised.train import _epoch_order

    def steps(data, cfg, name):
        seen = []
        train_detector(data, tmp_path / name, cfg, progress=lambda stage, done, total: seen.append((done, total)))
        return seen

    small, big = _data(8), _data(16, seed=3)
    one_pass = steps(small, _cfg(epochs=2), "a")  # 8 images, batch 4: 2 steps per epoch
    assert one_pass == [(1, 2), (2, 2)] * 2
    assert len(steps(big, _cfg(epochs=2), "b")) == 8  # 16 images: 4 per epoch
    fixed = _cfg(epochs=2, steps_per_epoch=3)
    assert steps(small, fixed, "c") == [(1, 3), (2, 3), (3, 3)] * 2
    assert steps(big, fixed, "d") == [(1, 3), (2, 3), (3, 3)] * 2
    # the order cycles seeded permutations: every image once before any twice
    gen = torch.Generator().manual_seed(0)
    order = _epoch_order(list(range(5)), 12, gen)
    assert len(order) == 12 and sorted(order[:5]) == list(range(5)) and sorted(order[5:10]) == list(range(5))
    gen2 = torch.Generator().manual_seed(0)
    assert _epoch_order(list(range(5)), 12, gen2) == order
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="steps_per_epoch"):
            train_detector(small, tmp_path / "e", _cfg(steps_per_epoch=bad))

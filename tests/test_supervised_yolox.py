"""YOLOX-nano behind the torchvision detection interface: contract, learning, persistence, resume."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from defectforge.data import Dataset, Sample, write_dataset
from defectforge.errors import ConfigError
from defectforge.supervised import BoxDetector, TrainConfig, build_detector, evaluate_boxes, train_detector

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64


def _have_yolox() -> bool:
    from defectforge.supervised.yolox import _yolox_modules

    try:
        _yolox_modules()
    except ConfigError:
        return False
    return True


needs_yolox = pytest.mark.skipif(not _have_yolox(), reason="yolox-datamint not installed "
                                 "(pip install --no-deps yolox-datamint==0.3.1 && pip install '.[yolox]')")


def _squares(n: int, seed: int = 0, split: str = "train", size: int = SIZE) -> list[Sample]:
    """Bright squares on dark noise; every 4th image is a good one."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = (rng.random((size, size, 3)) * 40).astype(np.uint8)
        if i % 4 == 3:
            out.append(Sample(label="good", split=split, image_array=img, meta={"name": f"{split}{i}"}))
            continue
        m = np.zeros((size, size), bool)
        side = int(rng.integers(size // 5, size // 3))
        y, x = rng.integers(2, size - side - 2, 2)
        m[y:y + side, x:x + side] = True
        img[m] = 220
        out.append(Sample(label="square", split=split, image_array=img, mask_array=m, meta={"name": f"{split}{i}"}))
    return out


def _cfg(**kw) -> TrainConfig:
    base = dict(arch="yolox-nano", image_size=SIZE, epochs=2, batch_size=4, lr=0.05, warmup_iters=2,
                val_fraction=0.0, neg_per_pos=None)
    base.update(kw)
    return TrainConfig(**base)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    data = _squares(12)
    # lr 0.1 / 30 epochs sat at the edge: it learned on one CPU and not on another (AVX-512 kernels
    # round differently); 0.05 / 60 epochs gives IoU 0.67-0.74, mAP@0.5 0.83-1.0 over data seeds 0-2
    det = train_detector(data, tmp_path_factory.mktemp("yolox") / "run", _cfg(epochs=60, lr=0.05))
    return det, data


def test_missing_yolox_is_a_config_error_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "yolox", None)
    monkeypatch.setitem(sys.modules, "yolox.models", None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps yolox-datamint==0\.3\.1"):
        build_detector("yolox-nano", 1, image_size=SIZE)
    with pytest.raises(ConfigError, match="yolox-datamint"):
        BoxDetector.from_config(_cfg(), ["square"])


@needs_yolox
def test_config_checks():
    with pytest.raises(ConfigError, match="trainable_stages must be 0"):
        build_detector("yolox-nano", 1, image_size=SIZE, trainable_stages=1)
    with pytest.raises(ConfigError, match="at least one defect class"):
        build_detector("yolox-tiny", 0, image_size=SIZE)
    with pytest.raises(ConfigError, match="ultralytics"):
        TrainConfig(arch="yolov8n").check()


@needs_yolox
def test_targets_and_postprocess_map_between_input_and_letterbox_coordinates():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = build_detector("yolox-nano", 2, image_size=SIZE)
    # two images of other sizes: the 96x128 one is scaled to a shorter side of 64, the 64x80 one is not
    imgs = [torch.rand(3, 96, 128), torch.rand(3, 64, 80)]
    x, scales = m._letterbox(imgs)
    assert scales == [pytest.approx(64 / 96), pytest.approx(1.0)]
    assert x.shape[0] == 2 and x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0
    assert x.shape[2:] == (64, 96)  # 64x85 and 64x80 padded to a multiple of 32
    assert float(x.max()) > 200  # YOLOX takes 0..255 pixel values
    assert torch.all(x[1, :, :, 80:] == 114)  # grey padding right of the smaller image
    tg = [{"boxes": torch.tensor([[12.0, 24.0, 36.0, 60.0]]), "labels": torch.tensor([2])},
          {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    lab = m._targets(tg, scales, x.device)
    s = 64 / 96
    assert lab.shape == (2, 1, 5)
    assert lab[0, 0].tolist() == pytest.approx([1.0, 24 * s, 42 * s, 24 * s, 36 * s], rel=1e-5)
    assert lab[1].abs().sum() == 0  # no objects: zero row (YOLOX counts rows with a non-zero sum)
    # decoded head output (cx, cy, w, h, obj, cls...) in letterbox pixels -> input pixels
    p = torch.zeros(3, 7)
    p[0] = torch.tensor([20.0, 20.0, 10.0, 10.0, 0.9, 0.1, 0.8])  # class 2, score 0.72
    p[1] = torch.tensor([21.0, 20.0, 10.0, 10.0, 0.9, 0.1, 0.7])  # overlaps p[0]: suppressed by NMS
    p[2] = torch.tensor([60.0, 5.0, 20.0, 20.0, 0.5, 0.6, 0.1])  # class 1, clipped at the top edge
    out = m._postprocess(p, 0.5, (50, 200))
    assert out["labels"].tolist() == [2, 1]
    assert out["scores"].tolist() == pytest.approx([0.72, 0.30])
    assert out["boxes"][0].tolist() == pytest.approx([30.0, 30.0, 50.0, 50.0])
    assert out["boxes"][1].tolist() == pytest.approx([100.0, 0.0, 140.0, 30.0])


@needs_yolox
def test_train_mode_returns_losses_that_sum_to_the_yolox_total():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = build_detector("yolox-nano", 1, image_size=SIZE)
    m.train()
    x = [torch.rand(3, SIZE, SIZE + 16), torch.rand(3, SIZE, SIZE)]
    t = [{"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
         {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    ld = m(x, t)
    assert set(ld) == {"loss_iou", "loss_obj", "loss_cls"}
    assert all(torch.isfinite(v) and v.requires_grad for v in ld.values())
    with pytest.raises(ValueError, match="target dict"):
        m(x)
    with pytest.raises(ValueError, match="labels must be in 1..1"):
        m(x, [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([2])}, t[1]])


@needs_yolox
def test_training_learns_boxes_in_input_coordinates(trained):
    det, data = trained
    losses = [h["loss"] for h in det.info_["history"]]
    assert losses[-1] < 0.8 * losses[0]
    # predict on 1.5x larger copies: the model resizes internally and maps boxes back
    import cv2

    big = [Sample(label=s.label, image_array=cv2.resize(s.image, (96, 96), interpolation=cv2.INTER_LINEAR),
                  mask_array=cv2.resize(s.mask_or_empty().astype(np.uint8), (96, 96),
                                        interpolation=cv2.INTER_NEAREST) > 0, meta={"name": s.name})
           for s in data]
    preds = det.predict(big).boxes
    assert len(preds) == len(big)
    ious = []
    for s, p in zip(big, preds):
        assert all(b.label == "square" and 0.0 <= b.score <= 1.0 for b in p)
        assert all(0 <= b.x0 < b.x1 <= 96 and 0 <= b.y0 < b.y1 <= 96 for b in p)
        assert [b.score for b in p] == sorted((b.score for b in p), reverse=True)
        if s.is_defect:
            g = s.derived_boxes()[0]
            ious.append(_iou((p[0].x0, p[0].y0, p[0].x1, p[0].y1), (g.x0, g.y0, g.x1, g.y1)) if p else 0.0)
    assert np.mean(ious) > 0.5, ious
    m = evaluate_boxes(det, big)
    assert m["map50"] > 0.5


@needs_yolox
def test_save_load_round_trip_gives_identical_predictions(trained, tmp_path):
    det, data = trained
    path = det.save(tmp_path / "m.pt")
    st = torch.load(path, map_location="cpu", weights_only=True)
    assert set(st["state"]["model"]) == set(det.model_.state_dict())  # everything: YOLOX has no bundled weights
    again = BoxDetector.load(path)
    assert again.config.arch == "yolox-nano" and again.classes_ == ["square"]
    a, b = det.predict(data).boxes, again.predict(data).boxes
    assert a == b and sum(len(p) for p in a) > 0


@needs_yolox
def test_interrupted_yolox_run_resumes_to_the_same_weights(tmp_path):
    data = _squares(8)
    cfg = _cfg(epochs=2, lr=0.02)
    full = train_detector(data, tmp_path / "full", cfg)

    def stop(epoch, rec):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_detector(data, tmp_path / "cut", cfg, on_epoch=stop)
    resumed = train_detector(data, tmp_path / "cut", cfg)
    assert resumed.info_["resumed_from_epoch"] == 1
    sa, sb = full.model_.state_dict(), resumed.model_.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k


@needs_yolox
def test_train_detector_cli_accepts_yolox(tmp_path):
    import typer
    from typer.testing import CliRunner

    from defectforge.supervised import cli as scli

    app = typer.Typer()
    scli.register(app)
    app.command("noop")(lambda: None)
    root = write_dataset(Dataset(_squares(8) + _squares(4, seed=3, split="test")), tmp_path / "ds", "manifest")
    r = CliRunner().invoke(app, ["train-detector", str(root), "-o", str(tmp_path / "run"), "--arch", "yolox-nano",
                                 "--image-size", str(SIZE), "--epochs", "1", "--val-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["arch"] == "yolox-nano" and m["test"]["n_gt_boxes"] == 3 and 0.0 <= m["test"]["map50"] <= 1.0

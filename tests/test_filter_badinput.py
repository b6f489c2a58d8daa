"""Issue 7's bad-input list, at the user-facing entry points not covered elsewhere:

- a synthetic set with no labels, and classes that differ between real and synthetic
  sets: ``filter quality`` and ``train-detector --synthetic`` (one-line error, exit 2,
  nothing written); ``filter select`` and ``experiments.data.check_synthetic`` are tested
  in test_filter_scores.py / test_experiments_runner.py;
- a detector config that does not fit in memory: the real ``check_memory`` (no patching)
  through ``train-detector`` and through an experiment;
- an interrupted training run: ``train-detector`` resumes a run cut after its first epoch,
  and an unreadable checkpoint is a one-line error (library-level resume with identical
  weights is in test_supervised_train.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectforge.data import Dataset, Sample, load_dataset, write_dataset
from defectforge.errors import ConfigError
from defectforge.cli import area_app  # wired as the console script: error boundary, --config, --device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 48, 64


def _samples(n: int, seed: int, split: str, label: str = "pit", labelled: bool = True) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = (rng.random((H, W, 3)) * 40 + 110).astype(np.uint8)
        name = f"{label}_{split}{seed}_{i}"
        if i % 4 == 3:
            out.append(Sample(label="good", split=split, image_array=img, meta={"name": name}))
            continue
        m = np.zeros((H, W), bool)
        y, x = rng.integers(4, H - 18, 2)
        m[y:y + 14, x:x + 14] = True
        img[m] = 15
        out.append(Sample(label=label, split=split, image_array=img, mask_array=m if labelled else None,
                          meta={"name": name}))
    return out


@pytest.fixture()
def real(tmp_path):
    return write_dataset(Dataset(_samples(8, 0, "train") + _samples(4, 1, "test")), tmp_path / "real", "manifest")


@pytest.fixture()
def unlabelled(tmp_path):
    """A synthetic set in MVTec layout whose defect images have no ground-truth masks."""
    syn = [s for s in _samples(4, 2, "train", labelled=False) if s.is_defect]
    return write_dataset(Dataset(syn), tmp_path / "syn_nolabels", "mvtec")


@pytest.fixture()
def other_class(tmp_path):
    syn = [s for s in _samples(4, 3, "train", label="scratch") if s.is_defect]
    return write_dataset(Dataset(syn), tmp_path / "syn_scratch", "manifest")


def _app(*modules):
    return area_app(*modules)


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_filter_quality_refuses_unlabelled_synthetic_and_other_classes(real, unlabelled, other_class, tmp_path):
    from typer.testing import CliRunner

    from defectforge.filter import cli as fcli

    app = _app(fcli)
    out = tmp_path / "q.json"
    r = CliRunner().invoke(app, ["filter", "quality", str(real), str(unlabelled), "--json", str(out)])
    assert r.exit_code == 2
    line = _one_error_line(r.output)
    assert "no labels" in line and str(unlabelled) in line
    r = CliRunner().invoke(app, ["filter", "quality", str(real), str(other_class), "--json", str(out)])
    assert r.exit_code == 2
    line = _one_error_line(r.output)
    assert "classes differ" in line and "scratch" in line and str(other_class) in line
    assert not out.exists()


def test_train_detector_refuses_unlabelled_or_other_class_synthetic(real, unlabelled, other_class, tmp_path):
    from typer.testing import CliRunner

    from defectforge.supervised import cli as scli

    app = _app(scli)
    for syn, what in ((unlabelled, "no labels"), (other_class, "classes differ")):
        out = tmp_path / f"run_{syn.name}"
        r = CliRunner().invoke(app, ["train-detector", str(real), "-o", str(out), "--arch", "fcos-lite0",
                                     "--image-size", str(H), "--epochs", "1", "--synthetic", str(syn)])
        assert r.exit_code == 2, r.output
        assert what in _one_error_line(r.output)
        assert not out.exists()  # refused before anything was written


def _mem_known() -> None:
    from defectforge.supervised.train_data import _mem_available

    if _mem_available() is None:
        pytest.skip("available memory is unknown here (no /proc/meminfo): check_memory cannot refuse")


def test_detector_config_too_large_for_memory_is_refused_up_front(real, tmp_path):
    from typer.testing import CliRunner

    from defectforge.supervised import cli as scli

    _mem_known()
    out = tmp_path / "run"
    r = CliRunner().invoke(_app(scli), ["train-detector", str(real), "-o", str(out), "--arch", "fcos-lite0",
                                        "--image-size", str(H), "--epochs", "1", "--batch-size", "1000000"])
    assert r.exit_code == 2, r.output
    line = _one_error_line(r.output)
    assert "GiB" in line and "--batch-size" in line
    assert not out.exists() or not any(out.iterdir())  # no checkpoint, no model


def test_experiment_with_a_detector_config_too_large_for_memory(tmp_path):
    from defectforge.experiments import ExperimentSettings, run_experiment

    _mem_known()
    ds = Dataset(_samples(8, 0, "train") + _samples(4, 1, "test"))
    st = ExperimentSettings(seeds=(0,), det_image_size=H, epochs=1, arch="fcos-lite0", ratios=(), few_real=(),
                            val_fraction=0.25, batch_size=1_000_000)
    with pytest.raises(ConfigError, match="GiB"):
        run_experiment("synsur-regimes", ds, tmp_path / "e", st)
    assert not (tmp_path / "e" / "results.csv").exists()
    runs = tmp_path / "e" / "runs"
    assert not runs.exists() or not any(p.name in ("checkpoint.pt", "model.pt") for p in runs.rglob("*"))


def test_train_detector_cli_resumes_an_interrupted_run(real, tmp_path):
    from typer.testing import CliRunner

    from defectforge.supervised import cli as scli
    from defectforge.supervised.train import TrainConfig, gt_boxes, split_train_val, train_detector

    out = tmp_path / "run"
    # the run the CLI would start, cut after its first epoch (as by Ctrl-C)
    train = list(load_dataset(real).filter(split="train"))
    tr, va = split_train_val(train, 0.0, 0)
    classes = sorted({b.label for s in train for b in gt_boxes(s)})
    cfg = TrainConfig(arch="fcos-lite0", image_size=H, epochs=2, batch_size=4, lr=0.01, val_fraction=0.0,
                      patience=5, trainable_stages=0, seed=0)

    def cut(epoch, rec):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_detector(tr, out, cfg, val=va, classes=classes, on_epoch=cut)
    first = json.loads((out / "history.json").read_text())
    assert len(first) == 1 and not (out / "model.pt").exists()

    r = CliRunner().invoke(_app(scli), ["train-detector", str(real), "-o", str(out), "--arch", "fcos-lite0",
                                        "--image-size", str(H), "--epochs", "2", "--batch-size", "4",
                                        "--val-fraction", "0"])
    assert r.exit_code == 0, r.output
    assert "epoch 2:" in r.output and "epoch 1:" not in r.output  # only the missing epoch ran
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert len(hist) == 2 and hist[0] == first[0]
    assert (out / "model.pt").exists()


def test_unreadable_checkpoint_is_a_one_line_error(real, tmp_path):
    from typer.testing import CliRunner

    from defectforge.supervised import cli as scli

    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn by a crash")
    r = CliRunner().invoke(_app(scli), ["train-detector", str(real), "-o", str(out), "--arch", "fcos-lite0",
                                        "--image-size", str(H), "--epochs", "1", "--val-fraction", "0"])
    assert r.exit_code == 2, r.output
    line = _one_error_line(r.output)
    assert "checkpoint.pt" in line and "cannot read the checkpoint" in line
    assert not (out / "model.pt").exists()


@pytest.mark.parametrize("content", ["config_only", "garbage_weights", "empty"])
def test_clip_dir_that_does_not_load_is_one_line_naming_it(tmp_path, content):
    pytest.importorskip("transformers")
    from defectforge.errors import InputError
    from defectforge.filter.embed import load_clip

    d = tmp_path / "clip"
    d.mkdir()
    if content != "empty":
        (d / "config.json").write_text('{"model_type": "clip"}')
    if content == "garbage_weights":
        (d / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(InputError, match=r"clip: not a loadable transformers CLIP folder") as e:
        load_clip(d)
    assert "\n" not in str(e.value)

"""Run folders handed over by someone else never run code: checkpoints and model files are
read with ``weights_only=True`` and a malicious pickle is refused with a one-line error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from defectforge.data import Dataset, Sample, write_dataset
from defectforge.errors import InputError
from defectforge.runfolder import load_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Evil:
    """Pickles to a call of ``exec`` that creates ``marker`` when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _plant(path, marker, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"run_key": None, "model": {}, "payload": _Evil(marker), **extra}, path)
    return path


def _data(n=8, split="train"):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = (rng.random((48, 64, 3)) * 40 + 110).astype(np.uint8)
        m = np.zeros((48, 64), bool)
        m[10:24, 10:24] = True
        img[m] = 15
        out.append(Sample(label="pit", split=split, image_array=img, mask_array=m, meta={"name": f"{split}{i}"}))
    return out


def test_load_state_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    p = _plant(tmp_path / "x.pt", marker)
    with pytest.raises(InputError) as ei:
        load_state(p, "checkpoint")
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg and "refused" in msg and "exec" in msg
    assert not marker.exists()
    # plain data still loads
    torch.save({"w": torch.ones(2), "n": 3, "names": ["a"], "f": None}, tmp_path / "ok.pt")
    assert load_state(tmp_path / "ok.pt")["n"] == 3


def test_train_detector_resume_checkpoint_is_never_executed(tmp_path):
    from defectforge.supervised import TrainConfig, train_detector

    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    _plant(out / "checkpoint.pt", marker)
    cfg = TrainConfig(arch="fcos-lite0", image_size=48, epochs=1, val_fraction=0.0, neg_per_pos=None)
    with pytest.raises(InputError, match="refused"):
        train_detector(_data(), out, cfg)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "best.pt"])
def test_box_model_files_are_never_executed(tmp_path, name):
    from defectforge.supervised import BoxDetector

    marker = tmp_path / "pwned"
    p = _plant(tmp_path / name, marker)
    with pytest.raises(InputError) as ei:
        BoxDetector.load(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)
    assert not marker.exists()


def test_cli_resume_of_a_malicious_run_folder_is_one_line_exit_2(tmp_path):
    root = write_dataset(Dataset(_data(8)), tmp_path / "ds", "manifest")
    out = tmp_path / "run"
    marker = tmp_path / "pwned"
    _plant(out / "checkpoint.pt", marker)
    r = subprocess.run([sys.executable, "-m", "defectforge", "train-detector", str(root), "-o", str(out),
                        "--arch", "fcos-lite0", "--image-size", "48", "--epochs", "1", "--val-fraction", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "checkpoint.pt" in lines[0], r.stderr
    assert not marker.exists()


def test_lora_resume_checkpoint_is_never_executed(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    import json

    from defectforge.synth2d.diffusion.lora_train import LoraTrainConfig, LoraTrainer, make_items
    from defectforge.synth2d.diffusion.tiny import build_tiny_inpaint_pipeline

    tiny = build_tiny_inpaint_pipeline(tmp_path / "tiny", kind="sdxl", seed=0)
    out = tmp_path / "lora"
    ck = out / "checkpoints" / "step-0000002"
    marker = tmp_path / "pwned"
    _plant(ck / "state.pt", marker)
    (ck / "state.json").write_text(json.dumps({"step": 2, "losses": [1.0, 1.0], "numpy_rng": {}}))
    cfg = LoraTrainConfig(model=str(tiny), out=str(out), instance_prompt="pit", rank=4, steps=4, resolution=64,
                          min_crop=32, checkpoint_every=2, samples=0, seed=0)
    (out / "train_config.json").write_text(json.dumps(cfg.model_dump()))  # a handed-over run folder
    img = np.full((48, 64, 3), 120, np.uint8)
    m = np.zeros((48, 64), bool)
    m[10:20, 10:20] = True
    items = make_items([img], [m], cfg)
    with pytest.raises(InputError, match="refused"):
        LoraTrainer(cfg).fit(items, resume=True)
    assert not marker.exists()

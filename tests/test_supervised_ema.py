"""Weight averaging (``TrainConfig.ema``): the average itself, training with it, resume, CLI checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from defectforge.errors import ConfigError
from defectforge.supervised import TrainConfig, train_detector
from defectforge.supervised.ema import WeightEMA

from tests.test_supervised_train import _cfg, _data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_average_follows_the_ramped_decay_and_leaves_frozen_weights_alone():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    m[0].bias.requires_grad_(False)  # frozen: not averaged
    ema = WeightEMA(m, 0.9)
    assert "0.bias" not in ema.state and "1.running_mean" in ema.state and "1.num_batches_tracked" not in ema.state
    w0 = m[0].weight.detach().clone()
    expected = w0.clone()
    for t in range(1, 100):
        with torch.no_grad():
            m[0].weight.add_(1.0)
        ema.update(m)
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * m[0].weight.detach()
        assert ema.current_decay() == d
    assert torch.allclose(ema.state["0.weight"], expected, atol=1e-5)
    assert ema.current_decay() == 0.9  # the ramp ended
    live = m[0].weight.detach().clone()
    with ema.applied(m):
        assert torch.equal(m[0].weight, ema.state["0.weight"])
    assert torch.equal(m[0].weight, live)  # the raw weights are back
    again = WeightEMA(m, 0.5)
    again.load_state_dict(ema.state_dict())
    assert again.updates == ema.updates and again.decay == 0.9
    assert torch.equal(again.state["0.weight"], ema.state["0.weight"])
    with pytest.raises(KeyError, match="do not fit"):
        WeightEMA(nn.Linear(3, 1), 0.9).load_state_dict(ema.state_dict())


def test_training_with_ema_saves_the_averaged_weights_and_resumes_to_them(tmp_path):
    data = _data(8)
    raw = train_detector(data, tmp_path / "raw", _cfg(epochs=2))
    avg = train_detector(data, tmp_path / "avg", _cfg(epochs=2, ema=0.99))
    ck = torch.load(tmp_path / "avg" / "checkpoint.pt", weights_only=False)
    assert ck["ema"]["updates"] == 4  # 2 epochs x 2 steps (8 images, batch 4)
    # the saved model holds the average, the checkpoint's live weights are the raw ones (as without ema)
    saved = avg.model_.state_dict()
    key = next(k for k in ck["ema"]["state"] if k.endswith("weight") and ck["ema"]["state"][k].ndim == 4)
    assert torch.equal(saved[key], ck["ema"]["state"][key])
    assert not torch.equal(ck["model"][key], ck["ema"]["state"][key])
    assert torch.equal(ck["model"][key], raw.model_.state_dict()[key])  # averaging never changes the steps

    def stop(epoch, rec):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_detector(data, tmp_path / "cut", _cfg(epochs=2, ema=0.99), on_epoch=stop)
    resumed = train_detector(data, tmp_path / "cut", _cfg(epochs=2, ema=0.99))
    assert resumed.info_["resumed_from_epoch"] == 1
    for a, b in zip(avg.model_.state_dict().values(), resumed.model_.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    # ema is part of the run: another decay in the same folder is refused
    with pytest.raises(ConfigError, match="different run"):
        train_detector(data, tmp_path / "cut", _cfg(epochs=2, ema=0.9))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, True, 2])
def test_bad_decay_is_a_one_line_error(bad):
    with pytest.raises(ConfigError, match="ema must be a decay"):
        _cfg(ema=bad).check()


def test_runs_without_ema_keep_their_resume_key():
    key = TrainConfig().resume_key()
    assert "ema" not in key and TrainConfig(ema=0.999).resume_key()["ema"] == 0.999


def test_cli_refuses_ema_for_ultralytics_models(tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli import app

    res = CliRunner().invoke(app, ["train-detector", str(tmp_path), "--arch", "yolov8n", "--ema", "0.999",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "own weight average" in res.output

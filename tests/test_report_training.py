"""``train-detector`` writes the report.html its --help promises: loss and validation mAP per
epoch, test AP per class and predictions drawn on validation images."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from defectforge.data import Box, Dataset, write_dataset
from defectforge.report.training import history_figure
from defectforge.report.visual import draw_boxes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_draw_boxes_marks_truth_and_predictions_above_the_score():
    img = np.full((60, 80, 3), 100, np.uint8)
    out = draw_boxes(img, gt=[Box(10, 10, 30, 30, "pit")],
                     pred=[Box(40, 20, 70, 50, "pit", 0.9), Box(2, 40, 8, 58, "pit", 0.1)], min_score=0.3)
    assert tuple(out[10, 20]) == (40, 220, 40)  # green top edge of the true box
    assert tuple(out[35, 40]) == (255, 140, 0)  # orange left edge of the kept prediction
    assert np.array_equal(out[50, 2], img[50, 2])  # the 0.1 prediction is not drawn
    assert np.array_equal(out[20, 20], img[20, 20])  # inside stays untouched


def test_history_figure_plots_loss_and_val_map():
    fig = history_figure([{"epoch": 1, "loss": 2.0, "val_map50": 0.1, "val_map50_95": 0.05},
                          {"epoch": 2, "loss": 1.5, "val_map50": 0.3, "val_map50_95": 0.1}])
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert labels == ["train loss", "val map50", "val map50 95"]
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [2.0, 1.5]


def test_train_detector_writes_report_html(tmp_path):
    import typer
    from test_supervised_train import SIZE, _data
    from typer.testing import CliRunner

    from defectforge.supervised import cli as scli

    app = typer.Typer()
    scli.register(app)
    app.command("noop")(lambda: None)
    root = write_dataset(Dataset(_data(8) + _data(4, seed=2, split="test")), tmp_path / "ds", "manifest")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-detector", str(root), "-o", str(out), "--arch", "fcos-lite0",
                                 "--image-size", str(SIZE), "--epochs", "2", "--val-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    m = json.loads((out / "metrics.json").read_text())
    assert "loss and validation mAP per epoch" in html and "test AP per class" in html
    assert "Predictions on validation images" in html
    shown = re.findall(r'<img src="(assets/val_predictions/[^"]+)"', html)
    assert len(shown) == m["n_val"] >= 1
    assert all((out / p).is_file() for p in shown)
    assert f"{m['test']['map50']:.4f}" in html
    assert m["test"]["map_small"] is not None and m["test"]["map_large"] is None  # 14-px pits: small only
    assert "test mAP small boxes (COCO)" in html

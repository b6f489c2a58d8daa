"""Studio in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium): open the bundled sample, author a 2D defect by clicking and accept it, author a
3D defect by clicking a point, see a describe-box validation error. Screenshots go to
``$STUDIO_SCREENSHOTS`` when set (docs/studio/*.png were made that way)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="Debian chromium + chromium-driver not installed (apt-get install chromium chromium-driver)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from defectforge.studio.app import create_app

    project = tmp_path_factory.mktemp("project")
    import numpy as np

    from defectforge.synth3d.cloud_io import write_xyz_label
    from defectforge.synth3d.parts import make_part

    pc = make_part("hex_bolt", 4000, 0)
    labels = (np.linalg.norm(pc.points - pc.points[0], axis=1) < 0.1 * pc.diag).astype(np.int64)
    write_xyz_label(project / "clouds" / "bolt.txt", pc.points, labels)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(project), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    t0 = time.time()
    while not srv.started:
        if time.time() - t0 > 30:
            raise RuntimeError("studio server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", project
    srv.should_exit = True
    th.join(10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()


def shot(drv, name: str) -> None:
    folder = os.environ.get("STUDIO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(Path(folder) / f"{name}.png"))


def wait(drv, cond, timeout=60.0, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    status = drv.execute_script("return document.querySelector('#status').textContent")
    raise AssertionError(f"timed out waiting for {what}; page status: {status!r}")


def js(drv, script, *args):
    return drv.execute_script(script, *args)


def tab(drv, name):
    drv.find_element("css selector", f'#tabs button[data-page="{name}"]').click()


def test_data_page_opens_the_sample_and_filters(server, browser):
    url, _ = server
    browser.get(url)
    wait(browser, lambda: js(browser, "return document.body.dataset.ready === '1'"), what="page ready")
    n_all = len(browser.find_elements("css selector", "#ds-grid .tile"))
    assert n_all == 90
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "ds-label")).select_by_visible_text("pitting")
    wait(browser, lambda: len(browser.find_elements("css selector", "#ds-grid .tile")) == 30, what="filtered grid")
    assert all("defect" in t.get_attribute("class") for t in browser.find_elements("css selector", "#ds-grid .tile"))
    assert "test/pitting: 20" in browser.find_element("id", "ds-counts").text
    wait(browser, lambda: js(browser, "return [...document.querySelectorAll('#ds-grid img')].slice(0, 8)"
                                      ".every(i => i.complete && i.naturalWidth > 0)"), what="thumbnails")
    browser.find_elements("css selector", "#ds-grid .tile")[0].click()
    wait(browser, lambda: js(browser, "const i = document.querySelector('#ds-large img'); return i && i.complete && i.naturalWidth > 0"),
         what="large image")
    shot(browser, "data")
    # a cloud file opens in the 3D viewer with its defect points coloured
    browser.find_element("link text", "clouds/bolt.txt").click()
    wait(browser, lambda: "defect points" in browser.find_element("id", "status").text, what="cloud in the viewer")
    red = js(browser, """const c = document.querySelector('#data-viewer'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] === 255 && d[i + 1] === 60) n++; return n;""")
    assert red > 0
    shot(browser, "data_3d")


def test_author_2d_by_click_preview_and_accept(server, browser):
    url, project = server
    from selenium.webdriver.common.action_chains import ActionChains

    tab(browser, "author2d")
    wait(browser, lambda: js(browser, "return document.querySelector('#a2-canvas').width > 0"), what="image on canvas")
    canvas = browser.find_element("id", "a2-canvas")
    # click at image pixel (565, 230): offsets are from the element's centre in CSS pixels
    w_css = canvas.size["width"]
    scale = w_css / js(browser, "return document.querySelector('#a2-canvas').width")
    ActionChains(browser).move_to_element_with_offset(canvas, int((565 - 565) * scale), int((230 - 230) * scale)).click().perform()
    wait(browser, lambda: int(js(browser, "return document.querySelector('#a2-qc').dataset.labelPixels || 0")) > 0,
         what="preview with a non-empty label")
    wait(browser, lambda: js(browser, "const i = document.querySelector('#a2-result'); return i.complete && i.naturalWidth > 0"),
         what="preview image")
    shot(browser, "author2d")
    browser.find_element("id", "a2-accept").click()
    wait(browser, lambda: "accepted as" in browser.find_element("id", "a2-accepted").text, what="accepted")
    assert (project / "studio_sets" / "default" / "manifest.csv").is_file()
    # the accepted sample is found again in the Data page
    tab(browser, "data")
    box = browser.find_element("id", "ds-path")
    box.clear()
    box.send_keys("studio_sets/default")
    browser.find_element("id", "ds-open").click()
    wait(browser, lambda: len(browser.find_elements("css selector", "#ds-grid .tile")) == 1, what="set in the grid")
    assert "train/pitting" in browser.find_element("id", "ds-grid").text


def test_author_2d_polygon_mask(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    tab(browser, "author2d")
    browser.find_element("css selector", 'input[name="a2-mode"][value="polygon"]').click()
    canvas = browser.find_element("id", "a2-canvas")
    s = canvas.size["width"] / js(browser, "return document.querySelector('#a2-canvas').width")
    W, H = js(browser, "const c = document.querySelector('#a2-canvas'); return [c.width, c.height]")
    corners = [(700, 120), (900, 120), (900, 300), (700, 300)]  # image pixels
    chain = ActionChains(browser)
    for x, y in corners:
        chain.move_to_element_with_offset(canvas, int((x - W / 2) * s), int((y - H / 2) * s)).click()
    chain.double_click().perform()
    browser.find_element("id", "a2-preview").click()
    wait(browser, lambda: int(js(browser, "return document.querySelector('#a2-qc').dataset.labelPixels || 0")) > 0
         and "boxes" in browser.find_element("id", "a2-qc").text, what="preview from the polygon")
    import json as _json
    import re

    boxes = _json.loads(re.search(r"boxes (\[.*?\]\])", browser.find_element("id", "a2-qc").text).group(1))
    for x0, y0, x1, y1 in boxes:  # inside the polygon (a few px of slack for the drawn edge)
        assert 695 <= x0 and x1 <= 905 and 115 <= y0 and y1 <= 305
    shot(browser, "author2d_polygon")


def test_author_3d_click_a_point_and_describe(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    tab(browser, "author3d")
    browser.find_element("id", "a3-load").click()
    wait(browser, lambda: js(browser, "return a3viewer.points !== null && a3viewer.points.length > 0"), what="part loaded")
    # a visible point near the middle of the view
    x, y, W = js(browser, """
        const v = a3viewer, W = v.canvas.width, H = v.canvas.height; let best = -1, bd = Infinity;
        for (let i = 0; i < v.sx.length; i++) {
          const o = Math.round(v.sy[i]) * W + Math.round(v.sx[i]);
          if (!(v.sz[i] <= v.zbuf[o] + 1e-6)) continue;
          const d = Math.hypot(v.sx[i] - W / 2, v.sy[i] - H / 2);
          if (d < bd) { bd = d; best = i; }
        }
        return [v.sx[best], v.sy[best], W];""")
    canvas = browser.find_element("id", "a3-viewer")
    s = canvas.size["width"] / W
    ActionChains(browser).move_to_element_with_offset(
        canvas, int((x - W / 2) * s), int((y - canvas.size["height"] / s / 2) * s)).click().perform()
    wait(browser, lambda: int(js(browser, "return document.querySelector('#a3-info').dataset.defectPoints || 0")) > 0,
         what="coloured defect points")
    assert '"kind": "point"' in browser.find_element("id", "a3-json").get_attribute("value")
    red = js(browser, """const c = document.querySelector('#a3-viewer'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] === 255 && d[i + 1] === 60) n++; return n;""")
    assert red > 0
    shot(browser, "author3d")
    browser.find_element("id", "a3-text").send_keys("a blorp on the top")
    browser.find_element("id", "a3-describe").click()
    wait(browser, lambda: browser.find_element("id", "a3-text-error").text, what="validation error")
    assert "cannot find a defect type" in browser.find_element("id", "a3-text-error").text
    shot(browser, "author3d_error")


def test_review_with_keyboard(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    url, project = server
    tab(browser, "review")
    browser.find_element("id", "rv-open").click()
    wait(browser, lambda: len(browser.find_elements("css selector", ".rv-item")) == 1, what="review grid")
    wait(browser, lambda: js(browser, "return [...document.querySelectorAll('.rv-item img')].every(i => i.complete && i.naturalWidth > 0)"),
         what="crops")
    browser.find_element("css selector", ".rv-item").click()
    ActionChains(browser).send_keys("r").perform()
    wait(browser, lambda: browser.find_element("css selector", ".rv-item").get_attribute("data-decision") == "rejected",
         what="rejected by key")
    shot(browser, "review")
    from defectforge.data.manifest import read_manifest

    assert len(read_manifest(project / "studio_sets" / "default")) == 0
    ActionChains(browser).send_keys("a").perform()
    wait(browser, lambda: browser.find_element("css selector", ".rv-item").get_attribute("data-decision") == "accepted",
         what="accepted by key")
    assert len(read_manifest(project / "studio_sets" / "default")) == 1


def test_small_synth_job_runs_to_completion(server, browser):
    url, project = server
    tab(browser, "jobs")
    yml = browser.find_element("id", "job-yaml")
    yml.clear()
    yml.send_keys("source: {path: '@sample', split: train, real_defects: false}\n"
                  "generators: [{name: pitting}]\nn: 3\nseed: 0\n")
    out = browser.find_element("id", "job-out")
    out.clear()
    out.send_keys("runs/job1")
    browser.find_element("id", "job-submit").click()
    wait(browser, lambda: js(browser, "const r = document.querySelector('#jobs-table tbody tr'); return r && r.dataset.status === 'done'"),
         timeout=120, what="job done")
    assert js(browser, "const p = document.querySelector('#jobs-table progress'); return [p.value, p.max]") == [3, 3]
    shot(browser, "jobs")
    assert (project / "runs" / "job1" / "manifest.csv").is_file()
    # the job's YAML config is shown in the page (and downloadable from the 'yaml' link)
    browser.find_element("css selector", "#jobs-table .job-show").click()
    wait(browser, lambda: "generators" in browser.find_element("id", "job-config").text, what="config shown")
    assert browser.find_element("id", "job-config").text.startswith("# runs: defectforge synth --config")


def test_results_threshold_sliders_update_confusion_and_redraw_masks(server, browser):
    """An eval output on the Results page: moving the image threshold changes the confusion
    matrix, precision / recall and whether the predicted mask is drawn; the pixel threshold
    redraws the mask from the raw map (keyboard Home / End on the sliders)."""
    from selenium.webdriver.common.keys import Keys
    from typer.testing import CliRunner

    from defectforge.cli import app
    from defectforge.datasets import sample_path

    url, project = server
    run = CliRunner().invoke
    r = run(app, ["detect", "fit", str(sample_path()), "--out", str(project / "m.pt"), "--model", "patchcore",
                  "--random-init", "--image-size", "64"])
    assert r.exit_code == 0, r.output
    r = run(app, ["detect", "eval", str(project / "m.pt"), str(sample_path()), "--json", str(project / "eval.json")])
    assert r.exit_code == 0, r.output
    tab(browser, "results")
    box = browser.find_element("id", "rs-path")
    box.clear()
    box.send_keys("eval.json")
    browser.find_element("id", "rs-open").click()
    wait(browser, lambda: len(browser.find_elements("css selector", "#rs-table tbody tr")) > 0, what="score table")
    rows = browser.find_elements("css selector", "#rs-table tbody tr")
    scores = [float(tr.find_elements("css selector", "td")[2].text) for tr in rows]
    assert scores == sorted(scores, reverse=True)  # sorted by score, highest first
    browser.find_element("css selector", '#rs-table th[data-key="score"]').click()
    rows = browser.find_elements("css selector", "#rs-table tbody tr")
    assert [float(tr.find_elements("css selector", "td")[2].text) for tr in rows] == sorted(scores)
    next(tr for tr in rows if tr.get_attribute("data-defect") == "true").click()
    wait(browser, lambda: js(browser, "const c = document.querySelector('#rs-mask'); return c && c.dataset.pixels !== undefined"),
         what="predicted mask drawn")
    wait(browser, lambda: js(browser, "return [...document.querySelectorAll('#rs-view img')].every(i => i.complete && i.naturalWidth > 0)"),
         what="image, ground truth, heatmap")
    shot(browser, "results_eval")
    m = lambda: js(browser, "return Object.assign({}, document.querySelector('#rs-metrics').dataset)")  # noqa: E731
    px = lambda: int(js(browser, "return document.querySelector('#rs-mask').dataset.pixels"))  # noqa: E731
    n_def = sum(tr.get_attribute("data-defect") == "true" for tr in rows)
    thr, pthr = browser.find_element("id", "rs-thr"), browser.find_element("id", "rs-pthr")
    thr.send_keys(Keys.HOME)  # every image predicted defect
    assert m()["tp"] == str(n_def) and m()["fn"] == "0" and m()["tn"] == "0" and m()["recall"] == "1.0000"
    pthr.send_keys(Keys.HOME)  # every pixel of a predicted-defect image reaches the lowest pixel threshold
    W, H = js(browser, "const c = document.querySelector('#rs-mask'); return [c.width, c.height]")
    assert px() == W * H
    pthr.send_keys(Keys.END)
    high = px()
    assert high < W * H
    thr.send_keys(Keys.END)  # no image predicted defect: no predicted pixels, no TP/FP
    assert m()["tp"] == "0" and m()["fp"] == "0" and m()["precision"] == "0.0000" and px() == 0
    assert "predicted good" in browser.find_element("id", "rs-caption").text

"""Manual check of Defect Studio on the full BSData set, in headless Chromium; writes one
screenshot per page into docs/studio/ (bs_*.jpg).

Starts ``defectforge studio PROJECT --data bsdata=BSDATA`` as a person would (a child process,
the real CLI), then drives every page with Selenium: Data (open @bsdata, filter test/pitting,
open an image), Author 2D (click on a good train image, preview, accept twice into a set),
Author 3D (a dent by clicking a point), Review (the set beside real BSData crops, reject with
``r``), Jobs (a synth job from BSData and a ``detect fit`` + ``detect eval`` job pair with live
progress) and Results (the eval JSON with both sliders). Prints what it saw and the wall time of
each step; exits non-zero on the first step that fails.

    python bench/studio_bsdata_check.py [--bsdata ../shared/datasets/bsdata] [--project /tmp/studio_bs]
        [--image-size 128] [--shots docs/studio]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def wait(drv, cond, timeout=120.0, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            v = cond()
        except Exception:  # an element not there yet
            v = None
        if v:
            return v
        time.sleep(0.2)
    status = drv.execute_script("return document.querySelector('#status').textContent")
    raise SystemExit(f"timed out waiting for {what}; page status: {status!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bsdata", type=Path, default=Path("../shared/datasets/bsdata"))
    ap.add_argument("--project", type=Path, default=Path("/tmp/studio_bs"))
    ap.add_argument("--image-size", default="128")
    ap.add_argument("--shots", type=Path, default=Path("docs/studio"))
    ap.add_argument("--image-only", action="store_true", help="the eval job with --image-only (less memory)")
    ap.add_argument("--continue", dest="cont", action="store_true",
                    help="reuse --project with a restarted server (its job list is kept): only the eval job and Results")
    args = ap.parse_args(argv)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    if not args.cont:
        if args.project.exists():
            shutil.rmtree(args.project)
        args.project.mkdir(parents=True)
        (args.project / "bsdata_link").symlink_to(args.bsdata.resolve())  # refused: mounts are the way in
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "defectforge", "studio", str(args.project), "--port", str(port),
                               "--data", f"bsdata={args.bsdata}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(server.stdout.readline().strip())
    print(server.stdout.readline().strip())
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1000"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    js = drv.execute_script
    args.shots.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        png = args.shots / f"{name}.png"
        drv.save_screenshot(str(png))
        from PIL import Image

        Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=80)
        png.unlink()

    def tab(name: str) -> None:
        drv.find_element("css selector", f'#tabs button[data-page="{name}"]').click()

    def fill(el_id: str, text: str) -> None:
        el = drv.find_element("id", el_id)
        el.clear()
        el.send_keys(text)

    steps = []

    def step(name: str, t0: float, note: str) -> None:
        steps.append((name, time.time() - t0, note))
        print(f"{name}: {time.time() - t0:.1f} s; {note}", flush=True)

    eval_yaml = ("command: detect eval\nargs:\n  model_path: models/bs.pt\n  data: '@bsdata'\n  json_out: eval/bs.json\n"
                 + ("  image_only: true\n" if args.image_only else ""))
    try:
        t0 = time.time()
        drv.get(f"http://127.0.0.1:{port}/")
        wait(drv, lambda: js("return document.body.dataset.ready === '1'"), what="page ready")
        if not args.cont:
            fill("ds-path", "bsdata_link")
            drv.find_element("id", "ds-open").click()
            refused = wait(drv, lambda: "refused" in drv.find_element("id", "status").text and drv.find_element("id", "status").text)
            fill("ds-path", "@bsdata")
            drv.find_element("id", "ds-open").click()
            wait(drv, lambda: "837 samples" in drv.find_element("id", "status").text, what="BSData opened")
            Select(drv.find_element("id", "ds-split")).select_by_visible_text("test")
            Select(drv.find_element("id", "ds-label")).select_by_visible_text("pitting")
            wait(drv, lambda: drv.find_element("id", "ds-counts").text.startswith("104"), what="test/pitting filter")
            wait(drv, lambda: js("return [...document.querySelectorAll('#ds-grid img')].slice(0, 9).every(i => i.complete && i.naturalWidth > 0)"),
                 what="thumbnails")
            drv.find_elements("css selector", "#ds-grid .tile")[0].click()
            wait(drv, lambda: js("const i = document.querySelector('#ds-large img'); return i && i.complete && i.naturalWidth > 0"),
                 what="large image")
            shot("bs_data")
            step("Data", t0, f"symlink: {refused[:60]}...; @bsdata 837 samples; test/pitting: "
                             f"{drv.find_element('id', 'ds-counts').text.split(' ')[0]}")

            t0 = time.time()
            tab("author2d")
            fill("a2-ds", "@bsdata")
            js("document.querySelector('#a2-ds').dispatchEvent(new Event('change'))")
            wait(drv, lambda: js("return document.querySelector('#a2-canvas').width") == 1130, what="BSData image on canvas")
            fill("a2-set", "sets/bs")
            for k in range(2):
                if k:
                    Select(drv.find_element("id", "a2-image")).select_by_index(5)
                    time.sleep(1)
                canvas = drv.find_element("id", "a2-canvas")
                ActionChains(drv).move_to_element_with_offset(canvas, 0, 0).click().perform()
                wait(drv, lambda: int(js("return document.querySelector('#a2-qc').dataset.labelPixels || 0")) > 0,
                     what="preview with a label")
                wait(drv, lambda: js("const i = document.querySelector('#a2-result'); return i.complete && i.naturalWidth > 0"),
                     what="preview image")
                if k == 0:
                    shot("bs_author2d")
                drv.find_element("id", "a2-accept").click()
                wait(drv, lambda: f"({k + 1} samples)" in drv.find_element("id", "a2-accepted").text, what="accepted")
            step("Author 2D", t0, "two clicked previews on 1130x460 BSData train images accepted into sets/bs")

            t0 = time.time()
            tab("review")
            fill("rv-set", "sets/bs")
            fill("rv-real", "@bsdata")
            drv.find_element("id", "rv-open").click()
            wait(drv, lambda: len(drv.find_elements("css selector", ".rv-item")) == 2, what="review grid")
            wait(drv, lambda: js("return [...document.querySelectorAll('.rv-item img')].every(i => i.complete && i.naturalWidth > 0)"),
                 what="synthetic and real crops")
            sizes = js("return [...document.querySelectorAll('.rv-item img')].map(i => [i.naturalWidth, i.naturalHeight])")
            drv.find_element("css selector", ".rv-item").click()
            ActionChains(drv).send_keys("r").perform()
            wait(drv, lambda: drv.find_element("css selector", ".rv-item").get_attribute("data-decision") == "rejected",
                 what="rejected with r")
            shot("bs_review")
            step("Review", t0, f"crop sizes {sizes} (synthetic, real, ...: same window); first rejected with 'r'")

            t0 = time.time()
            tab("author3d")
            drv.find_element("id", "a3-load").click()
            wait(drv, lambda: js("return a3viewer.points !== null && a3viewer.points.length > 0"), what="part loaded")
            canvas = drv.find_element("id", "a3-viewer")
            ActionChains(drv).move_to_element_with_offset(canvas, 0, 0).click().perform()
            wait(drv, lambda: int(js("return document.querySelector('#a3-info').dataset.defectPoints || 0")) > 0,
                 what="defect points")
            shot("bs_author3d")
            step("Author 3D", t0, drv.find_element("id", "a3-info").text)

            t0 = time.time()
            tab("jobs")
            Select(drv.find_element("id", "job-kind")).select_by_visible_text("synth")
            fill("job-yaml", "source: {path: '@bsdata', split: train, real_defects: true}\n"
                             "generators: [{name: pitting, weight: 2}, {name: scratch}]\nn: 6\nseed: 0\nformats: [mvtec]\n")
            fill("job-out", "runs/bs_synth")
            drv.find_element("id", "job-submit").click()
            Select(drv.find_element("id", "job-kind")).select_by_visible_text("cli")
            time.sleep(0.5)
            fill("job-yaml", f"command: detect fit\nargs:\n  data: '@bsdata'\n  out: models/bs.pt\n  model: exdd\n"
                             f"  image_size: '{args.image_size}'\n")
            drv.find_element("id", "job-submit").click()
            fill("job-yaml", "command: detect eval\nargs:\n  model_path: models/bs.pt\n  data: '@bsdata'\n  json_out: eval/bs.json\n")
            bad = drv.find_element("id", "job-error").text
            drv.find_element("id", "job-submit").click()  # refused: the model does not exist yet
            wait(drv, lambda: drv.find_element("id", "job-error").text, what="eval refused before the model exists")
            bad = drv.find_element("id", "job-error").text
            live = wait(drv, lambda: js("""const r = [...document.querySelectorAll('#jobs-table tbody tr')]
                  .find(r => r.dataset.status === 'running' && r.innerText.includes('detect fit') && r.querySelector('progress'));
                  return r && r.innerText"""),
                        timeout=900, what="a job with live progress")
            shot("bs_jobs_running")
            wait(drv, lambda: js("return [...document.querySelectorAll('#jobs-table tbody tr')].every(r => r.dataset.status === 'done')"),
                 timeout=1800, what="synth and fit jobs done")
        if args.cont:
            t0 = time.time()
            tab("jobs")
            wait(drv, lambda: len(drv.find_elements("css selector", "#jobs-table tbody tr")) >= 2, what="kept job list")
            live = " / ".join(r.text.replace("\n", " ")[:110] for r in drv.find_elements("css selector", "#jobs-table tbody tr"))
            bad = "(not tried)"
            Select(drv.find_element("id", "job-kind")).select_by_visible_text("cli")
            time.sleep(0.5)
        n_rows = len(drv.find_elements("css selector", "#jobs-table tbody tr"))
        fill("job-yaml", eval_yaml)
        drv.find_element("id", "job-submit").click()
        wait(drv, lambda: js("const r = [...document.querySelectorAll('#jobs-table tbody tr')]; return r.length === %d && "
                             "r[0].dataset.status === 'done'" % (n_rows + 1)), timeout=3000, what="eval job done")
        drv.find_elements("css selector", "#jobs-table .job-show")[0].click()
        wait(drv, lambda: "# runs: defectforge detect eval" in drv.find_element("id", "job-config").text, what="config shown")
        shot("bs_jobs")
        step("Jobs", t0, f"live: {live.replace(chr(10), ' ')[:120]}; eval before the model: {bad[:80]}")

        t0 = time.time()
        tab("results")
        fill("rs-path", "eval/bs.json")
        drv.find_element("id", "rs-open").click()
        wait(drv, lambda: len(drv.find_elements("css selector", "#rs-table tbody tr")) == 372, what="372 test rows")
        rows = drv.find_elements("css selector", "#rs-table tbody tr")
        next(tr for tr in rows if tr.get_attribute("data-defect") == "true").click()
        wait(drv, lambda: js("const c = document.querySelector('#rs-mask'); return c && c.dataset.pixels !== undefined"),
             timeout=300, what="map and predicted mask")
        wait(drv, lambda: js("return [...document.querySelectorAll('#rs-view img')].every(i => i.complete && i.naturalWidth > 0)"),
             what="panels")
        before = js("return Object.assign({}, document.querySelector('#rs-metrics').dataset)")
        drv.find_element("id", "rs-thr").send_keys(Keys.HOME)
        after = js("return Object.assign({}, document.querySelector('#rs-metrics').dataset)")
        for _ in range(40):
            drv.find_element("id", "rs-thr").send_keys(Keys.ARROW_RIGHT)
        shot("bs_results")
        step("Results", t0, f"{drv.find_element('id', 'status').text[:160]}; at the model threshold {before}; "
                            f"lowest threshold {after}")
    finally:
        drv.quit()
        server.terminate()
        server.wait(30)
    print("\n| page | seconds | what was seen |\n|---|---|---|")
    for name, dt_, note in steps:
        print(f"| {name} | {dt_:.1f} | {note} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())

"""Output-folder rules through the real command line: a run never writes into or clears its
inputs, synth3d never takes over a folder it did not create, and two runs into one folder
never mix (the second is refused with one line)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from defectforge.data.image_io import write_image, write_mask


def _dataset(root: Path, n_good: int = 3) -> Path:
    rng = np.random.default_rng(0)
    rows = ["file,split,label,mask"]
    for i in range(n_good):
        write_image(root / "images" / f"good{i}.png", (rng.random((64, 96, 3)) * 30 + 100).astype(np.uint8))
        rows.append(f"images/good{i}.png,train,good,")
    img = (rng.random((64, 96, 3)) * 30 + 100).astype(np.uint8)
    m = np.zeros((64, 96), bool)
    m[20:30, 30:42] = True
    img[m] = 30
    write_image(root / "images" / "pit0.png", img)
    write_mask(root / "masks" / "pit0.png", m)
    rows.append("images/pit0.png,train,pitting,masks/pit0.png")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "defectforge", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _one_error(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)
    return lines[0]


SYNTH = ("--generator", "pitting", "--n", "2", "--workers", "1", "--roi", "border")


@pytest.mark.parametrize("where", ["same", "inside"])
def test_synth_into_its_own_input_is_refused_and_the_input_untouched(tmp_path, where):
    data = _dataset(tmp_path / "data")
    before = _digest(data)
    out = data if where == "same" else data / "synthetic"
    line = _one_error(_cli("synth", str(data), "--out", str(out), "--overwrite", *SYNTH))
    assert "overlaps the input" in line
    assert _digest(data) == before and sorted(p.name for p in data.iterdir()) == ["images", "manifest.csv", "masks"]


def test_synth3d_refuses_a_foreign_folder_and_its_own_input(tmp_path):
    data = _dataset(tmp_path / "data2d")
    before = _digest(data)
    line = _one_error(_cli("synth3d", "part:flange", "--describe", "a dent", "--n", "1", "--points", "1500",
                           "--out", str(data)))
    assert "not empty" in line
    assert _digest(data) == before  # manifest.csv of the 2D dataset kept
    clouds = tmp_path / "clouds"
    r = _cli("parts", "--n", "2", "--points", "1500", "--out", str(clouds))
    assert r.returncode == 0, r.stderr
    before = _digest(clouds)
    line = _one_error(_cli("synth3d", str(clouds), "--describe", "a dent", "--n", "2", "--points", "1500",
                           "--out", str(clouds)))
    assert "overlaps the input" in line and _digest(clouds) == before


_HOLD = textwrap.dedent("""
    import sys, time
    from defectforge.runfolder import RunFolder
    rf = RunFolder.open(sys.argv[1], job=sys.argv[2], config={}, state=sys.argv[3])
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("job,state,args", [
    ("synth", ".synth", ["synth", "{data}", *SYNTH]),
    ("synth3d", ".run", ["synth3d", "part:flange", "--describe", "a dent", "--n", "1", "--points", "1500"]),
])
def test_a_run_into_a_locked_folder_is_refused(tmp_path, job, state, args):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out), job, state], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _one_error(_cli(*[a.format(data=data) for a in args], "--out", str(out)))
        assert f"in use by another run (pid {holder.pid})" in line
    finally:
        holder.kill()
        holder.wait()


def test_two_concurrent_synth_runs_never_mix(tmp_path):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "defectforge", "synth", str(data), "--out", str(out),
                               "--seed", str(seed), "--generator", "pitting", "--n", "6", "--workers", "1",
                               "--roi", "border"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed in (0, 1)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in res)
    assert codes == [0, 2], res
    err = next(e for rc, e in res if rc == 2)
    assert "in use by another run" in err or "different run" in err
    winner = json.loads((out / ".synth" / "run.json").read_text())["config"]["seed"]
    journal = [json.loads(ln) for ln in (out / ".synth" / "journal.jsonl").read_text().splitlines()]
    from defectforge.synth2d.engine import seed_for

    assert [r["seed"] for r in journal] == [seed_for(winner, i) for i in range(6)]
    rows = (out / "manifest.csv").read_text().strip().splitlines()[1:]
    assert len(rows) == len(list((out / "images").iterdir())) == len(list((out / "masks").iterdir()))


def test_train_detector_into_its_own_dataset_is_refused(tmp_path):
    data = _dataset(tmp_path / "data")
    before = _digest(data)
    line = _one_error(_cli("train-detector", str(data), "--out", str(data / "run"), "--arch", "fcos-lite0",
                           "--image-size", "48", "--epochs", "1", "--val-fraction", "0"))
    assert "overlaps the input" in line and _digest(data) == before

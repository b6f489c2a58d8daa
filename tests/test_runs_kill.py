"""Kill tests for every resumable job: SIGKILL at a random point, rerun, and the folder is
byte-identical to an uninterrupted run, with no partial or hidden staging file and no
lock left; no worker process outlives its killed parent.

Random points are drawn from a seeded generator over the duration of an uninterrupted run
(measured first), so kills land in generation, export and report phases alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from defectforge.data.image_io import write_image, write_mask

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "defectforge", *args]


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - t0


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":
                parent[int(d.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _kill_at(args: list[str], delay: float) -> tuple[set[int], bool]:
    """Start the command, SIGKILL it after ``delay`` s; returns the processes it had started
    and whether the kill landed while it was still running."""
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    kids: set[int] = set()
    t_end = time.perf_counter() + delay
    while time.perf_counter() < t_end and p.poll() is None:
        kids |= _descendants(p.pid)
        time.sleep(0.02)
    running = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    return kids, running and p.returncode == -signal.SIGKILL


def _kill_mid_run(make_args, out: Path, delay: float) -> tuple[Path, set[int]]:
    """SIGKILL the command into ``out`` after ``delay`` s; where it had already finished (this
    run faster than the measured one), again into a fresh folder at half the delay, so every
    kill lands mid-run. Returns the killed run's folder and the processes it had started."""
    for attempt in range(6):
        target = out if attempt == 0 else out.with_name(f"{out.name}-{attempt}")
        kids, killed = _kill_at(make_args(target), delay)
        if killed:
            return target, kids
        delay /= 2
    raise AssertionError(f"{out.name}: the command finished before each of 6 kills (last after {2 * delay:.2f} s)")


def _assert_all_gone(pids: set[int], patience_s: float = 30.0) -> None:
    """Every process in ``pids`` exits soon after its parent was killed (a worker still
    starting up under load exits once it has imported enough to notice)."""
    deadline = time.time() + patience_s
    while time.time() < deadline and any(_alive(c) for c in pids):
        time.sleep(0.1)
    assert not [c for c in pids if _alive(c)], f"processes outlived their killed parent: {sorted(pids)}"


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "report.html"}


def _no_partial_files(root: Path) -> None:
    hidden = [p for p in root.rglob(".*") if p.name not in (".run", ".synth")]
    assert hidden == [], hidden
    assert not list(root.rglob("lock"))


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = ["file,split,label,mask"]
    for i in range(3):
        write_image(root / "images" / f"good{i}.png", (rng.random((64, 96, 3)) * 30 + 100).astype(np.uint8))
        rows.append(f"images/good{i}.png,train,good,")
    for i in range(2):
        img = (rng.random((64, 96, 3)) * 30 + 100).astype(np.uint8)
        m = np.zeros((64, 96), bool)
        m[20:30, 20 + 30 * i:32 + 30 * i] = True
        img[m] = 30
        write_image(root / "images" / f"pit{i}.png", img)
        write_mask(root / "masks" / f"pit{i}.png", m)
        rows.append(f"images/pit{i}.png,train,pitting,masks/pit{i}.png")
        write_image(root / "images" / f"test{i}.png", img)
        write_mask(root / "masks" / f"test{i}.png", m)
        rows.append(f"images/test{i}.png,test,pitting,masks/test{i}.png")
    write_image(root / "images" / "testgood.png", (rng.random((64, 96, 3)) * 30 + 100).astype(np.uint8))
    rows.append("images/testgood.png,test,good,")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def _kill_and_resume(tmp_path: Path, make_args, kills: int = 2, seed: int = 0) -> None:
    ref = tmp_path / "ref"
    duration = _run(make_args(ref))
    want = _digest(ref)
    rng = np.random.default_rng(seed)
    for k in range(kills):
        out = tmp_path / f"cut{k}"
        delay = float(rng.uniform(0.3, 1.0)) * duration
        out, kids = _kill_mid_run(make_args, out, delay)
        _assert_all_gone(kids)
        _run(make_args(out))
        assert _digest(out) == want, f"kill after {delay:.2f} s of {duration:.2f} s"
        _no_partial_files(out)


def test_synth_with_workers_killed_at_random_points(tmp_path):
    data = _dataset(tmp_path / "data")

    def args(out: Path) -> list[str]:
        return _cmd("synth", str(data), "--out", str(out), "--generator", "pitting", "--n", "24", "--seed", "3",
                    "--workers", "2", "--roi", "border", "--to", "mvtec,yolo,coco")

    _kill_and_resume(tmp_path, args, kills=2)


def test_sigkill_of_synth_leaves_no_worker_alive(tmp_path):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "o"
    p = subprocess.Popen(_cmd("synth", str(data), "--out", str(out), "--generator", "pitting", "--n", "400",
                              "--workers", "2", "--roi", "border"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=ENV)
    journal = out / ".synth" / "journal.jsonl"
    t_end = time.time() + 120
    while time.time() < t_end and not (journal.is_file() and journal.stat().st_size > 0):
        time.sleep(0.05)
    kids = _descendants(p.pid)
    assert len(kids) >= 2, "the workers were running"
    p.send_signal(signal.SIGKILL)
    p.wait()
    _assert_all_gone(kids)


def test_synth3d_killed_at_random_points(tmp_path):
    def args(out: Path) -> list[str]:
        return _cmd("synth3d", "part:all", "--describe", "a scratch and a dent", "--n", "6", "--seed", "1",
                    "--points", "2000", "--out", str(out))

    _kill_and_resume(tmp_path, args, kills=2, seed=1)


def test_train_detector_killed_at_random_points(tmp_path):
    import torch

    data = _dataset(tmp_path / "data")

    def args(out: Path) -> list[str]:
        return _cmd("train-detector", str(data), "--out", str(out), "--arch", "fcos-lite0", "--image-size", "48",
                    "--epochs", "3", "--val-fraction", "0", "--batch-size", "2")

    from defectforge.supervised import BoxDetector

    ref = tmp_path / "ref"
    duration = _run(args(ref))
    want = BoxDetector.load(ref / "model.pt").model_.state_dict()
    rng = np.random.default_rng(2)
    for k in range(2):
        out = tmp_path / f"cut{k}"
        out, _ = _kill_mid_run(args, out, float(rng.uniform(0.4, 1.0)) * duration)
        _run(args(out))
        got = BoxDetector.load(out / "model.pt").model_.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)
        m_got, m_want = (json.loads((d / "metrics.json").read_text()) for d in (out, ref))
        assert m_got["test"] == m_want["test"]
        untimed = [[{k: v for k, v in h.items() if k != "seconds_train"} for h in m["history"]] for m in (m_got, m_want)]
        assert untimed[0] == untimed[1]
        _no_partial_files(out)


def test_experiment_killed_at_random_points(tmp_path):
    data = _dataset(tmp_path / "data")

    def args(out: Path) -> list[str]:
        return _cmd("experiment", "exdd-augmentation", "--data", str(data), "-o", str(out), "--seed", "0",
                    "--seed", "1", "--n-synth", "0", "--n-synth", "2", "--exdd-image-size", "32")

    ref = tmp_path / "ref"
    duration = _run(args(ref))
    rng = np.random.default_rng(3)
    out = tmp_path / "cut"
    out, _ = _kill_mid_run(args, out, float(rng.uniform(0.3, 1.0)) * duration)
    _run(args(out))
    for name in ("results.csv", "results.md", "settings.json"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    _no_partial_files(out)


def test_lora_training_killed_at_random_points(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    import json as _json

    from safetensors.numpy import load_file

    from defectforge.synth2d.diffusion.tiny import build_tiny_inpaint_pipeline

    tiny = build_tiny_inpaint_pipeline(tmp_path / "tiny", kind="sdxl", seed=0)
    data = _dataset(tmp_path / "data")

    def args(out: Path) -> list[str]:
        return _cmd("lora", "train", str(data), "--base-model", str(tiny), "--prompt", "dark pit", "--out", str(out),
                    "--steps", "6", "--checkpoint-every", "2", "--resolution", "64", "--min-crop", "32",
                    "--samples", "0", "--lr", "1e-3", "--resume")

    ref = tmp_path / "ref"
    duration = _run(args(ref))
    want = load_file(ref / "pytorch_lora_weights.safetensors")
    out = tmp_path / "cut"
    out, _ = _kill_mid_run(args, out, float(np.random.default_rng(4).uniform(0.5, 1.0)) * duration)
    _run(args(out))
    got = load_file(out / "pytorch_lora_weights.safetensors")
    assert got.keys() == want.keys() and all(np.allclose(got[k], want[k], rtol=1e-5, atol=1e-6) for k in want)
    assert _json.loads((out / "losses.json").read_text())["losses"] == pytest.approx(
        _json.loads((ref / "losses.json").read_text())["losses"], rel=1e-5)
    _no_partial_files(out)


_KILL_IN_EXPORT = """
import os, sys
import defectforge.data.mvtec as mv
real = mv.export_image
def die(s, dst):
    real(s, dst)
    os.kill(os.getpid(), 9)  # SIGKILL while the export's hidden staging folder is half written
mv.export_image = die
from defectforge.cli import main
main(sys.argv[1:])
"""


def test_a_kill_during_export_leaves_no_staging_folder_after_the_rerun(tmp_path):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "o"
    args = ["synth", str(data), "--out", str(out), "--generator", "pitting", "--n", "3", "--seed", "0",
            "--workers", "1", "--roi", "border", "--to", "mvtec"]
    r = subprocess.run([sys.executable, "-c", _KILL_IN_EXPORT, *args], env=ENV, capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    assert [p.name for p in (out / "export").iterdir() if p.name.startswith(".mvtec.")], "the kill hit the export"
    _run(_cmd(*args))
    _no_partial_files(out)
    assert (out / "export" / "mvtec").is_dir()
    ref = tmp_path / "ref"
    _run(_cmd(*[a if a != str(out) else str(ref) for a in args]))
    assert _digest(out) == _digest(ref)

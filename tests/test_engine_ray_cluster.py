"""Integration: a 2-node Ray cluster on this machine (a head with one CPU, a second node
with one CPU and its own temp dir, both started with ``ray start --block`` and stopped
in a ``finally``), driven by the CLI through ``--ray-address``: ``synth`` and
``detect predict`` give the local engine's bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'defectforge[dist]')")

from test_synth2d_pipeline import make_dataset  # noqa: E402

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


#: every process of the test cluster (nodes, CLI drivers) runs without Ray's token auth (loopback only)
ENV = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digest(out: Path, skip: tuple[str, ...] = ("report.html",)) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in skip}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(ENV, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # Ray workers run one torch thread too
    return subprocess.run([sys.executable, "-m", "defectforge", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray_bin = shutil.which("ray", path=str(BIN)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the 'ray' command is not on PATH")
    port = _free_port()
    base = Path("/tmp") / f"dfray{os.getpid()}"  # Ray's socket paths must stay short
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    head = subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                             "--temp-dir", str(base / "head"), *common],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=ENV)
    procs = [head]
    try:
        addr = f"127.0.0.1:{port}"
        procs.append(subprocess.Popen([ray_bin, "start", "--address", addr, "--temp-dir", str(base / "node2"),
                                       *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, env=ENV))
        _wait_for_cpus(addr, 2, procs)
        yield addr
    finally:
        for p in reversed(procs):  # SIGTERM to 'ray start --block' stops that node's processes
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_cpus(addr: str, n: int, procs: list, timeout: float = 180.0) -> None:
    """Until the cluster shows ``n`` CPUs; fails at once when a node process has exited."""
    code = ("import ray,sys,time\n"
            f"ray.init(address={addr!r}, logging_level='ERROR')\n"
            "t=time.time()\n"
            f"while ray.cluster_resources().get('CPU',0) < {n} and time.time()-t < 20: time.sleep(1)\n"
            f"ok = ray.cluster_resources().get('CPU',0) >= {n}\n"
            "ray.shutdown()\n"
            "sys.exit(0 if ok else 1)\n")
    t0 = time.time()
    err = ""
    while time.time() - t0 < timeout:
        dead = [p.args[:3] for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a Ray node exited: {dead}")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
        if r.returncode == 0:
            return
        err = r.stderr[-2000:]
        time.sleep(2)
    raise RuntimeError(f"the 2-node Ray cluster did not come up: {err}")


def test_two_node_cluster_gives_local_bytes(cluster, tmp_path):
    data = make_dataset(tmp_path / "data")
    gen = ["--generator", "pitting", "--n", "6", "--seed", "3", "--roi", "border", "--to", "yolo"]
    r = _cli("synth", str(data), *gen, "--out", str(tmp_path / "local"), "--workers", "1")
    assert r.returncode == 0, r.stderr
    r = _cli("synth", str(data), *gen, "--out", str(tmp_path / "ray"), "--engine", "ray", "--ray-address", cluster)
    assert r.returncode == 0, r.stderr
    local = _digest(tmp_path / "local")
    assert local == _digest(tmp_path / "ray") and len([k for k in local if k.startswith("images/")]) == 6

    model = tmp_path / "m.dfm"
    r = _cli("detect", "fit", str(data / "split.csv"), "--out", str(model), "--random-init", "--image-size", "64x96")
    assert r.returncode == 0, r.stderr
    imgs = str(tmp_path / "local" / "images")
    r = _cli("detect", "predict", str(model), imgs, "--out", str(tmp_path / "p_local"))
    assert r.returncode == 0, r.stderr
    r = _cli("detect", "predict", str(model), imgs, "--out", str(tmp_path / "p_ray"), "--engine", "ray",
             "--ray-address", cluster)
    assert r.returncode == 0, r.stderr
    assert _digest(tmp_path / "p_local") == _digest(tmp_path / "p_ray")

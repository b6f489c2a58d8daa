"""Batch synthesis of defective clouds in the Real3D-AD layout, resumable.

For sample ``i`` the random state is ``SeedSequence(seed, spawn_key=(i,))`` (one child
for the base part or the sampling of a mesh input, one for the defects, one for the
scan), so any sample can be regenerated alone and a rerun reproduces the same files.
Outputs in ``out_dir``::

    run.json                 the run's configuration (a rerun must match it)
    .run/                    run state (fingerprint, journal of finished samples, lock)
    <name>.txt               x y z label per line, 6 decimals (Real3D-AD gt layout)
    <name>.ply               binary PLY with x y z nx ny nz label
    meta/<name>.json         per-sample record; written last, so it marks completion
    manifest.csv             file, part, defects, instruction, seed, n_points, n_defect_points

The folder follows :mod:`defectforge.runfolder`: a journaled sample (whose ``meta`` record
exists) is skipped on rerun; every file is written atomically, so an interrupted run leaves
only complete samples; a different run, a non-empty folder the command did not create, a
folder that overlaps the input, and a second concurrent run are refused.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from defectforge._atomic import atomic_write_json, atomic_write_text
from defectforge.errors import ConfigError, DefectforgeError, InputError
from defectforge.runfolder import RunFolder, remove_leftovers
from defectforge.synth3d.cloud import PointCloud, check_cloud
from defectforge.synth3d.cloud_io import list_cloud_files, read_cloud, write_ply, write_xyz_label
from defectforge.synth3d.instructions import InstructionSet, synthesize
from defectforge.synth3d.parts import PART_NAMES, make_part

MANIFEST_COLUMNS = ("file", "part", "defects", "instruction", "seed", "n_points", "n_defect_points")
OUTPUTS = ("run.json", "*.txt", "*.ply", "meta", "manifest.csv")


@dataclass
class InputSource:
    """One base cloud: a point-cloud file (read once), a mesh file (sampled anew for
    every item from the item's random stream) or a parametric part (regenerated per item)."""

    name: str
    path: Path | None = None
    part: str | None = None
    _cache: PointCloud | None = None
    _is_mesh: bool = False

    def load(self, rng: np.random.Generator, n_points: int) -> PointCloud:
        if self.part is not None:
            return make_part(self.part, n_points, rng)
        seed = int(rng.integers(2 ** 63))
        if self._cache is None or self._is_mesh:
            cloud = read_cloud(self.path, mesh_points=n_points, seed=seed)
            self._is_mesh = "watertight" in cloud.meta  # set only when a mesh was sampled
            check_cloud(cloud.points, self.path)
            if cloud.normals is None or cloud.meta.get("watertight") is False:
                from defectforge.synth3d.geometry import estimate_normals

                cloud.normals = estimate_normals(cloud.points)
            if self._is_mesh:
                return cloud
            self._cache = cloud
        c = self._cache
        return PointCloud(c.points.copy(), c.normals.copy(), None, dict(c.meta))


def resolve_inputs(spec: str) -> list[InputSource]:
    """``part:NAME`` (``part:all`` cycles through every part), a cloud/mesh file, or a folder of them."""
    if spec.startswith("part:"):
        name = spec[5:]
        names = PART_NAMES if name in ("all", "*") else (name,)
        for nm in names:
            if nm not in PART_NAMES:
                raise ConfigError(f"unknown part {nm!r} in {spec!r}; choose one of {', '.join(PART_NAMES)} or 'all'")
        return [InputSource(nm, part=nm) for nm in names]
    path = Path(spec)
    if path.is_dir():
        files = list_cloud_files(path)
        if not files:
            raise InputError(path, "folder holds no point-cloud or mesh files")
        return [InputSource(f.stem, path=f) for f in files]
    if not path.exists():
        raise InputError(path, "input not found (give a file, a folder, or part:NAME)")
    return [InputSource(path.stem, path=path)]


def _describe_instructions(inst: InstructionSet) -> str:
    return "+".join(f"{d.count}x{d.type}" if d.count > 1 else d.type for d in inst.defects)


MAX_SAMPLES, MAX_POINTS = 1_000_000, 10_000_000
"""The most clouds one run makes, and the most points a part is sampled with."""


COUNTS = {"n": ("--n", 1, MAX_SAMPLES), "seed": ("--seed", 0, 2**63 - 1), "n_points": ("--points", 100, MAX_POINTS)}
"""run parameter -> (its option, lowest, highest)."""


def check_count(key: str, value: Any) -> None:
    """Refuse a run size, seed or point count (``key`` of :data:`COUNTS`) that is not a whole
    number in its range (one line; a run of 1e30 clouds would otherwise fill memory before its
    first sample)."""
    name, lo, hi = COUNTS[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be a whole number from {lo:,} to {hi:,}, got {value!r}")


def check_counts(n: Any, seed: Any, n_points: Any) -> None:
    """:func:`check_count` of each."""
    for key, value in (("n", n), ("seed", seed), ("n_points", n_points)):
        check_count(key, value)


def run_synthesis(input_spec: str, instructions: InstructionSet | Callable[[float], InstructionSet], n: int, seed: int,
                  out_dir: str | Path, *,
                  n_points: int = 20000, progress: Callable[[str, int, int | None], None] | None = None,
                  instruction_text: str = "", scan_noise: float = 0.0, partial: bool = False,
                  engine: Any = None, sources: list[InputSource] | None = None) -> dict:
    """Generate ``n`` defective clouds into ``out_dir`` (resumable); returns a summary dict.

    ``scan_noise`` adds Gaussian noise along the normals (std as a fraction of diag)
    after the defects; ``partial`` keeps only what a scanner would see from a direction
    facing the defects (Real3D-AD test clouds are partial scans). Labels follow the
    kept points exactly. ``engine`` (:mod:`defectforge.engine`) runs the samples (default:
    this process); every engine writes the same bytes. ``sources`` are the resolved
    ``input_spec`` when the caller already read them (so a file is not read twice).
    """
    check_counts(n, seed, n_points)
    sources = resolve_inputs(input_spec) if sources is None else sources  # given: already resolved (and read)
    out = Path(out_dir)
    if not 0.0 <= scan_noise <= 0.05:
        raise ConfigError(f"--scan-noise must be between 0 and 0.05 (fraction of the diagonal), got {scan_noise}")
    if callable(instructions) and not isinstance(instructions, InstructionSet):
        make_inst, inst_json = instructions, {"describe": instruction_text}
    else:
        make_inst, inst_json = _Fixed(instructions), instructions.model_dump(mode="json")
    config = {"input": input_spec, "seed": int(seed), "n_points": int(n_points),
              "instructions": inst_json, "scan_noise": float(scan_noise),
              "partial": bool(partial)}
    inputs = [] if input_spec.startswith("part:") else [input_spec]
    config = json.loads(json.dumps(config))
    adopt = _same_legacy_run(out, config)
    with RunFolder.open(out, job="synth3d", config=config, inputs=inputs, outputs=OUTPUTS, overwrite_flag=None,
                        adopt=adopt) as rf:
        if not (out / "run.json").exists():
            rf.write_artifact("run.json", json.dumps({**config, "n": int(n)}, indent=2) + "\n")
        finished = set(rf.done_ids("name", valid=lambda r: (out / "meta" / f"{r['name']}.json").is_file()))
        if adopt:  # an older folder: its meta records mark the finished samples
            finished |= {p.stem for p in (out / "meta").glob("*.json")}
        task = CloudTask(sources, make_inst, int(seed), int(n_points), float(scan_noise), bool(partial),
                         instruction_text, out)
        todo = [i for i in range(n) if task.name(i) not in finished]
        skipped = n - len(todo)
        if progress:
            progress("synth3d", skipped, n)
        from defectforge.engine.local import LocalEngine

        runner = engine if engine is not None else LocalEngine(1)
        for k, (_, rec) in enumerate(runner.map(task, todo), start=1):
            rf.journal.append(rec)
            if progress:
                progress("synth3d", skipped + k, n)
        if todo:  # the journal in index order, so it is the same bytes whatever order samples finished in
            rf.journal.rewrite(sorted(rf.journal.records(), key=lambda r: r.get("index", -1)))
        remove_leftovers(out)  # what a worker killed mid-write left (no writer is active now)
        rows = write_manifest(out)
    return {"out": str(out), "generated": len(todo), "skipped": skipped, "samples": len(rows)}


def _same_legacy_run(out: Path, config: dict) -> bool:
    """A folder written before run folders (``run.json`` at the top, no state) of this run."""
    from defectforge.runfolder import STATE

    if not (out / "run.json").is_file() or (out / STATE / "run.json").is_file():
        return False
    try:
        old = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and {k: old.get(k) for k in config} == config


class _Fixed:
    """The same instructions for every part (picklable, unlike a lambda)."""

    def __init__(self, inst: InstructionSet):
        self.inst = inst

    def __call__(self, _diag: float) -> InstructionSet:
        return self.inst


class CloudTask:
    """Make sample ``i`` from its own seed and write ``<name>.txt``, ``<name>.ply`` and
    ``meta/<name>.json`` (last: it marks completion) atomically; returns its journal record
    ``{"index", "name"}``. Runs in a worker of any engine (:mod:`defectforge.engine`)."""

    def __init__(self, sources: list[InputSource], make_inst: Callable[[float], InstructionSet], seed: int,
                 n_points: int, scan_noise: float, partial: bool, instruction_text: str, out: Path):
        self.sources, self.make_inst, self.seed, self.n_points = sources, make_inst, seed, n_points
        self.scan_noise, self.partial, self.instruction_text, self.out = scan_noise, partial, instruction_text, out

    def name(self, i: int) -> str:
        return f"{i:05d}_{self.sources[i % len(self.sources)].name}"

    def setup(self) -> None:
        pass

    def __call__(self, i: int) -> dict:
        out, src, name = self.out, self.sources[i % len(self.sources)], self.name(i)
        ss = np.random.SeedSequence(int(self.seed), spawn_key=(i,))
        part_ss, defect_ss, scan_ss = ss.spawn(3)
        base = src.load(np.random.default_rng(part_ss), self.n_points)
        try:
            inst = self.make_inst(base.diag)
            cloud, records = synthesize(base, inst, np.random.default_rng(defect_ss), source=name)
        except DefectforgeError as exc:
            raise ConfigError(f"sample {name}: {exc}") from None
        cloud = _scan(cloud, np.random.default_rng(scan_ss), self.scan_noise, self.partial)
        write_xyz_label(out / f"{name}.txt", cloud.points, cloud.labels)
        write_ply(out / f"{name}.ply", PointCloud(cloud.points, cloud.normals, cloud.labels))
        atomic_write_json(out / "meta" / f"{name}.json", {
            "file": f"{name}.txt", "part": src.part or str(src.path), "defects": _describe_instructions(inst),
            "instruction": self.instruction_text, "seed": int(self.seed), "index": i, "n_points": len(cloud),
            "n_defect_points": int(cloud.labels.sum()), "part_params": base.meta.get("params", {}),
            "records": records})
        return {"index": i, "name": name}


def _scan(cloud: PointCloud, rng: np.random.Generator, noise: float, partial: bool) -> PointCloud:
    """Optional partial view (towards the defects) and scanner noise; labels stay aligned."""
    from defectforge.synth3d.geometry import partial_view, scan_noise

    if partial:
        m = cloud.labels.astype(bool)
        view = cloud.normals[m].mean(axis=0) if m.any() else np.zeros(3)
        view = view / max(np.linalg.norm(view), 1e-12) + 0.5 * rng.normal(size=3) / np.sqrt(3)
        idx = partial_view(cloud.points, cloud.normals, view)
        if len(idx) < 50:
            raise ConfigError("partial view keeps fewer than 50 points")
        cloud = cloud.subset(idx)
    if noise > 0:
        cloud = PointCloud(scan_noise(cloud.points, rng, noise, cloud.normals), cloud.normals, cloud.labels, cloud.meta)
    return cloud


def write_manifest(out_dir: str | Path) -> list[dict]:
    """Rebuild ``manifest.csv`` from the per-sample records (sorted by name)."""
    out = Path(out_dir)
    rows = []
    for p in sorted((out / "meta").glob("*.json")):
        rec = json.loads(p.read_text(encoding="utf-8"))
        rows.append({k: rec.get(k, "") for k in MANIFEST_COLUMNS})
    bio = io.StringIO()
    w = csv.DictWriter(bio, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "manifest.csv", bio.getvalue())
    return rows

"""Batch synthesis of defective clouds in the Real3D-AD layout, resumable.

For sample ``i`` the random state is ``SeedSequence(seed, spawn_key=(i,))`` (one child
for the base part or the sampling of a mesh input, one for the defects, one for the
scan), so any sample can be regenerated alone and a rerun reproduces the same files. Outputs in ``out_dir``::

    run.json                 the run's configuration (a rerun must match it)
    <name>.txt               x y z label per line, 6 decimals (Real3D-AD gt layout)
    <name>.ply               binary PLY with x y z nx ny nz label
    meta/<name>.json         per-sample record; written last, so it marks completion
    manifest.csv             file, part, defects, instruction, seed, n_points, n_defect_points

A sample whose ``meta`` record exists is skipped on rerun; every file is written
atomically, so an interrupted run leaves only complete samples.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from defectforge._atomic import atomic_write_json, atomic_write_text
from defectforge.errors import ConfigError, DefectforgeError, InputError
from defectforge.synth3d.cloud import PointCloud, check_cloud
from defectforge.synth3d.cloud_io import list_cloud_files, read_cloud, write_ply, write_xyz_label
from defectforge.synth3d.instructions import InstructionSet, synthesize
from defectforge.synth3d.parts import PART_NAMES, make_part

MANIFEST_COLUMNS = ("file", "part", "defects", "instruction", "seed", "n_points", "n_defect_points")


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


def run_synthesis(input_spec: str, instructions: InstructionSet | Callable[[float], InstructionSet], n: int, seed: int,
                  out_dir: str | Path, *,
                  n_points: int = 20000, progress: Callable[[int, int, str], None] | None = None,
                  instruction_text: str = "", scan_noise: float = 0.0, partial: bool = False,
                  sources: list[InputSource] | None = None) -> dict:
    """Generate ``n`` defective clouds into ``out_dir`` (resumable); returns a summary dict.

    ``scan_noise`` adds Gaussian noise along the normals (std as a fraction of diag)
    after the defects; ``partial`` keeps only what a scanner would see from a direction
    facing the defects (Real3D-AD test clouds are partial scans). Labels follow the
    kept points exactly. ``sources`` are the resolved ``input_spec`` when the caller already
    read them (so a file is not read twice).
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    sources = resolve_inputs(input_spec) if sources is None else sources  # given: already resolved (and read)
    out = Path(out_dir)
    if not 0.0 <= scan_noise <= 0.05:
        raise ConfigError(f"--scan-noise must be between 0 and 0.05 (fraction of the diagonal), got {scan_noise}")
    if callable(instructions) and not isinstance(instructions, InstructionSet):
        make_inst, inst_json = instructions, {"describe": instruction_text}
    else:
        make_inst, inst_json = (lambda _diag: instructions), instructions.model_dump(mode="json")
    config = {"input": input_spec, "seed": int(seed), "n_points": int(n_points),
              "instructions": inst_json, "scan_noise": float(scan_noise),
              "partial": bool(partial)}
    run_file = out / "run.json"
    if run_file.exists():
        old = json.loads(run_file.read_text(encoding="utf-8"))
        if {k: old.get(k) for k in config} != json.loads(json.dumps(config)):
            raise ConfigError(f"{out}: holds a different run (input, seed, points or instructions differ); "
                              "use a new --out folder")
    else:
        atomic_write_json(run_file, {**config, "n": int(n)})
    done = skipped = 0
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"{i:05d}_{src.name}"
        meta_path = out / "meta" / f"{name}.json"
        if meta_path.exists():
            skipped += 1
            if progress:
                progress(i + 1, n, name)
            continue
        ss = np.random.SeedSequence(int(seed), spawn_key=(i,))
        part_ss, defect_ss, scan_ss = ss.spawn(3)
        base = src.load(np.random.default_rng(part_ss), n_points)
        try:
            inst = make_inst(base.diag)
            cloud, records = synthesize(base, inst, np.random.default_rng(defect_ss), source=name)
        except DefectforgeError as exc:
            raise ConfigError(f"sample {name}: {exc}") from None
        cloud = _scan(cloud, np.random.default_rng(scan_ss), scan_noise, partial)
        write_xyz_label(out / f"{name}.txt", cloud.points, cloud.labels)
        write_ply(out / f"{name}.ply", PointCloud(cloud.points, cloud.normals, cloud.labels))
        atomic_write_json(meta_path, {
            "file": f"{name}.txt", "part": src.part or str(src.path), "defects": _describe_instructions(inst),
            "instruction": instruction_text, "seed": int(seed), "index": i, "n_points": len(cloud),
            "n_defect_points": int(cloud.labels.sum()), "part_params": base.meta.get("params", {}),
            "records": records})
        done += 1
        if progress:
            progress(i + 1, n, name)
    rows = write_manifest(out)
    return {"out": str(out), "generated": done, "skipped": skipped, "samples": len(rows)}


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

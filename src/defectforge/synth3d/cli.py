"""``defectforge synth3d`` and ``defectforge parts``.

INPUT for ``synth3d`` is a point-cloud/mesh file (PLY, PCD, XYZ/TXT, NPY, OBJ, STL), a
folder of them, or a parametric part: ``part:flange``, ``part:bracket``,
``part:stepped_shaft``, ``part:spur_gear``, ``part:hex_bolt``, ``part:plate_pockets``,
``part:pipe_elbow`` or ``part:all`` (cycles through every part).
"""

from __future__ import annotations

from pathlib import Path

import typer

from defectforge.engine.cli import address_option, engine_option


GUESS_METRES_BELOW = 3.0
"""An input without ``--units`` whose diagonal is below this is taken to be in metres
(a part under 3 mm across is rarer than one under 3 m); otherwise millimetres."""


def guess_units(diag: float) -> str:
    """The likely length unit of a part whose bounding-box diagonal is ``diag`` (no unit given)."""
    return "m" if diag < GUESS_METRES_BELOW else "mm"


METRE_FORMATS = (".glb", ".gltf")
"""Formats whose specification fixes the unit (glTF 2.0: metres)."""


def part_size_mm(units: str | None, part_diag: float | None, first_diag: float, is_part: bool,
                 path: Path | None = None) -> tuple[float | None, str, str]:
    """(scale from input units to mm or None when ``part_diag`` fixes the size, the units
    used, a one-line note saying where the size came from and how to change it)."""
    from defectforge.errors import ConfigError
    from defectforge.synth3d.describe import UNITS_MM

    fix = "pass --units (um, mm, cm, m, in) for the input's coordinates or --part-diag with its diagonal in mm"
    if part_diag is not None:
        if not part_diag > 0:
            raise ConfigError(f"--part-diag must be a positive diagonal in mm, got {part_diag}")
        return None, "mm", f"part diagonal {part_diag:g} mm from --part-diag"
    if units is not None:
        if units not in UNITS_MM:
            raise ConfigError(f"--units must be one of {', '.join(UNITS_MM)}, got {units!r}")
        return UNITS_MM[units], units, f"input coordinates in {units} (--units); if that is wrong, {fix}"
    if is_part:
        return 1.0, "mm", "parametric parts are in mm"
    if path is not None and path.suffix.lower() in METRE_FORMATS:
        return UNITS_MM["m"], "m", f"{path.suffix} files are in metres (glTF 2.0); if that is wrong, {fix}"
    u = guess_units(first_diag)
    return UNITS_MM[u], u, (f"the input gives no units: its diagonal {first_diag:.4g} was taken as {u} "
                            f"({first_diag * UNITS_MM[u]:.4g} mm); if that is wrong, {fix}")


def synth3d_cmd(
    input: str = typer.Argument(..., metavar="INPUT", help="Cloud/mesh file (ply pcd xyz txt npy obj stl), a folder of them, or part:NAME with NAME one of flange, bracket, stepped_shaft, spur_gear, hex_bolt, plate_pockets, pipe_elbow, all."),
    instructions: Path = typer.Option(None, "--instructions", "-i", help="YAML/JSON instruction file."),
    describe: str = typer.Option(None, "--describe", "-d", help='Short description, e.g. "two 5 mm scratches on the top face and a dent near the hole".'),
    n: int = typer.Option(50, "--n", help="Number of defective samples."),
    seed: int = typer.Option(0, "--seed", help="Run seed (sample i uses SeedSequence(seed, i))."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (rerun to resume)."),
    n_points: int = typer.Option(20000, "--points", help="Points per parametric part / sampled mesh."),
    part_diag: float = typer.Option(None, "--part-diag", help="Part diagonal in mm for absolute sizes in --describe (default: each sample's own part, in --units)."),
    units: str = typer.Option(None, "--units", help="Length unit of the input's coordinates for absolute sizes in --describe: um, mm, cm, m or in (default: parametric parts mm; files guessed from their size, with a warning)."),
    llm_url: str = typer.Option(None, "--llm-url", help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1) to turn --describe into instructions; falls back to the rule-based parser."),
    llm_model: str = typer.Option("gpt-4o-mini", "--llm-model", help="Model name for --llm-url."),
    scan_noise: float = typer.Option(0.0, "--scan-noise", help="Scanner noise std along normals, fraction of diag (e.g. 0.0005)."),
    partial: bool = typer.Option(False, "--partial", help="Keep only a partial view facing the defects (like Real3D-AD test scans)."),
    workers: int = typer.Option(None, "--workers", "-j", min=1, help="Workers (default: 1 local; with --engine ray, the cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: str = address_option(),
) -> None:
    """Synthesise defective point clouds with exact point-wise masks (Real3D-AD layout)."""
    from rich.console import Console

    from defectforge.errors import ConfigError
    import numpy as np

    from defectforge.synth3d.describe import (SizedDescription, has_absolute_sizes, instructions_from_llm,
                                              parse_description)
    from defectforge.synth3d.instructions import load_instructions
    from defectforge.synth3d.pipeline import resolve_inputs, run_synthesis

    console = Console(stderr=True)
    if (instructions is None) == (describe is None):
        raise ConfigError("give exactly one of --instructions FILE or --describe TEXT")
    sources = resolve_inputs(input)
    text = ""
    if instructions is not None:
        inst = load_instructions(instructions)
        text = str(instructions)
    else:
        text = describe
        scale, hint = None, ""
        if has_absolute_sizes(describe):
            first = sources[0].load(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)).spawn(3)[0]),
                                    n_points)  # read once: run_synthesis reuses these sources
            scale, used, hint = part_size_mm(units, part_diag, first.diag, sources[0].part is not None,
                                             sources[0].path)
            if hint.startswith("the input gives no units"):
                console.print(f"[yellow]warning:[/] {hint}")
            text = f"{describe} (sizes: {hint.split(';')[0]})"
            diag_mm = part_diag if scale is None else first.diag * scale
            parse_description(describe, part_diag=diag_mm, size_hint=hint)  # fail early, before any output
        else:
            parse_description(describe)
        inst = None
        if llm_url:
            from defectforge.llm import ChatClient, LLMError

            try:
                inst = instructions_from_llm(describe, ChatClient(llm_url, llm_model),
                                             part_diag=part_diag if scale is None else None)
            except LLMError as exc:
                console.print(f"[yellow]LLM unavailable ({exc}); using the rule-based parser[/]")
        if inst is None:
            if scale is not None:  # absolute sizes refer to each sample's own part (picklable for workers)
                inst = SizedDescription(describe, scale, hint)
            else:
                inst = parse_description(describe, part_diag=part_diag, size_hint=hint)
    from defectforge.engine.cli import open_engine
    from defectforge.progress import rich_progress

    with rich_progress() as bar, open_engine(engine, ray_address, workers) as eng:
        summary = run_synthesis(input, inst, n, seed, out, n_points=n_points, instruction_text=text,
                                progress=bar,
                                scan_noise=scan_noise, partial=partial, engine=eng, sources=sources)
    Console().print(f"[green]done[/]: {summary['generated']} generated, {summary['skipped']} already present, "
                    f"{summary['samples']} samples in {summary['out']} (manifest.csv)")

def parts_cmd(
    n: int = typer.Option(10, "--n", help="Number of parts."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    part: str = typer.Option("all", "--part", help="Part name or 'all' (cycle through every part)."),
    n_points: int = typer.Option(20000, "--points", help="Points per part."),
    seed: int = typer.Option(0, "--seed"),
    fmt: str = typer.Option("ply", "--to", help="Cloud file format to write: ply, pcd, txt or npy."),
) -> None:
    """Write parametric industrial parts (good samples) as point clouds with normals."""
    import numpy as np
    from rich.console import Console

    from defectforge.progress import progress_task
    from defectforge.errors import ConfigError
    from defectforge.synth3d.cloud_io import write_cloud
    from defectforge.synth3d.parts import PART_NAMES, make_part

    if fmt not in ("ply", "pcd", "txt", "npy"):
        raise ConfigError(f"--to must be ply, pcd, txt or npy, got {fmt!r}")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    names = PART_NAMES if part == "all" else (part,)
    with progress_task("parts", n, True) as task:
        for i in range(n):
            name = names[i % len(names)]
            path = out / f"{i:05d}_{name}.{fmt}"
            if not path.exists():
                rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
                write_cloud(path, make_part(name, n_points, rng))
            task.update(i + 1)
    Console().print(f"[green]done[/]: {n} parts in {out}")


def register(app: typer.Typer) -> None:
    """Add ``defectforge synth3d`` and ``defectforge parts``."""
    app.command("synth3d")(synth3d_cmd)
    app.command("parts")(parts_cmd)

"""``defectforge data ...``: check and convert datasets.

Exit codes of ``data check``: 0 no problems, 1 problems found (warnings included),
2 the input could not be read (missing path, unknown format, malformed file).
``data convert`` exits 0 on success and 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from defectforge._cliutil import console as _console
from defectforge.errors import DefectforgeError, InputError

data_app = typer.Typer(help="Check and convert defect datasets (MVTec, manifest CSV, labelme, YOLO, COCO).",
                       no_args_is_help=True)

FORMAT_CHOICES = ("mvtec", "manifest", "labelme", "yolo", "coco")


@data_app.command("check")
def check_cmd(
    path: Path = typer.Argument(..., metavar="PATH", help="Dataset folder or file (format detected)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here ('-': stdout, the table goes to stderr)."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help=f"Force a format: {', '.join(FORMAT_CHOICES)}."),
    decode: bool = typer.Option(False, "--decode", help="Fully decode every image (finds truncated files; slower)."),
    max_problems: int = typer.Option(50, "--max-problems", help="Problems to print (all go to --json)."),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root",
                                            help="Accept image/mask paths outside the dataset folder."),
) -> None:
    """Counts per split/label, image sizes, mask statistics and problems.

    Exit code 0: no problems; 1: problems found; 2: the dataset could not be read.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from defectforge.data.check import check_dataset
    from defectforge.data.formats import format_choice, load_dataset
    from defectforge.data.problems import ReadProblems

    from defectforge._jsonout import console_for, write_json_out

    con = console_for(json_out)
    if format is not None and format not in FORMAT_CHOICES:
        raise DefectforgeError(f"unknown format {format!r} (choose from {', '.join(FORMAT_CHOICES)})")
    if json_out is not None and json_out.is_dir():
        raise InputError(json_out, "is a folder; --json needs a file name (e.g. report.json)")
    fmt, note = (format, "") if format is not None else format_choice(path)
    ds = load_dataset(path, fmt, problems=ReadProblems(collect=True, allow_outside_root=allow_outside_root))
    if note:
        con.print(f"[yellow]note:[/] {escape(note)}")
    with Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=con, transient=True) as bar:
        task = bar.add_task("check", total=len(ds))
        report = check_dataset(ds, decode=decode, progress=lambda stage, done, total: bar.update(task, completed=done))
    report.format = ds.format
    con.print(f"[bold]{escape(str(path))}[/]: format [cyan]{report.format}[/], {report.n_images} images")
    splits = sorted({k.split("/")[0] for k in report.counts}, key=lambda s: (s != "train", s != "val", s))
    labels = sorted({k.split("/", 1)[1] for k in report.counts}, key=lambda lab: (lab != "good", lab))
    t = Table(title="images per split / label")
    t.add_column("split")
    for lab in labels:
        t.add_column(lab, justify="right")
    t.add_column("total", justify="right")
    for sp in splits:
        row = [report.counts.get(f"{sp}/{lab}", 0) for lab in labels]
        t.add_row(sp, *[str(v) for v in row], str(sum(row)))
    con.print(t)
    con.print(size_summary(report.image_sizes))
    if report.mask_stats:
        mt = Table(title="defect area (fraction of the image)")
        for c in ("type", "masks", "min", "median", "max"):
            mt.add_column(c, justify="right" if c != "type" else "left")
        for typ, st in report.mask_stats.items():
            mt.add_row(typ, str(st["n"]), f"{st['min']:.4%}", f"{st['median']:.4%}", f"{st['max']:.4%}")
        con.print(mt)
    if report.problems:
        pt = Table(title=f"{len(report.problems)} problem(s)")
        pt.add_column("severity")
        pt.add_column("file", overflow="fold")
        pt.add_column("problem", overflow="fold")
        for pr in report.problems[:max_problems]:
            pt.add_row(pr["severity"], escape(pr["file"]), escape(pr["problem"]))
        con.print(pt)
        if len(report.problems) > max_problems:
            con.print(f"... {len(report.problems) - max_problems} more (see --json)")
    else:
        con.print("[green]no problems found[/]")
    if json_out is not None:
        con.print(f"report written to {escape(write_json_out(json_out, report.to_dict()))}")
    raise typer.Exit(1 if report.problems else 0)


def size_summary(sizes: dict[str, int], top: int = 5) -> str:
    """One line about image sizes (``{"WxH": count}``): the ``top`` most common with their
    counts, then how many other sizes and images, and the width/height ranges. Every size
    is in ``--json``."""
    if not sizes:
        return "image sizes: none read"
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    head = ", ".join(f"{k} x{v}" for k, v in ranked[:top])
    if len(ranked) <= top:
        return f"image sizes (WxH): {head}"
    rest = ranked[top:]
    wh = [tuple(int(x) for x in k.lower().split("x")) for k in sizes if k.lower().count("x") == 1
          and all(x.isdigit() for x in k.lower().split("x"))]
    rng = ""
    if wh:
        ws, hs = [w for w, _ in wh], [h for _, h in wh]
        rng = f"; width {min(ws)}-{max(ws)}, height {min(hs)}-{max(hs)}"
    return (f"image sizes (WxH): {len(sizes)} different; most common {head}; "
            f"{len(rest)} other sizes ({sum(v for _, v in rest)} images){rng} (all in --json)")


@data_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., metavar="SRC", help="Source dataset (format detected unless --from)."),
    dst: Path = typer.Argument(..., metavar="DST", help="Destination folder (must be empty or absent unless --overwrite)."),
    to: str = typer.Option(..., "--to", help="Output format: mvtec, manifest, yolo, coco (or labelme)."),
    from_: Optional[str] = typer.Option(None, "--from", help="Force the source format."),
    mode: Optional[str] = typer.Option(None, "--mode", help="yolo: segment (default) | detect; coco: rle (default) | polygon."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty destination."),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root",
                                            help="Accept image/mask paths outside the source dataset folder."),
) -> None:
    """Convert a dataset to another format.

    The source is never modified; the output is built in a temporary folder and moved
    into place only when complete.
    """
    from rich.markup import escape

    from defectforge.data.formats import load_dataset, write_dataset

    con = _console()
    if to not in FORMAT_CHOICES:
        raise DefectforgeError(f"unknown output format {to!r} (choose from {', '.join(FORMAT_CHOICES)})")
    if from_ is not None and from_ not in FORMAT_CHOICES:
        raise DefectforgeError(f"unknown source format {from_!r} (choose from {', '.join(FORMAT_CHOICES)})")
    valid_modes = {"yolo": ("detect", "segment"), "coco": ("polygon", "rle")}
    if mode is not None and mode not in valid_modes.get(to, ()):
        raise DefectforgeError(f"--mode {mode!r} does not apply to --to {to} "
                               f"(yolo: detect|segment, coco: polygon|rle)")
    from defectforge.data._files import check_destination

    src_root = src if src.is_dir() else src.parent
    check_destination(dst, overwrite, (src_root,))
    ds = load_dataset(src, from_, allow_outside_root=allow_outside_root)
    with con.status(f"writing {len(ds)} images as {to} ..."):
        out = write_dataset(ds, dst, to, overwrite=overwrite, mode=mode)
    # the counts of what was written (MVTec moves train defects / val to test)
    written = load_dataset(out, to).counts() if to != "labelme" else ds.counts()
    counts = ", ".join(f"{k} {v}" for k, v in written.items())
    con.print(f"wrote {escape(str(out))} ({to}): {counts}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

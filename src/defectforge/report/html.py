"""A small HTML report builder.

A :class:`Report` is a list of :class:`Section` s; each section holds blocks (text,
key/value table, table of rows, image, gallery, matplotlib figure). Images are written
to ``<out_dir>/assets/`` and referenced relatively, so the folder can be zipped and sent.
Sections are keyed, so later pipeline stages can add or replace their own section::

    rep = Report("defectforge demo", out_dir)
    sec = rep.section("data", "Dataset")
    sec.kv({"images": 90})
    sec.gallery([(img, "caption"), ...])
    rep.save()            # -> out_dir/report.html (atomic)
"""

from __future__ import annotations

import datetime as _dt
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from defectforge import __version__
from defectforge._atomic import atomic_write_text
from defectforge.data.image_io import write_image

_SLUG = re.compile(r"[^a-zA-Z0-9_.-]+")


def _slug(s: str) -> str:
    return _SLUG.sub("_", s).strip("_")[:80] or "item"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


@dataclass
class Section:
    key: str
    title: str
    report: "Report"
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, text: str) -> "Section":
        self.blocks.append(("html", "".join(f"<p>{html.escape(p)}</p>" for p in text.strip().split("\n\n"))))
        return self

    def html(self, raw_html: str) -> "Section":
        self.blocks.append(("html", raw_html))
        return self

    def kv(self, mapping: dict[str, Any]) -> "Section":
        self.blocks.append(("kv", [(str(k), _fmt(v)) for k, v in mapping.items()]))
        return self

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, caption: str = "") -> "Section":
        rows = list(rows)
        cols = list(columns) if columns else (list(rows[0].keys()) if rows else [])
        body = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
        self.blocks.append(("table", {"columns": cols, "rows": body, "caption": caption}))
        return self

    def image(self, image: np.ndarray, caption: str = "", name: str | None = None) -> "Section":
        rel = self.report.save_asset(image, name or caption or "image", self.key)
        self.blocks.append(("gallery", [(rel, caption)]))
        return self

    def gallery(self, items: Iterable[tuple[np.ndarray, str]], max_width: int = 480) -> "Section":
        saved = []
        for i, (img, cap) in enumerate(items):
            saved.append((self.report.save_asset(img, f"{i:03d}_{cap}", self.key, max_width=max_width), cap))
        self.blocks.append(("gallery", saved))
        return self

    def figure(self, fig: Any, caption: str = "", name: str | None = None) -> "Section":
        """Add a matplotlib figure (saved as PNG, then closed)."""
        return self.figures([(fig, caption)]) if name is None else self._figures([(fig, caption, name)])

    def figures(self, figs: Iterable[tuple[Any, str]]) -> "Section":
        """Add matplotlib figures side by side (one gallery, wrapping)."""
        return self._figures([(f, c, None) for f, c in figs])

    def _figures(self, figs: Sequence[tuple[Any, str, str | None]]) -> "Section":
        import matplotlib.pyplot as plt

        saved = []
        for fig, caption, name in figs:
            rel = self.report.asset_path(name or caption or "figure", self.key, ".png")
            out = self.report.out_dir / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp.png")
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
            tmp.replace(out)
            plt.close(fig)
            saved.append((rel, caption))
        self.blocks.append(("gallery", saved))
        return self


class Report:
    """An HTML report under ``out_dir`` (``report.html`` plus ``assets/``)."""

    def __init__(self, title: str, out_dir: str | Path, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self.out_dir = Path(out_dir)
        self.sections: dict[str, Section] = {}
        self._names: set[str] = set()

    def section(self, key: str, title: str | None = None, replace: bool = True) -> Section:
        """The section ``key`` (created at the end, or emptied and reused when ``replace``)."""
        if key in self.sections and not replace:
            return self.sections[key]
        sec = Section(key, title or key, self)
        self.sections[key] = sec
        return sec

    def asset_path(self, name: str, group: str, suffix: str) -> str:
        base = f"assets/{_slug(group)}/{_slug(name)}"
        rel, k = base + suffix, 1
        while rel in self._names:
            rel, k = f"{base}_{k}{suffix}", k + 1
        self._names.add(rel)
        return rel

    def save_asset(self, image: np.ndarray, name: str, group: str, max_width: int | None = None) -> str:
        import cv2

        img = np.asarray(image)
        if max_width and img.shape[1] > max_width:
            h = max(1, round(img.shape[0] * max_width / img.shape[1]))
            img = cv2.resize(img, (max_width, h), interpolation=cv2.INTER_AREA)
        rel = self.asset_path(name, group, ".png")
        write_image(self.out_dir / rel, img)
        return rel

    def render(self) -> str:
        from jinja2 import Environment, PackageLoader, select_autoescape

        env = Environment(loader=PackageLoader("defectforge.report", "templates"), autoescape=select_autoescape())
        tpl = env.get_template("report.html.j2")
        return tpl.render(
            title=self.title,
            subtitle=self.subtitle,
            sections=list(self.sections.values()),
            version=__version__,
            created=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        )

    def save(self, name: str = "report.html") -> Path:
        out = self.out_dir / name
        atomic_write_text(out, self.render())
        return out

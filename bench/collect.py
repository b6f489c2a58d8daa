"""Collect the per-benchmark pages ``docs/bench/*.md`` into ``docs/benchmarks.md``.

Each benchmark script writes its own page (command, machine, date, numbers); this keeps
one file a reader can open. Run by ``make bench`` after the benchmarks, or by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["data", "metrics", "exdd", "synth2d", "diffusion", "synth3d", "detect3d", "supervised"]


def main() -> int:
    pages = sorted((ROOT / "docs" / "bench").glob("*.md"),
                   key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    parts = [
        "# Benchmarks\n",
        "Measured on this project's machines (2-core x86_64 CPU, 24 GB, no GPU) unless a section says otherwise. "
        "Each section names its command, date and conditions; it is generated from `docs/bench/<name>.md` by "
        "`python bench/collect.py` (run by `make bench`). Numbers taken while other jobs shared the two cores "
        "say so: treat their absolute times as upper bounds, and compare ratios only within one run.\n",
        "Contents: " + ", ".join(f"[{p.stem}](#{p.stem})" for p in pages) + "\n",
    ]
    for p in pages:
        text = p.read_text(encoding="utf-8").strip()
        lines = text.splitlines()
        if lines and lines[0].startswith("# "):
            lines[0] = "#" + lines[0]  # demote the page title to a section
        parts.append(f'<a id="{p.stem}"></a>\n\n' + "\n".join(
            ("#" + ln if ln.startswith("## ") or ln.startswith("### ") else ln) if i else ln
            for i, ln in enumerate(lines)))
    out = ROOT / "docs" / "benchmarks.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out} ({len(pages)} sections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

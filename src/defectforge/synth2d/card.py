"""The dataset card of a synthesis run (``dataset_card.json`` and ``.md``): counts per
defect type and generator, rejections by reason, the configuration, real-mask statistics
and the software versions. No timestamps, so reruns stay byte-identical."""

from __future__ import annotations

import platform
from collections import Counter
from pathlib import Path
from typing import Any

from defectforge._atomic import atomic_write_json, atomic_write_text


def versions() -> dict[str, str]:
    import cv2
    import numpy
    import PIL
    import pydantic
    import scipy

    from defectforge import __version__

    return {"defectforge": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "opencv": cv2.__version__, "scipy": scipy.__version__, "pillow": PIL.__version__,
            "pydantic": pydantic.__version__}


def write_card(out: Path, cfg: Any, recs: list[dict[str, Any]], total: int, facts: dict[str, Any], run: Any,
               realism: dict[str, Any] | None = None) -> None:
    ok = [r for r in recs if r.get("status") == "ok"]
    by_type = Counter(r["label"] for r in ok)
    by_gen = Counter(r["generator"] for r in ok)
    attempts = sum(r.get("attempts", 0) for r in ok) + sum(len(r.get("rejects", [])) for r in recs if r.get("status") != "ok")
    card = {
        "title": "defectforge synthetic defects",
        "samples": {"requested": total, "accepted": len(ok), "failed": run.failed, "attempts": attempts},
        "by_defect_type": dict(sorted(by_type.items())),
        "by_generator": dict(sorted(by_gen.items())),
        "rejected_attempts": run.rejected,
        "source": facts,
        "exports": sorted(run.exports),
        "config": cfg.model_dump(mode="json", exclude={"out"}),
        "realism": realism,
        "versions": versions(),
        "license_note": "Derived images inherit the license of the source images (BSData: CC BY-SA 4.0).",
    }
    atomic_write_json(out / "dataset_card.json", card)
    lines = ["# Synthetic defect dataset", "",
             f"- requested: {total}; accepted: {len(ok)}; failed: {run.failed}; generation attempts: {attempts}",
             f"- by defect type: {dict(sorted(by_type.items()))}",
             f"- by generator: {dict(sorted(by_gen.items()))}",
             f"- rejected attempts (label derivation): {run.rejected or 'none'}",
             f"- source: `{cfg.source.path}` split `{cfg.source.split}`; good images: {facts.get('good_images')}; "
             f"real defect images: {facts.get('real_defect_images')}"
             + (f"; hosts: the {facts['hosts']['kept']} of {facts['hosts']['of']} good images most like the real "
                f"defect images (`source.hosts: similar`)" if (facts.get("hosts") or {}).get("mode") == "similar"
                else ""),
             f"- seed: {cfg.seed}; exports: {', '.join(sorted(run.exports)) or 'none'}",
             "- files: `images/*.png` (synthetic), `masks/*.png` (0/255 labels derived from the pixel change), "
             "`manifest.csv` (generator, params, seed, source, QC per sample)",
             "- the test split is never used as a source unless the config asks for it"
             + (f" (**{facts['warning']}**)" if facts.get("warning") else ""),
             ""]
    if realism:
        lines += ["## Realism against the real defects of the source split", "",
                  f"- C2ST: {realism['c2st_method']}"]
        lines += [f"- {k}: {v}" for k, v in realism.items() if k != "c2st_method"]
        lines += [""]
    lines += ["## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in card["versions"].items()]
    lines += ["", "## License", "", card["license_note"], ""]
    atomic_write_text(out / "dataset_card.md", "\n".join(lines))

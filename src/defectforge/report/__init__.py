"""HTML reports a person can look at: sections of text, tables, plots and image galleries."""

from defectforge.report.html import Report, Section
from defectforge.report.visual import heatmap_overlay, mask_overlay, side_by_side

__all__ = ["Report", "Section", "heatmap_overlay", "mask_overlay", "side_by_side"]

"""Per-sample filtering of synthetic defects and set-level quality metrics.

- :mod:`~defectforge.filter.embed`: the :class:`Embedder` protocol; the weight-free default
  (bundled EfficientNet-Lite0 ImageNet weights, pooled stride-8/16 features of a defect crop);
  optional CLIPScore / DreamSim adapters that load **local** weights only.
- :mod:`~defectforge.filter.scores`: realism (feature distance to the nearest real defect
  crop), fidelity (change inside the mask, none outside), diversity.
- :mod:`~defectforge.filter.select`: selection policies (rules with absolute or
  percentile-within-batch thresholds, top-k, per-type quotas, minimum diversity).
- :mod:`~defectforge.filter.quality`: KID (unbiased polynomial-kernel MMD over subsets),
  precision / recall / density / coverage and the Fréchet distance (FID) on embeddings.
- :mod:`~defectforge.filter.inception`: Inception-v3 pool features from a **local**
  torchvision-layout weights file (for FID / Inception-KID; never downloaded).
- :mod:`~defectforge.filter.run`: :func:`filter_dataset` (scores CSV, kept subset, HTML report).

Heavy imports (torch, timm) happen on first use.
"""

from defectforge.filter.quality import frechet_distance, kid, prdc
from defectforge.filter.select import Rule, SelectionPolicy, parse_rule, select

__all__ = ["Rule", "SelectionPolicy", "frechet_distance", "kid", "parse_rule", "prdc", "select"]

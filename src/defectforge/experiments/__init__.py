"""The papers' experiments, each over several seeds with mean ± std.

- ``exdd-augmentation``: 0/50/100/150 synthetic samples added to ExDD's defect bank ->
  I-AUROC, P-AUROC (ExDD's augmentation table).
- ``synsur-regimes``: a supervised box detector trained on real only, synthetic only,
  real + synthetic at several ratios, and few-real regimes with and without synthetic ->
  mAP@0.5, mAP@0.5:0.95 (SynSur's training regimes).
- ``filtering-ablation``: unfiltered vs filtered synthetic sets of the same size, for
  ExDD and the supervised detector.

Nothing is fitted, tuned or picked on test: validation splits are carved from TRAIN,
synthetic samples are made only from TRAIN images (never the validation part), and the
filter's real reference is the TRAIN defects. Runs are journaled, so an interrupted
experiment resumes where it stopped.
"""

from defectforge.experiments.runner import EXPERIMENTS, ExperimentSettings, run_experiment, summarize

__all__ = ["EXPERIMENTS", "ExperimentSettings", "run_experiment", "summarize"]

#!/bin/bash
# Issue 15: the equal-steps, validation-by-group comparison of box_group_val/run.sh (Faster R-CNN,
# 160 px, 600 optimiser steps per run, transplant with blend matched, all-train-part and 10-real
# regimes, --val-split group) with one change: --ema 0.999 (the weights' moving average is what is
# validated, picked and tested; docs/detectors.md "Weight averaging"). Declared before the run
# (2026-12-05 14:30 UTC): seeds 0 1 2, the protocol; nothing else changed; the reading is
# the 3-seed paired t interval as before, whatever it shows. This is the fourth 3-seed attempt at
# the box targets (pitting, transplant by image, transplant by group, this one): see results.md.
# usage (from the repository root): bash docs/results/issue15/box_ema/run.sh OUT "0 1 2"
out=$1; seeds=""
for s in $2; do seeds="$seeds --seed $s"; done
uptime
defectforge experiment synsur-regimes --data ../shared/datasets/bsdata -o "$out" \
  --arch fasterrcnn-lite0 --det-image-size 160 --epochs 12 --patience 12 --steps-per-epoch 50 \
  --ratio 1 --few-real 10 --few-real-synth 50 --val-split group --ema 0.999 \
  --generator transplant --generator-params '{"blend": "matched"}' \
  --only 'real only' --only 'real + synthetic x1' --only '10 real' --only '10 real + 50 synthetic' $seeds
uptime

#!/bin/bash
# Issue 15: Faster R-CNN on BSData, real vs real + synthetic at equal optimiser steps (600 per run),
# full train part (50 real) and few-real (10 real) regimes. The generator was fixed before any run:
# transplant with blend matched, the weight-free generator with the lowest C2ST against the
# validation defects (protocol B, docs/results.md). Seeds 0-2 first (the 3 seeds), then 3-4.
# usage (from the repository root): bash docs/results/issue15/box_equal_steps/run.sh OUT "0 1 2"
out=$1; seeds=""
for s in $2; do seeds="$seeds --seed $s"; done
uptime
defectforge experiment synsur-regimes --data ../shared/datasets/bsdata -o "$out" \
  --arch fasterrcnn-lite0 --det-image-size 160 --epochs 12 --patience 12 --steps-per-epoch 50 \
  --ratio 1 --few-real 10 --few-real-synth 50 \
  --generator transplant --generator-params '{"blend": "matched"}' \
  --only 'real only' --only 'real + synthetic x1' --only '10 real' --only '10 real + 50 synthetic' $seeds
uptime

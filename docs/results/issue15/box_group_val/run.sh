#!/bin/bash
# Issue 15: the equal-steps comparison of box_equal_steps/run.sh (Faster R-CNN, 160 px, 600 optimiser
# steps per run, transplant with blend matched, 50-real and 10-real regimes) with one change: the
# validation part of TRAIN (best epoch) holds out whole groups (--val-split group; the default
# `auto` does the same on BSData), so validation defects come from wear sequences that training never
# saw, as TEST's do. Declared before the run: seeds 0 1 2, the protocol, nothing else changed.
# usage (from the repository root): bash docs/results/issue15/box_group_val/run.sh OUT "0 1 2"
out=$1; seeds=""
for s in $2; do seeds="$seeds --seed $s"; done
uptime
defectforge experiment synsur-regimes --data ../shared/datasets/bsdata -o "$out" \
  --arch fasterrcnn-lite0 --det-image-size 160 --epochs 12 --patience 12 --steps-per-epoch 50 \
  --ratio 1 --few-real 10 --few-real-synth 50 --val-split group \
  --generator transplant --generator-params '{"blend": "matched"}' \
  --only 'real only' --only 'real + synthetic x1' --only '10 real' --only '10 real + 50 synthetic' $seeds
uptime

#!/bin/sh
# recipe search verdict for exdd: real data only (no recipe beat the baseline on validation)
defectforge detect fit /work/shared/datasets/bsdata --model exdd --out /tmp/search256-nofilter/model.pt

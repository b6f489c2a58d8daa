#!/bin/sh
# recipe search verdict for fasterrcnn-lite0: real data only (no recipe beat the baseline on validation)
# searched at reduced settings {'image_size': 160, 'epochs': 12, 'patience': 12}; the detector below runs at its own defaults
defectforge train-detector /work/shared/datasets/bsdata --arch fasterrcnn-lite0 --out /work/tmp/exp/search-frcnn/detector

#!/bin/sh
# recipe search verdict for fasterrcnn-lite0: use the recipe
# searched at reduced settings {'image_size': 160, 'epochs': 12, 'patience': 12}; the detector below runs at its own defaults
defectforge synth --config /work/runs/rs_group/best_recipe.yaml --out /work/runs/rs_group/synth_recipe
defectforge train-detector /work/shared/datasets/bsdata --arch fasterrcnn-lite0 --out /work/runs/rs_group/detector --synthetic /work/runs/rs_group/synth_recipe

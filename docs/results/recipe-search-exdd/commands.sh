#!/bin/sh
# recipe search verdict for exdd: use the recipe
defectforge synth --config /tmp/recipe/bs/search/best_recipe.yaml --out /tmp/recipe/bs/search/synth_recipe
defectforge detect fit /work/shared/datasets/bsdata --model exdd --out /tmp/recipe/bs/search/model.pt --synthetic /tmp/recipe/bs/search/synth_recipe

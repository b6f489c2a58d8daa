"""Recipes (mixes of generators with parameter ranges and counts, as synth configs) and the
closed-loop search that picks one on validation data: ``defectforge recipe search``."""

from defectforge.recipe.search import SearchSettings, Splits, carve_splits, search_recipes, synthesize_recipe

__all__ = ["SearchSettings", "Splits", "carve_splits", "search_recipes", "synthesize_recipe"]

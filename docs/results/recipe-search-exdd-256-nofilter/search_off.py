import sys
from defectforge.recipe.search import SearchSettings, search_recipes
st = SearchSettings(detector="exdd", trials=8, folds=3, seed=0, detector_params={"synthetic_filter": None})
search_recipes("../shared/datasets/bsdata", sys.argv[1], st, log=print)

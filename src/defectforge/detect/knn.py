"""Old import path of :mod:`defectforge.bank.knn` (the module moved there; this name is an alias of it)."""

import sys

from defectforge.bank import knn as _moved

sys.modules[__name__] = _moved

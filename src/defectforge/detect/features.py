"""Old import path of :mod:`defectforge.bank.features` (the module moved there; this name is an alias of it)."""

import sys

from defectforge.bank import features as _moved

sys.modules[__name__] = _moved

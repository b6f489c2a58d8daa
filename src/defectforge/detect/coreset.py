"""Old import path of :mod:`defectforge.bank.coreset` (the module moved there; this name is an alias of it)."""

import sys

from defectforge.bank import coreset as _moved

sys.modules[__name__] = _moved

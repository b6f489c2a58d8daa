"""Old import path of :mod:`defectforge.bank.progress` (the module moved there; this name is an alias of it)."""

import sys

from defectforge.bank import progress as _moved

sys.modules[__name__] = _moved

"""Old import path of :mod:`defectforge.bank.backbone` (the module moved there; this name is an alias of it)."""

import sys

from defectforge.bank import backbone as _moved

sys.modules[__name__] = _moved

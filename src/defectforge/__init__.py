"""defectforge: synthetic industrial defects with exact labels, filtering, and detectors.

Data flows one way: dataset -> masks -> generator -> labels -> filter -> export ->
detector -> evaluation -> report. See the README for a tour.
"""

from defectforge.errors import DefectforgeError, InputError

__version__ = "0.1.0"

__all__ = ["DefectforgeError", "InputError", "__version__"]

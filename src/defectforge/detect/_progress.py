"""Old import path of :func:`defectforge.progress.progress_task` (the one progress protocol)."""

from defectforge.progress import progress_task

__all__ = ["progress_task"]

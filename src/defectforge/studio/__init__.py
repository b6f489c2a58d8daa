"""Defect Studio: a local web app over the toolkit (``defectforge studio PROJECT_DIR``).

Pages: Data (any dataset the readers take, overlays, filters, 3D viewer), Author 2D
(generator forms from the registry, place by click or drawn mask, preview with the derived
label, accept into a synthetic set), Author 3D (MPAS operators placed by clicking a point,
describe box with validation). The server is FastAPI (:func:`create_app`); the front end is
plain HTML/JS in ``static/``. Needs the ``[studio]`` extra.
"""

__all__ = ["create_app"]


def __getattr__(name: str):  # the web stack is imported only when the app is asked for
    if name == "create_app":
        from defectforge.studio.app import create_app

        return create_app
    raise AttributeError(name)

"""3D synthesis (MPAS-style): defects on point clouds with exact point-wise masks.

- :mod:`.cloud`, :mod:`.cloud_io`: the point-cloud type and PLY/PCD/XYZ/NPY/mesh I/O.
- :mod:`.geometry`: normals (PCA, outward orientation), voxel downsampling, scan noise, partial views.
- :mod:`.parts`: parametric industrial parts with exact normals.
- :mod:`.operators`: bump, dent, pit, scratch, groove, bend, crack, freeform, bulge, sink; compose.
- :mod:`.instructions`, :mod:`.describe`: validated instructions from files, text or an LLM.
- :mod:`.pipeline`, :mod:`.cli`: resumable batch output in the Real3D-AD layout.
- :mod:`.render`, :mod:`.demo`: images for reports.
"""

from defectforge.synth3d.cloud import PointCloud, check_cloud
from defectforge.synth3d.operators import OPERATORS, OpResult, Surface, SynthesisError, apply, compose


def demo_section(report, out_dir=None, seed: int = 0, **kwargs):
    """Add the "3D synthesis" section to a report (see :func:`defectforge.synth3d.demo.demo_section`)."""
    from defectforge.synth3d.demo import demo_section as _demo

    return _demo(report, out_dir, seed, **kwargs)


__all__ = ["OPERATORS", "OpResult", "PointCloud", "Surface", "SynthesisError", "apply", "check_cloud", "compose",
           "demo_section"]

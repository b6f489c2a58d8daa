"""Small numpy renderer for point clouds (PNG-ready HxWx3 uint8), no OpenGL needed.

Orthographic view after an azimuth/elevation rotation, painter's algorithm (far points
first, near points overwrite), 2x2 pixel splats, Lambert shading from normals (or depth
shading without them). Masked points are red; ``scores`` are drawn with a blue-to-red
ramp instead. Good enough for reports and galleries, deterministic, fast (100k points
in well under a second).
"""

from __future__ import annotations

import numpy as np

_BASE = np.array([175.0, 180.0, 192.0])
_MASK = np.array([228.0, 40.0, 40.0])


def _ramp(t: np.ndarray) -> np.ndarray:
    """Blue -> cyan -> yellow -> red for t in [0, 1]."""
    stops = np.array([[40, 60, 200], [40, 200, 220], [240, 220, 40], [220, 30, 30]], dtype=np.float64)
    x = np.clip(t, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[:, None]
    return stops[i] * (1 - f) + stops[i + 1] * f


def view_rotation(azimuth: float = 35.0, elevation: float = 25.0) -> np.ndarray:
    a, e = np.deg2rad(azimuth), np.deg2rad(elevation)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    # look along -y' after rotating; tilt by elevation about x
    rx = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
    return rx @ rz


def render_cloud(points: np.ndarray, mask: np.ndarray | None = None, scores: np.ndarray | None = None,
                 size: tuple[int, int] = (480, 360), *, normals: np.ndarray | None = None, azimuth: float = 35.0,
                 elevation: float = 25.0, point_px: int = 2, background: int = 255) -> np.ndarray:
    """Render ``points`` to an (H, W, 3) uint8 image of ``size = (W, H)``.

    ``mask`` (bool, per point) paints defect points red; ``scores`` (float, per point)
    colour points by a ramp normalised to their min..max.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    W, H = int(size[0]), int(size[1])
    img = np.full((H, W, 3), background, dtype=np.uint8)
    if len(pts) == 0:
        return img
    R = view_rotation(azimuth, elevation)
    q = (pts - pts.mean(axis=0)) @ R.T  # x right, z up, y depth (larger = farther)
    u, v, depth = q[:, 0], q[:, 2], q[:, 1]
    span = max(np.ptp(u) / (0.9 * W), np.ptp(v) / (0.9 * H), 1e-12)
    px = ((u - u.mean()) / span + W / 2).astype(np.int64)
    py = (H / 2 - (v - v.mean()) / span).astype(np.int64)
    if normals is not None:
        n = np.asarray(normals, dtype=np.float64) @ R.T
        light = np.array([-0.35, -0.8, 0.5])
        light /= np.linalg.norm(light)
        shade = 0.35 + 0.65 * np.abs(n @ light)
    else:
        dn = (depth - depth.min()) / max(np.ptp(depth), 1e-12)
        shade = 1.0 - 0.55 * dn
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        colour = _ramp((s - s.min()) / max(np.ptp(s), 1e-12))
        colour = colour * (0.55 + 0.45 * shade[:, None])
    else:
        colour = np.tile(_BASE, (len(pts), 1)) * shade[:, None]
        if mask is not None:
            m = np.asarray(mask, dtype=bool).reshape(-1)
            colour[m] = _MASK * (0.6 + 0.4 * shade[m, None])
    order = np.argsort(-depth, kind="stable")
    if normals is not None:  # back-face culling: drop points facing away from the camera
        order = order[n[order, 1] < 0.15]
    col = np.clip(colour, 0, 255).astype(np.uint8)
    for dy in range(point_px):
        for dx in range(point_px):
            x, y = px[order] + dx, py[order] + dy
            ok = (x >= 0) & (x < W) & (y >= 0) & (y < H)
            img[y[ok], x[ok]] = col[order][ok]
    return img

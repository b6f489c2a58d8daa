"""Gradient (Perlin) noise in numpy, seeded only by the ``Generator`` passed in.

Used for blob masks (DRAEM-style), stains and surface texture of procedural defects.
Noise is computed at the size of the region actually needed, never the whole image,
which is what keeps generation fast at 1130x460.
"""

from __future__ import annotations

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One octave of 2D gradient noise, ``shape`` (h, w), ``res`` lattice cells per axis.
    Values are roughly in [-0.7, 0.7]; float32."""
    h, w = int(shape[0]), int(shape[1])
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    ang = rng.uniform(0.0, 2.0 * np.pi, size=(ry + 1, rx + 1))
    gy, gx = np.sin(ang).astype(np.float32), np.cos(ang).astype(np.float32)
    y = (np.arange(h, dtype=np.float32) + 0.5) * (ry / h)
    x = (np.arange(w, dtype=np.float32) + 0.5) * (rx / w)
    yi = np.minimum(y.astype(np.int32), ry - 1)
    xi = np.minimum(x.astype(np.int32), rx - 1)
    yf = (y - yi)[:, None]
    xf = (x - xi)[None, :]
    Y0, X0 = yi[:, None], xi[None, :]

    def dot(dy: int, dx: int) -> np.ndarray:
        return gy[Y0 + dy, X0 + dx] * (yf - dy) + gx[Y0 + dy, X0 + dx] * (xf - dx)

    u, v = _fade(xf), _fade(yf)
    n0 = dot(0, 0) * (1 - u) + dot(0, 1) * u
    n1 = dot(1, 0) * (1 - u) + dot(1, 1) * u
    return (n0 * (1 - v) + n1 * v).astype(np.float32)


def fractal(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator,
            octaves: int = 3, persistence: float = 0.5) -> np.ndarray:
    """Sum of ``octaves`` Perlin octaves (lattice doubling each octave), normalised to
    roughly unit standard deviation."""
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        out += amp * perlin(shape, (res[0] * 2 ** k, res[1] * 2 ** k), rng)
        total += amp * amp
        amp *= persistence
    s = float(out.std())
    return out / s if s > 1e-8 else out

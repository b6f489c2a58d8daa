"""Which good images receive synthetic defects (``source.hosts``).

``all`` (default): every good image of the source, drawn uniformly per sample.

``similar``: only the good images that look most like the real defect images, the
``source.hosts_top`` fraction nearest to any of them. Real defects tend to appear on one kind
of surface (worn, late in a wear test, one product variant, one lighting); a synthetic defect
on an image unlike any real defect image is recognisable by its host alone. The look of an
image is a weight-free global descriptor (:func:`image_descriptor`): a coarse grey thumbnail
(layout, brightness) and a thumbnail of the fine-scale gradient energy (texture, wear),
each feature standardised over the good and defect images together. The defects themselves
cover a small part of an image and barely move the descriptor.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from defectforge.errors import ConfigError

HOSTS = ("all", "similar")
_THUMB = (32, 32)


def image_descriptor(img: np.ndarray) -> np.ndarray:
    """A float32 vector describing a whole image's look: grey thumbnail (32 x 32, any aspect)
    and the thumbnail of the gradient magnitude at a quarter of the resolution."""
    a = np.asarray(img)
    g = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) if a.ndim == 3 else a
    g = g.astype(np.float32) / 255.0
    H, W = g.shape
    q = cv2.resize(g, (max(1, W // 4), max(1, H // 4)), interpolation=cv2.INTER_AREA)
    gx = cv2.Sobel(q, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(q, cv2.CV_32F, 0, 1, ksize=3)
    energy = np.sqrt(gx * gx + gy * gy)
    thumb = cv2.resize(g, _THUMB, interpolation=cv2.INTER_AREA)
    tex = cv2.resize(energy, _THUMB, interpolation=cv2.INTER_AREA)
    return np.concatenate([thumb.ravel(), tex.ravel()]).astype(np.float32)


def host_distances(goods: np.ndarray, reals: np.ndarray) -> np.ndarray:
    """For each good image's descriptor (rows of ``goods``), the distance to the nearest real
    defect image's descriptor, every feature standardised over both sets."""
    allx = np.concatenate([goods, reals]).astype(np.float64)
    mu, sd = allx.mean(0), allx.std(0)
    sd[sd < 1e-8] = 1.0
    gz, rz = (goods - mu) / sd, (reals - mu) / sd
    d2 = (gz * gz).sum(1)[:, None] + (rz * rz).sum(1)[None, :] - 2.0 * gz @ rz.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def choose_hosts(good_images: Iterable[np.ndarray], real_images: Sequence[np.ndarray], top: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ascending) of the ``top`` fraction of ``good_images`` nearest to any of
    ``real_images`` (at least one; ties broken by index), and every good image's distance.
    ``good_images`` may be a generator: each image is reduced to its descriptor as it comes."""
    if not 0.0 < top <= 1.0:
        raise ConfigError(f"source.hosts_top must be in (0, 1], got {top}")
    if not real_images:
        raise ConfigError("source.hosts: similar needs real defect images in the source split "
                          "(and source.real_defects: true)")
    g = np.stack([image_descriptor(x) for x in good_images])
    r = np.stack([image_descriptor(x) for x in real_images])
    d = host_distances(g, r)
    k = max(1, int(np.ceil(top * len(d) - 1e-9)))
    keep = np.sort(np.argsort(d, kind="stable")[:k])
    return keep, d

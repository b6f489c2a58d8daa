"""Point-cloud geometry: normals (PCA on kNN, oriented outward), voxel downsampling,
scan-like noise and partial views. numpy + scipy only (no open3d).

Outward orientation (:func:`orient_outward`) propagates a consistent orientation over a
minimum spanning tree of the kNN graph (cost ``1 - |n_i . n_j|``), anchored at each
component's extreme point, so concave features (bores, pockets) face out of the
material, unlike the usual "flip towards p - centroid" rule. Walls thinner than the kNN
radius can still confuse it (neighbours from the far face); sample densely enough or
give normals (generated parts carry exact ones).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from defectforge.synth3d.cloud import bbox_diag


def pca_normals(points: np.ndarray, k: int = 16, tree: cKDTree | None = None) -> np.ndarray:
    """Unoriented unit normals: smallest-eigenvalue eigenvector of each point's kNN covariance."""
    pts = np.asarray(points, dtype=np.float64)
    k = int(min(k, len(pts)))
    tree = tree if tree is not None else cKDTree(pts)
    _, idx = tree.query(pts, k=k)
    nb = pts[idx] - pts[idx].mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vecs = np.linalg.eigh(cov)
    return np.ascontiguousarray(vecs[:, :, 0])


def orient_outward(points: np.ndarray, normals: np.ndarray, *, tree: cKDTree | None = None, k: int = 10) -> np.ndarray:
    """Flip ``normals`` so they point out of the surface sampled by ``points``.

    Consistent-tangent-plane propagation: a minimum spanning tree of the kNN graph with
    edge cost ``1 - |n_i . n_j|`` (so orientation travels across flat and gently curved
    regions first), seeded in each connected component at its point of largest x, whose
    normal must point to +x (an extreme point of a closed part faces out). Each node's
    flip is the parity of sign changes along its tree path, computed level by level.

    Unlike the "away from the centroid" rule, this keeps bores and pockets facing out
    of the material. It assumes walls thicker than the kNN radius (else neighbours on
    the far face can join the tree); for open scans pass a viewpoint to
    :func:`estimate_normals` instead.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree

    pts = np.asarray(points, dtype=np.float64)
    n = np.array(normals, dtype=np.float64, copy=True)
    N = len(pts)
    tree = tree if tree is not None else cKDTree(pts)
    k = int(min(k, N - 1))
    _, idx = tree.query(pts, k=k + 1)
    rows = np.repeat(np.arange(N), k)
    cols = idx[:, 1:].reshape(-1)
    dots = np.einsum("ij,ij->i", n[rows], n[cols])
    graph = csr_matrix((1.0 - np.abs(dots) + 1e-6, (rows, cols)), shape=(N, N))
    graph = graph.maximum(graph.T)
    mst = minimum_spanning_tree(graph)
    mst = mst.maximum(mst.T).tocsr()
    ncomp, comp = connected_components(mst, directed=False)
    flip = np.zeros(N, dtype=bool)
    for c in range(ncomp):
        members = np.flatnonzero(comp == c)
        seed = members[np.argmax(pts[members, 0])]
        order, pred = breadth_first_order(mst, seed, directed=False, return_predecessors=True)
        # parity of sign changes from each node up to the seed, by pointer jumping
        anc = np.where(pred >= 0, pred, np.arange(N))
        par = np.zeros(N, dtype=bool)
        o = order[1:]
        par[o] = np.einsum("ij,ij->i", n[o], n[pred[o]]) < 0
        for _ in range(int(np.ceil(np.log2(max(len(members), 2)))) + 1):
            par = par ^ par[anc]
            anc = anc[anc]
        flip[members] = par[members] ^ (n[seed, 0] < 0)
    n[flip] *= -1
    return n


def estimate_normals(points: np.ndarray, k: int = 16, *, orient: str | np.ndarray = "outward",
                     tree: cKDTree | None = None) -> np.ndarray:
    """PCA normals oriented ``"outward"`` (closed parts), ``"centroid"`` (away from the
    centroid), or towards a viewpoint given as an (3,) array (scans)."""
    pts = np.asarray(points, dtype=np.float64)
    tree = tree if tree is not None else cKDTree(pts)
    n = pca_normals(pts, k=k, tree=tree)
    if isinstance(orient, str):
        if orient == "outward":
            return orient_outward(pts, n, tree=tree)
        if orient == "centroid":
            flip = np.einsum("ij,ij->i", pts - pts.mean(axis=0), n) < 0
        else:
            raise ValueError(f"unknown orientation {orient!r} (use 'outward', 'centroid' or a viewpoint)")
    else:
        view = np.asarray(orient, dtype=np.float64).reshape(3)
        flip = np.einsum("ij,ij->i", view - pts, n) < 0
    n[flip] *= -1
    return n


def voxel_downsample(points: np.ndarray, voxel: float, *extra: np.ndarray) -> tuple[np.ndarray, ...]:
    """Keep one point per occupied voxel: the input point nearest the voxel's centroid.

    Returns ``(points, index)`` plus each array of ``extra`` subset by the same index, so
    normals and labels stay aligned (labels are never averaged).
    """
    pts = np.asarray(points, dtype=np.float64)
    if voxel <= 0:
        raise ValueError("voxel size must be positive")
    key = np.floor((pts - pts.min(axis=0)) / voxel).astype(np.int64)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    cent = np.zeros((len(counts), 3))
    np.add.at(cent, inv, pts)
    cent /= counts[:, None]
    dist = np.linalg.norm(pts - cent[inv], axis=1)
    order = np.lexsort((dist, inv))
    first = np.ones(len(order), dtype=bool)
    first[1:] = inv[order][1:] != inv[order][:-1]
    index = np.sort(order[first])
    return (pts[index], index) + tuple(np.asarray(e)[index] for e in extra)


def scan_noise(points: np.ndarray, rng: np.random.Generator, sigma_ratio: float = 0.001,
               normals: np.ndarray | None = None) -> np.ndarray:
    """Gaussian scanner noise of std ``sigma_ratio * diag`` (along the normals when given)."""
    pts = np.asarray(points, dtype=np.float64)
    sigma = sigma_ratio * bbox_diag(pts)
    if normals is not None:
        return pts + normals * rng.normal(0.0, sigma, size=(len(pts), 1))
    return pts + rng.normal(0.0, sigma, size=pts.shape)


def partial_view(points: np.ndarray, normals: np.ndarray, view_dir: np.ndarray, *, cos_min: float = 0.05,
                 occlusion: bool = True, resolution: int = 128) -> np.ndarray:
    """Indices of points a scanner looking along ``-view_dir`` would see.

    Back faces (``n . view_dir <= cos_min``) are dropped; with ``occlusion`` a z-buffer
    on a ``resolution``-square orthographic grid keeps only points within one cell of
    the front-most surface in their cell.
    """
    pts = np.asarray(points, dtype=np.float64)
    d = np.asarray(view_dir, dtype=np.float64)
    d = d / np.linalg.norm(d)
    keep = np.einsum("ij,j->i", normals, d) > cos_min
    if occlusion and keep.any():
        a = np.cross(d, [1.0, 0, 0] if abs(d[0]) < 0.9 else [0, 1.0, 0])
        a /= np.linalg.norm(a)
        b = np.cross(d, a)
        uv = np.stack([pts @ a, pts @ b], axis=1)
        depth = pts @ d  # larger = nearer the scanner
        cell = (uv.max(axis=0) - uv.min(axis=0)).max() / resolution
        ij = np.floor((uv - uv.min(axis=0)) / cell).astype(np.int64)
        flat = ij[:, 0] * (resolution + 2) + ij[:, 1]
        front = np.full(flat.max() + 1, -np.inf)
        np.maximum.at(front, flat[keep], depth[keep])
        keep &= depth >= front[flat] - 1.5 * cell
    return np.flatnonzero(keep)

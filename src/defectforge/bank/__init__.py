"""Shared memory-bank machinery used by every detector family (2D, 3D) and the filters.

- :mod:`~defectforge.bank.coreset`: exact greedy k-center (farthest-first) coresets;
- :mod:`~defectforge.bank.knn`: exact batched nearest-neighbour search (faiss or torch, CPU or CUDA);
- :mod:`~defectforge.bank.backbone`: frozen CNN backbones with local weights only;
- :mod:`~defectforge.bank.features`: locally aware patch rows, projections, mask-to-grid;
- :mod:`~defectforge.progress`: optional progress bars for long loops.

Submodules load their heavy dependencies (torch, faiss, numba) only when used.
"""

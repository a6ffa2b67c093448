"""Approximate nearest-neighbour search (faiss IVF) for collections where exact search is too slow.

Exact search costs one pass over every stored vector per query batch; an inverted-file index
clusters the vectors (k-means, `nlist` cells) and scans only the `nprobe` cells nearest each
query. Its recall depends on the data, so every user of it measures recall against exact search
(docs/benchmarks.md). faiss-cpu is a well-kept PyPI wheel; this module is its only importer.
"""

from __future__ import annotations

import numpy as np

from tagmatch.store import Store, vector_scale


class IVFSearch:
    """`search(queries, k) -> (idx, sim)` over a store's vectors, like `Store.search`, with the
    store's `vec_track` / `vec_time` alongside so it can stand in for the store in a search."""

    def __init__(self, store: Store, nlist: int | None = None, nprobe: int = 12, seed: int = 0):
        import faiss

        n = len(store.vectors)
        scale = vector_scale(store.dim) if store.vectors.dtype == np.int8 else 1.0
        self.vec_track, self.vec_time = store.vec_track, store.vec_time
        # ~1.5 sqrt(n) cells balances the k-means, the assignment of every vector and the scan of
        # the probed cells (4 sqrt(n) made the k-means alone take 20 min at 8M vectors here).
        self.nlist = nlist or max(16, min(16384, int(1.5 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(store.dim)
        self.index = faiss.IndexIVFFlat(quantizer, store.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train_rows = np.sort(rng.choice(n, size=min(n, 40 * self.nlist), replace=False))
        self.index.train(self._f32(store.vectors[train_rows], scale))
        for lo in range(0, n, 262144):
            self.index.add(self._f32(store.vectors[lo : lo + 262144], scale))
        self.index.nprobe = nprobe

    @staticmethod
    def _f32(v: np.ndarray, scale: float) -> np.ndarray:
        return np.ascontiguousarray(v, dtype=np.float32) / np.float32(scale)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sim, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        missing = idx < 0  # fewer than k vectors in the probed cells
        idx[missing], sim[missing] = 0, -np.inf
        return idx.astype(np.int64), sim

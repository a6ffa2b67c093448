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


# ---- a persistent approximate index for the matcher -----------------------------------------

ANN_INDEX = "ann-ivfpq.faiss"  # next to the store's shards (Store.save leaves other files alone)
ANN_META = "ann-ivfpq.json"
# Up to this many stored vectors the matcher searches exactly (Store.search) even when an index
# exists. Exact costs ~0.3 us per stored vector per 10 s fragment here (docs/benchmarks.md,
# "Scale": 2.8 s at 10M vectors, 27.5 s at 100M, on 2 cores), so ~70-150 ms at 250k vectors
# (~17 h, ~250 tracks), small next to decoding and embedding a query file; below it an index
# would also be trained on few vectors per cell, and exact search needs nothing built or kept
# fresh. Above it the approximate index takes 5-10 ms per fragment (measured at 1k-100k tracks).
EXACT_MAX_VECTORS = 250_000


def store_signature(store: Store) -> list:
    """What an index was built from: the store's shard files and sizes (shards never change,
    so the same list means the same vectors in the same order)."""
    return [[s.file, len(s.time)] for s in store.shards]


def gather_vectors(store: Store, ids: np.ndarray) -> np.ndarray:
    """Stored vectors by global number, as float32 unit vectors [shape=ids.shape + (dim,)],
    read shard by shard (the shards may be memory maps: only the rows asked for are paged in)."""
    flat = np.asarray(ids, np.int64).ravel()
    starts = store.shard_starts()
    which = np.searchsorted(starts, flat, side="right") - 1
    out = np.empty((len(flat), store.dim), np.float32)
    for sh in np.unique(which):
        sel = np.flatnonzero(which == sh)
        rows = flat[sel] - starts[sh]
        order = np.argsort(rows, kind="stable")  # sorted reads from a memory map
        out[sel[order]] = store.shards[sh].vectors[rows[order]]
    dtype = store.shards[0].vectors.dtype if store.shards else np.int8
    if dtype == np.int8:
        out /= np.float32(vector_scale(store.dim))
    return out.reshape(*np.shape(ids), store.dim)


class IVFPQSearch:
    """Approximate top-k for big stores: faiss IVF (an HNSW graph over the cell centroids, so
    assigning a vector to its cell is cheap) with PQ-compressed residuals, then an exact re-rank
    of the best `refine * k` candidates from the store's own int8 vectors.

    `search(queries, k) -> (idx, sim)` like `Store.search` (sim: exact inner products of the
    int8 vectors, so votes weigh the same as with exact search). Saved next to the store with
    the store's signature; `load` refuses (returns None for) an index of other shards.
    """

    def __init__(self, store: Store, index, key: str, nprobe: int = 32, refine: int = 4):
        import faiss

        self.store, self.index, self.key, self.refine = store, index, key, refine
        self._ivf = faiss.extract_index_ivf(index)
        self.nprobe = nprobe
        self.build_stats: dict = {}

    @property
    def nprobe(self) -> int:
        return self._ivf.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._ivf.nprobe = int(value)
        q = getattr(self._ivf, "quantizer", None)
        import faiss

        hnsw = faiss.downcast_index(q) if q is not None else None
        if hasattr(hnsw, "hnsw"):  # the coarse search must find at least nprobe good cells
            hnsw.hnsw.efSearch = max(64, 2 * int(value))

    @property
    def vec_track(self) -> np.ndarray:
        return self.store.vec_track

    @property
    def vec_time(self) -> np.ndarray:
        return self.store.vec_time

    @staticmethod
    def default_key(n: int, dim: int, nlist: int | None = None, pq: int | None = None) -> str:
        # ~2 sqrt(n) cells, a power of two, at most 32768: the k-means over them stays minutes
        # on 2 cores (its cost grows with cells x training points); the HNSW coarse quantizer
        # makes assigning 100M vectors cheap.
        nlist = nlist or int(min(32768, max(256, 2 ** round(np.log2(2 * np.sqrt(max(n, 1)))))))
        # PQ with 4-bit codes scanned by SIMD ("fast scan"): 2 dimensions a code, dim / 4 bytes a
        # vector. Measured here, 8-bit PQ took ~1.5 s per sub-quantizer to train and scanned
        # slower; the exact re-rank makes up for the coarser codes (docs/benchmarks.md, Scale).
        pq = pq or dim // 2
        coarse = f"IVF{nlist}_HNSW32" if nlist >= 4096 else f"IVF{nlist}"
        return f"{coarse},PQ{pq}x4fs"

    @classmethod
    def build(cls, store: Store, nlist: int | None = None, pq: int | None = None, train_points: int = 40,
              nprobe: int = 32, refine: int = 8, seed: int = 0, log=None, key: str | None = None) -> "IVFPQSearch":
        import time

        import faiss

        n = int(store.shard_starts()[-1])
        key = key or cls.default_key(n, store.dim, nlist, pq)
        index = faiss.index_factory(store.dim, key, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        rng = np.random.default_rng(seed)
        n_train = min(n, max(train_points * ivf.nlist, 65536))
        t0 = time.perf_counter()
        x = gather_vectors(store, np.sort(rng.choice(n, size=n_train, replace=False)))
        index.train(x)
        train_s = time.perf_counter() - t0
        if log:
            log(f"{key}: trained on {n_train:,} vectors in {train_s:.0f} s")
        t0, done = time.perf_counter(), 0
        for s in store.shards:
            for lo in range(0, len(s.time), 1 << 20):
                v = np.ascontiguousarray(s.vectors[lo : lo + (1 << 20)], dtype=np.float32)
                if s.vectors.dtype == np.int8:
                    v /= np.float32(vector_scale(store.dim))
                index.add(v)
                done += len(v)
            if log:
                log(f"{key}: added {done:,}/{n:,} ({time.perf_counter() - t0:.0f} s)")
        self = cls(store, index, key, nprobe=nprobe, refine=refine)
        self.build_stats = {"train_vectors": n_train, "train_s": round(train_s, 1),
                            "add_s": round(time.perf_counter() - t0, 1)}
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        kc = max(k, k * self.refine)
        sim, idx = self.index.search(q, kc)
        if not self.refine:
            missing = idx < 0
            idx[missing], sim[missing] = 0, -np.inf
            return idx.astype(np.int64), sim
        missing = idx < 0
        idx[missing] = 0
        cand = gather_vectors(self.store, idx)  # [q, kc, dim]
        exact = np.einsum("qcd,qd->qc", cand, q)
        exact[missing] = -np.inf
        part = np.argpartition(-exact, k - 1, axis=1)[:, :k] if kc > k else np.tile(np.arange(kc), (len(q), 1))
        psim = np.take_along_axis(exact, part, 1)
        order = np.argsort(-psim, axis=1)
        part = np.take_along_axis(part, order, 1)
        return np.take_along_axis(idx, part, 1).astype(np.int64), np.take_along_axis(exact, part, 1)

    # ---- next to the store -----------------------------------------------------------------
    def save(self, folder=None) -> None:
        """Write the index and its metadata into the store's folder (after the store is saved:
        the signature names its shard files)."""
        import json
        from pathlib import Path

        import faiss

        from tagmatch.fsutil import atomic_path, atomic_write_text

        folder = Path(folder or self.store.folder)
        with atomic_path(folder / ANN_INDEX) as tmp:
            faiss.write_index(self.index, str(tmp))
        meta = {"key": self.key, "nprobe": self.nprobe, "refine": self.refine,
                "store": store_signature(self.store), "model_id": self.store.model_id}
        atomic_write_text(folder / ANN_META, json.dumps(meta))

    def file_bytes(self) -> int:
        from pathlib import Path

        return (Path(self.store.folder) / ANN_INDEX).stat().st_size

    @classmethod
    def load(cls, store: Store, folder=None, mmap: bool = True) -> "IVFPQSearch | None":
        """The index saved next to `store`, or None when there is none or it was built from other
        shards (the store changed since: search exactly, or build it again)."""
        import json
        from pathlib import Path

        import faiss

        folder = Path(folder or store.folder)
        try:
            meta = json.loads((folder / ANN_META).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("store") != store_signature(store) or meta.get("model_id") != store.model_id:
            return None
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(folder / ANN_INDEX), flags)
        return cls(store, index, meta["key"], nprobe=meta["nprobe"], refine=meta["refine"])


def searcher_for(store: Store):
    """What the matcher should search: the store itself (exact) when it is small or has no
    current index, else its saved approximate index."""
    n = int(store.shard_starts()[-1])
    if n <= EXACT_MAX_VECTORS or store.folder is None:
        return store
    return IVFPQSearch.load(store) or store

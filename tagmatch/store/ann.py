"""Approximate nearest-neighbour search (faiss IVF) for collections where exact search is too slow.

Exact search costs one pass over every stored vector per query batch; an inverted-file index
clusters the vectors (k-means, `nlist` cells) and scans only the `nprobe` cells nearest each
query. Its recall depends on the data, so every user of it measures recall against exact search
(docs/benchmarks.md). faiss-cpu is a well-kept PyPI wheel; this module is its only importer.
"""

from __future__ import annotations

import json

import numpy as np

from tagmatch.progress import Progress
from tagmatch.store.shards import Store, dequantize

STAGE = "approximate index"  # what its Progress events report


class IVFSearch:
    """`search(queries, k) -> (idx, sim)` over a store's vectors, like `Store.search`, with the
    store's `vec_track` / `vec_time` alongside so it can stand in for the store in a search."""

    def __init__(self, store: Store, nlist: int | None = None, nprobe: int = 12, seed: int = 0):
        import faiss

        n = len(store.vectors)
        self.vec_track, self.vec_time = store.vec_track, store.vec_time
        # ~1.5 sqrt(n) cells balances the k-means, the assignment of every vector and the scan of
        # the probed cells (4 sqrt(n) made the k-means alone take 20 min at 8M vectors here).
        self.nlist = nlist or max(16, min(16384, int(1.5 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(store.dim)
        self.index = faiss.IndexIVFFlat(quantizer, store.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train_rows = np.sort(rng.choice(n, size=min(n, 40 * self.nlist), replace=False))
        self.index.train(dequantize(store.vectors[train_rows], store.dim))
        for lo in range(0, n, 262144):
            self.index.add(dequantize(store.vectors[lo : lo + 262144], store.dim))
        self.index.nprobe = nprobe

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sim, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        missing = idx < 0  # fewer than k vectors in the probed cells
        idx[missing], sim[missing] = 0, -np.inf
        return idx.astype(np.int64), sim


# ---- a persistent approximate index for the matcher -----------------------------------------

# Saved in the store's folder (Store.save leaves other files alone): the index in a file of its
# own name, then the JSON naming it and the shards it covers, written last: the commit point,
# as the store's manifest is. A crash in between leaves the previous index in force.
ANN_META = "ann-ivfpq.json"
ANN_PREFIX = "ann-ivfpq"  # index files: ann-ivfpq-<token>.faiss
# Up to this many stored vectors `tagmatch index` keeps no index (search="auto") and the matcher
# searches exactly: ~0.2 us per stored vector per 10 s fragment (50 query windows) on one thread,
# so ~10 ms a fragment at 50k vectors (~3.5 h, ~50 tracks), and an index would be trained on few
# vectors per cell. Above it the approximate index costs less: at 107k vectors (the bench's 7.4 h) a
# 10-20 s query took 70 ms of CPU against 84 ms exact, with the same answers at the threshold
# (docs/benchmarks.md); 5-25 ms per fragment at 1k-100k tracks.
EXACT_MAX_VECTORS = 50_000
MIN_INDEX_VECTORS = 1_000  # fewer cannot train the coarse cells and the PQ codebooks
GROW_LIMIT = 4  # an index trained for n vectors is rebuilt (new cells) once the store passes 4n
SLOT_BITS = 32  # ids in the index: shard slot << 32 | row in the shard (shards are immutable)
ADD_BATCH = 1 << 20


def default_probe(n: int) -> tuple[int, int]:
    """(nprobe, refine) for an index of n vectors. Measured (docs/benchmarks.md, "Scale"): 32 : 8
    agreed with exact search on the recording for 298/300 files at 1M vectors and 60/60 at 10M;
    at 100M, where the cells are 8x fuller, 64 : 16 kept the match/unknown decision of exact
    search on 95% of 200 files against 90.5% (same 198/200 recordings), at 30 ms a fragment.
    Small stores (up to 250k vectors, where a search is cheap either way) probe 64 : 16 too: at
    107k, 32 : 8 lost 3 of 107 hardest (0 dB + reverb) queries at the threshold, 64 : 16 none."""
    return (64, 16) if n > 30_000_000 or n <= 250_000 else (32, 8)


def _slot_ids(slot: int, lo: int, n: int) -> np.ndarray:
    return (np.int64(slot) << SLOT_BITS) + np.arange(lo, lo + n, dtype=np.int64)


def _add_shard(index, shard, slot: int, dim: int, should_stop=None, on_added=None) -> bool:
    """Add a shard's vectors to `index` under its slot's ids, in batches; False when stopped."""
    for lo in range(0, len(shard.time), ADD_BATCH):
        if should_stop and should_stop():
            return False
        v = dequantize(shard.vectors[lo : lo + ADD_BATCH], dim)
        index.add_with_ids(v, _slot_ids(slot, lo, len(v)))
        if on_added:
            on_added(len(v))
    return True


def gather_vectors(store: Store, ids: np.ndarray) -> np.ndarray:
    """Stored vectors by global number, as float32 unit vectors [shape=ids.shape + (dim,)],
    read shard by shard (the shards may be memory maps: only the rows asked for are paged in)."""
    flat = np.asarray(ids, np.int64).ravel()
    out = np.empty((len(flat), store.dim), np.float32)
    for sh, sel, rows in store.rows_by_shard(flat):
        out[sel] = dequantize(store.shards[sh].vectors[rows], store.dim)
    return out.reshape(*np.shape(ids), store.dim)


class IVFPQSearch:
    """Approximate top-k for big stores: faiss IVF (an HNSW graph over the cell centroids, so
    assigning a vector to its cell is cheap) with PQ-compressed residuals, then an exact re-rank
    of the best `refine * k` candidates from the store's own int8 vectors.

    `search(queries, k) -> (idx, sim)` like `Store.search` (sim: exact inner products of the
    int8 vectors, so votes weigh the same as with exact search). Each vector's id in the index
    names its shard file (`slots`) and row, so a changed store changes the index only where its
    shards changed (`update_index`). `slots` None: ids are global numbers (an index built by an
    earlier version, valid only for the very same shards).
    """

    def __init__(self, store: Store, index, key: str, nprobe: int = 32, refine: int = 4,
                 slots: dict[str, int] | None = None, trained_for: int = 0):
        import faiss

        self.store, self.index, self.key, self.refine = store, index, key, refine
        self.slots, self.trained_for = slots, trained_for
        self._ivf = faiss.extract_index_ivf(index)
        self.nprobe = nprobe
        self.build_stats: dict = {}
        self._slot_start = None
        if slots is not None:  # slot -> the store's global number of that shard's first vector
            starts = dict(zip((s.file for s in store.shards), store.shard_starts()))
            self._slot_start = np.zeros(max(slots.values(), default=-1) + 1, np.int64)
            for f, slot in slots.items():
                self._slot_start[slot] = starts[f]

    @property
    def nprobe(self) -> int:
        return self._ivf.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        import faiss

        self._ivf.nprobe = int(value)
        q = getattr(self._ivf, "quantizer", None)
        hnsw = faiss.downcast_index(q) if q is not None else None
        if hasattr(hnsw, "hnsw"):  # the coarse search must find at least nprobe good cells
            hnsw.hnsw.efSearch = max(64, 2 * int(value))

    @staticmethod
    def default_key(n: int, dim: int, nlist: int | None = None, pq: int | None = None) -> str:
        # ~2 sqrt(n) cells, a power of two, at most 32768: the k-means over them stays minutes
        # on 2 cores (its cost grows with cells x training points); the HNSW coarse quantizer
        # makes assigning 100M vectors cheap. At least ~40 training vectors a cell.
        nlist = nlist or int(min(32768, 2 ** round(np.log2(2 * np.sqrt(max(n, 1))))))
        nlist = max(4, min(nlist, 2 ** int(np.log2(max(n // 40, 4)))))
        # PQ with 4-bit codes scanned by SIMD ("fast scan"): 2 dimensions a code, dim / 4 bytes a
        # vector. Measured here, 8-bit PQ took ~1.5 s per sub-quantizer to train and scanned
        # slower; the exact re-rank makes up for the coarser codes (docs/benchmarks.md, Scale).
        pq = pq or dim // 2
        coarse = f"IVF{nlist}_HNSW32" if nlist >= 4096 else f"IVF{nlist}"
        return f"{coarse},PQ{pq}x4fs"

    @classmethod
    def build(cls, store: Store, nlist: int | None = None, pq: int | None = None, train_points: int = 40,
              nprobe: int | None = None, refine: int | None = None, seed: int = 0, log=None,
              key: str | None = None, on_progress=None, should_stop=None) -> "IVFPQSearch | None":
        """Train and fill an index over a saved store (every shard has its file). Returns None
        when `should_stop()` turned true between batches. `on_progress`: Progress events, counting vectors.
        nprobe / refine default to `default_probe(n)`."""
        import time

        import faiss

        if any(s.file is None for s in store.shards):
            raise ValueError("save the store before building its index (the index names its shard files)")
        n = store.n_vectors
        key = key or cls.default_key(n, store.dim, nlist, pq)
        probe = default_probe(n)
        nprobe, refine = nprobe or probe[0], refine or probe[1]
        index = faiss.index_factory(store.dim, key, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        rng = np.random.default_rng(seed)
        n_train = min(n, max(train_points * ivf.nlist, 65536))
        if on_progress:
            on_progress(Progress(STAGE, 0, n, unit="vectors"))  # training the cells comes first (minutes on a big store)
        t0 = time.perf_counter()
        x = gather_vectors(store, np.sort(rng.choice(n, size=n_train, replace=False)))
        index.train(x)
        train_s = time.perf_counter() - t0
        if log:
            log(f"{key}: trained on {n_train:,} vectors in {train_s:.0f} s")
        t0, done = time.perf_counter(), 0

        def added(count: int) -> None:
            nonlocal done
            done += count
            if on_progress:
                on_progress(Progress(STAGE, done, n, unit="vectors"))

        slots = {}
        for slot, s in enumerate(store.shards):
            slots[s.file] = slot
            if not _add_shard(index, s, slot, store.dim, should_stop, added):
                return None
            if log:
                log(f"{key}: added {done:,}/{n:,} ({time.perf_counter() - t0:.0f} s)")
        self = cls(store, index, key, nprobe=nprobe, refine=refine, slots=slots, trained_for=n)
        self.build_stats = {"train_vectors": n_train, "train_s": round(train_s, 1),
                            "add_s": round(time.perf_counter() - t0, 1)}
        return self

    def _global(self, ids: np.ndarray, missing: np.ndarray) -> np.ndarray:
        if self._slot_start is None:
            out = ids.astype(np.int64)
        else:
            out = self._slot_start[np.where(missing, 0, ids >> SLOT_BITS)] + (ids & ((1 << SLOT_BITS) - 1))
        out[missing] = 0
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        kc = max(k, k * self.refine)
        sim, ids = self.index.search(q, kc)
        missing = ids < 0  # fewer than kc vectors in the probed cells
        idx = self._global(ids, missing)
        if not self.refine:
            sim[missing] = -np.inf
            return idx, sim
        cand = gather_vectors(self.store, idx)  # [q, kc, dim]
        exact = np.einsum("qcd,qd->qc", cand, q)
        exact[missing] = -np.inf
        part = np.argpartition(-exact, k - 1, axis=1)[:, :k] if kc > k else np.tile(np.arange(kc), (len(q), 1))
        psim = np.take_along_axis(exact, part, 1)
        order = np.argsort(-psim, axis=1)
        part = np.take_along_axis(part, order, 1)
        return np.take_along_axis(idx, part, 1), np.take_along_axis(exact, part, 1)

    # ---- next to the store -----------------------------------------------------------------
    def save(self, folder=None) -> None:
        """Write the index, then the JSON naming it (the commit point), then delete the index
        files it no longer names."""
        import secrets
        from pathlib import Path

        import faiss

        from tagmatch.fsutil import atomic_path, atomic_write_text, fsync_dir

        folder = Path(folder or self.store.folder)
        name = f"{ANN_PREFIX}-{secrets.token_hex(6)}.faiss"
        with atomic_path(folder / name) as tmp:
            faiss.write_index(self.index, str(tmp))
        counts = {s.file: len(s.time) for s in self.store.shards}
        meta = {"file": name, "key": self.key, "nprobe": self.nprobe, "refine": self.refine,
                "model_id": self.store.model_id, "trained_for": self.trained_for,
                "slots": {f: [slot, counts[f]] for f, slot in (self.slots or {}).items()}}
        atomic_write_text(folder / ANN_META, json.dumps(meta))
        _remove_index_files(folder, keep=name)
        fsync_dir(folder)
        self.file = name

    def file_bytes(self) -> int:
        from pathlib import Path

        return (Path(self.store.folder) / self.file).stat().st_size

    @classmethod
    def load(cls, store: Store, folder=None, mmap: bool = True) -> "IVFPQSearch | None":
        """The index saved next to `store`, or None when there is none or it covers other
        shards (the store changed since: search exactly, or `update_index`)."""
        import faiss

        meta, folder = _read_meta(folder or store.folder)
        if not _covers(meta, store):
            return None
        slots = {f: slot for f, (slot, _) in meta["slots"].items()} if "slots" in meta else None
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(folder / _index_file(meta)), flags)
        except RuntimeError:  # missing or damaged: as if there were none
            return None
        self = cls(store, index, meta["key"], nprobe=meta["nprobe"], refine=meta["refine"], slots=slots,
                   trained_for=meta.get("trained_for", 0))
        self.file = _index_file(meta)
        return self


def _read_meta(folder):
    from pathlib import Path

    folder = Path(folder)
    try:
        return json.loads((folder / ANN_META).read_text()), folder
    except (OSError, ValueError):
        return None, folder


def _index_file(meta: dict) -> str:
    return meta.get("file", f"{ANN_PREFIX}.faiss")  # without "file": an index of global ids


def _covers(meta: dict | None, store: Store) -> bool:
    """Whether an index's JSON says it holds exactly the store's vectors."""
    if meta is None or meta.get("model_id") != store.model_id:
        return False
    if "slots" in meta:
        return {f: n for f, (_, n) in meta["slots"].items()} == {s.file: len(s.time) for s in store.shards}
    return meta.get("store") == [[s.file, len(s.time)] for s in store.shards]  # global ids: same order


def _remove_index_files(folder, keep: str | None = None) -> None:
    for p in folder.iterdir():
        if p.name.startswith(ANN_PREFIX) and p.suffix == ".faiss" and p.name != keep:
            p.unlink()


def searcher_for(store: Store):
    """What the matcher should search: the store's saved approximate index when it has a
    current one (`tagmatch index` keeps one for big stores), else the store itself (exact)."""
    if store.folder is None:
        return store
    return IVFPQSearch.load(store) or store


def describe_search(store: Store, searcher=None) -> str:
    """How a scan searches `store` (with `searcher`, when it is known), in one line, read from
    the index's JSON without loading the index (`tagmatch info`, Home; a scan of a big store
    without a current index warns with it)."""
    meta, folder = _read_meta(store.folder) if store.folder is not None else (None, None)
    if isinstance(searcher, IVFPQSearch):
        meta = {"key": searcher.key, "nprobe": searcher.nprobe, "refine": searcher.refine}
    if isinstance(searcher, IVFPQSearch) or (
            searcher is None and _covers(meta, store) and (folder / _index_file(meta)).is_file()):
        return f"approximate ({meta['key']}, nprobe {meta['nprobe']}, re-rank {meta['refine']}x)"
    if meta is not None:
        return "exact: the approximate index is out of date (`tagmatch index` brings it up to date)"
    if store.n_vectors > EXACT_MAX_VECTORS:
        return "exact: no approximate index, slower at this size (`tagmatch index` builds one)"
    return "exact"


def update_index(store: Store, search: str = "auto", *, on_progress=None, should_stop=None) -> str:
    """Keep the approximate index next to a saved store in step with it; says what it did, in
    one line. `search`: "auto" keeps an index once the store passes EXACT_MAX_VECTORS (or when
    one is there already), "approximate" always (from MIN_INDEX_VECTORS), "exact" removes it.

    Shards are immutable, so a changed store changes the index only where its shards changed:
    the vectors of shards gone are removed, those of new shards added. The cells are trained
    again only when the store has grown GROW_LIMIT times past what they were trained for."""
    import time

    import faiss

    if search not in ("auto", "approximate", "exact"):
        raise ValueError(f"search must be auto, approximate or exact, not {search!r}")
    n = store.n_vectors
    meta, folder = _read_meta(store.folder)
    want = search == "approximate" or (search == "auto" and (n > EXACT_MAX_VECTORS or meta is not None))
    if not want or n < MIN_INDEX_VECTORS:
        if meta is not None:
            (folder / ANN_META).unlink()
        _remove_index_files(folder)
        why = "" if not want else f" (an approximate index needs at least {MIN_INDEX_VECTORS:,} vectors)"
        return f"search: exact, {n:,} vectors{why}"
    t0 = time.perf_counter()
    current = {s.file: len(s.time) for s in store.shards}
    old = meta.get("slots") if meta else None
    if old and meta.get("model_id") == store.model_id and n <= GROW_LIMIT * meta.get("trained_for", 0):
        slots = {f: slot for f, (slot, _) in old.items() if f in current}
        gone = [slot for f, (slot, _) in old.items() if f not in current]
        new = [s for s in store.shards if s.file not in old]
        if not gone and not new and (folder / meta["file"]).exists():
            return f"search: approximate ({meta['key']}), index current, {n:,} vectors"
        try:
            index = faiss.read_index(str(folder / meta["file"]))  # in memory, to change it
        except RuntimeError:
            index = None
        if index is not None:
            removed = sum(index.remove_ids(faiss.IDSelectorRange(slot << SLOT_BITS, (slot + 1) << SLOT_BITS))
                          for slot in gone)
            nxt = max((slot for slot, _ in old.values()), default=-1) + 1
            added, total = 0, sum(len(s.time) for s in new)

            def count(n_added: int) -> None:
                nonlocal added
                added += n_added
                if on_progress:
                    on_progress(Progress(STAGE, added, total, unit="vectors"))

            for s in new:
                slots[s.file], nxt = nxt, nxt + 1
                _add_shard(index, s, slots[s.file], store.dim, on_added=count)
            ann = IVFPQSearch(store, index, meta["key"], nprobe=meta["nprobe"], refine=meta["refine"],
                              slots=slots, trained_for=meta["trained_for"])
            ann.save(folder)
            return (f"search: approximate ({meta['key']}), index updated: +{added:,} -{removed:,} vectors "
                    f"in {time.perf_counter() - t0:.0f} s, {n:,} vectors")
    ann = IVFPQSearch.build(store, on_progress=on_progress, should_stop=should_stop)
    if ann is None:
        if _covers(meta, store):  # still right for this store (an older kind of index): kept
            return f"search: approximate ({meta['key']}), kept (building a new index was stopped)"
        if meta is not None:  # the old index no longer fits the store: exact until the next run
            (folder / ANN_META).unlink()
        _remove_index_files(folder)
        return "search: exact for now (building the approximate index was stopped; `tagmatch index` builds it)"
    ann.save(folder)
    return f"search: approximate ({ann.key}), index built in {time.perf_counter() - t0:.0f} s, {n:,} vectors"


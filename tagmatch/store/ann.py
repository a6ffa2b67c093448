"""Approximate nearest-neighbour search (faiss IVF) for collections where exact search is too slow.

Exact search costs one pass over every stored vector per query batch; an inverted-file index
clusters the vectors (k-means, `nlist` cells) and scans only the `nprobe` cells nearest each
query. Its recall depends on the data, so every user of it measures recall against exact search
(docs/benchmarks.md). faiss-cpu is a well-kept PyPI wheel; this module is its only importer.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

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

# Saved in the store's folder (Store.save leaves other files alone), one file per store shard:
#   ann-ivfpq.json                   the commit point, as the store's manifest is: names the files
#                                    below, the shards they cover, the index key and its probing
#   ann-ivfpq-trained-<token>.faiss  the trained, empty index: coarse cells and PQ codebooks
#   ann-ivfpq-part-<token>.faiss     one shard's vectors in those cells (ids: rows of the shard),
#                                    written without the cells (a placeholder quantizer)
# Shards never change, so a new shard costs one new part and a shard that lost a track one
# replaced part; nothing else is written. Opening merges the template and the parts of the shards
# asked for (faiss `merge_from`, a copy of the lists) with each shard's first vector number
# added to its ids: a whole store, or one search group of its shards (tagmatch.store.cluster).
ANN_META = "ann-ivfpq.json"
ANN_PREFIX = "ann-ivfpq"
META_VERSION = 2  # 1: one index file over all shards (before 2026-12-05): replaced at the next index
# Up to this many stored vectors `tagmatch index` keeps no index (search="auto") and the matcher
# searches exactly: ~0.2 us per stored vector per 10 s fragment (50 query windows) on one thread,
# so ~10 ms a fragment at 50k vectors (~3.5 h, ~50 tracks), and an index would be trained on few
# vectors per cell. Above it the approximate index costs less: at 107k vectors (the bench's 7.4 h) a
# 10-20 s query took 70 ms of CPU against 84 ms exact, with the same answers at the threshold
# (docs/benchmarks.md); 5-25 ms per fragment at 1k-100k tracks.
EXACT_MAX_VECTORS = 50_000
MIN_INDEX_VECTORS = 1_000  # fewer cannot train the coarse cells and the PQ codebooks
GROW_LIMIT = 4  # an index trained for n vectors is rebuilt (new cells) once the store passes 4n
ADD_BATCH = 1 << 20


def default_probe(n: int) -> tuple[int, int]:
    """(nprobe, refine) for an index of n vectors. Measured (docs/benchmarks.md, "Scale"): 32 : 8
    agreed with exact search on the recording for 298/300 files at 1M vectors and 60/60 at 10M;
    at 100M, where the cells are 8x fuller, 64 : 16 kept the match/unknown decision of exact
    search on 95% of 200 files against 90.5% (same 198/200 recordings), at 30 ms a fragment.
    Small stores (up to 250k vectors, where a search is cheap either way) probe 64 : 16 too: at
    107k, 32 : 8 lost 3 of 107 hardest (0 dB + reverb) queries at the threshold, 64 : 16 none."""
    return (64, 16) if n > 30_000_000 or n <= 250_000 else (32, 8)


def gather_vectors(store: Store, ids: np.ndarray) -> np.ndarray:
    """Stored vectors by global number, as float32 unit vectors [shape=ids.shape + (dim,)],
    read shard by shard (the shards may be memory maps: only the rows asked for are paged in)."""
    flat = np.asarray(ids, np.int64).ravel()
    out = np.empty((len(flat), store.dim), np.float32)
    for sh, sel, rows in store.rows_by_shard(flat):
        out[sel] = dequantize(store.shards[sh].vectors[rows], store.dim)
    return out.reshape(*np.shape(ids), store.dim)


def best_k(idx: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best (idx, sim) by sim, best first; equal sims: the lower vector number first
    (so the order does not depend on where the candidates came from)."""
    order = np.lexsort((idx, -sim), axis=1)[:, :k]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(sim, order, 1)


class IVFPQSearch:
    """Approximate top-k for big stores: faiss IVF (an HNSW graph over the cell centroids, so
    assigning a vector to its cell is cheap) with PQ-compressed residuals, then an exact re-rank
    of the best `refine * k` candidates from the store's own int8 vectors.

    `search(queries, k) -> (idx, sim)` like `Store.search` (sim: exact inner products of the
    int8 vectors, so votes weigh the same as with exact search, and searches of different groups
    of shards can be merged). The index's ids are `store`'s vector numbers; `store` may be a
    whole store or a group of its shards. `parts`: the part file of each shard (as saved).
    """

    def __init__(self, store: Store, index, key: str, nprobe: int = 32, refine: int = 4,
                 trained_for: int = 0, parts: dict[str, str] | None = None):
        import faiss

        self.store, self.index, self.key, self.refine = store, index, key, refine
        self.trained_for, self.parts = trained_for, dict(parts or {})
        self._ivf = faiss.extract_index_ivf(index)
        self.nprobe = nprobe
        self.build_stats: dict = {}

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
              key: str | None = None, on_progress=None, should_stop=None,
              jobs: int | None = None) -> "IVFPQSearch | None":
        """Train an index over a saved store (every shard has its file), write its template and
        a part per shard, and hold it merged in memory; `save()` commits it. Returns None when
        `should_stop()` turned true between batches. `on_progress`: Progress events, counting
        vectors. nprobe / refine default to `default_probe(n)`; `jobs`: as `write_parts`."""
        import time

        import faiss

        if any(s.file is None for s in store.shards):
            raise ValueError("save the store before building its index (the index names its shard files)")
        n = store.n_vectors
        key = key or cls.default_key(n, store.dim, nlist, pq)
        probe = default_probe(n)
        template = faiss.index_factory(store.dim, key, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(template)
        rng = np.random.default_rng(seed)
        n_train = min(n, max(train_points * ivf.nlist, 65536))
        if on_progress:
            on_progress(Progress(STAGE, 0, n, unit="vectors"))  # training the cells comes first (minutes on a big store)
        t0 = time.perf_counter()
        template.train(gather_vectors(store, np.sort(rng.choice(n, size=n_train, replace=False))))
        train_s = time.perf_counter() - t0
        if log:
            log(f"{key}: trained on {n_train:,} vectors in {train_s:.0f} s")
        self = cls._filled(store, template, key, nprobe or probe[0], refine or probe[1], n, log,
                           on_progress, should_stop, jobs)
        if self is not None:
            self.build_stats = {"train_vectors": n_train, "train_s": round(train_s, 1), **self.build_stats}
        return self

    @classmethod
    def _filled(cls, store: Store, template, key: str, nprobe: int, refine: int, trained_for: int,
                log=None, on_progress=None, should_stop=None, jobs: int | None = None) -> "IVFPQSearch | None":
        """A trained template filled with every shard of `store`: its file and the parts written
        (`write_parts`), then read back and merged in memory (not committed: `save()`)."""
        import time

        folder = Path(store.folder)
        template_file = _write_index(template, folder, "trained", keep_quantizer=True)
        t0, done, n = time.perf_counter(), 0, store.n_vectors

        def added(count: int) -> None:
            nonlocal done
            done += count
            if on_progress:
                on_progress(Progress(STAGE, done, n, unit="vectors"))
            if log:
                log(f"{key}: added {done:,}/{n:,} ({time.perf_counter() - t0:.0f} s)")

        parts = write_parts(store, template, template_file, store.shards, jobs, should_stop, added)
        if parts is None:
            return None
        index = _merged(template, folder, store, parts)
        self = cls(store, index, key, nprobe=nprobe, refine=refine, trained_for=trained_for, parts=parts)
        self.template_file = template_file
        self.build_stats = {"add_s": round(time.perf_counter() - t0, 1)}
        return self

    def candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `refine * k` best candidates of each query window by the compressed codes, with
        both similarities: (idx, approximate, exact) [shape=(q, kc)] (a candidate missing, when
        the probed cells hold fewer: idx 0, both -inf). A search sharded over groups of shards
        merges these, so it keeps the candidates one index over all the shards would keep."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        sim, idx = self.index.search(q, max(k, k * self.refine))
        missing = idx < 0  # fewer than kc vectors in the probed cells
        idx[missing], sim[missing] = 0, -np.inf
        if not self.refine:
            return idx, sim, sim
        exact = np.einsum("qcd,qd->qc", gather_vectors(self.store, idx), q)  # [q, kc]
        exact[missing] = -np.inf
        return idx, sim, exact

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx, _, exact = self.candidates(queries, k)
        return best_k(idx, exact, k)


    # ---- next to the store -----------------------------------------------------------------
    def save(self) -> None:
        """Commit a built index: write the JSON naming its template and parts, then delete the
        index files it no longer names."""
        _commit(Path(self.store.folder), self.store, {
            "key": self.key, "nprobe": self.nprobe, "refine": self.refine, "trained_for": self.trained_for,
            "trained": self.template_file, "parts": self.parts})

    def file_bytes(self) -> int:
        """Bytes of its files on disk (the template and the parts)."""
        folder = Path(self.store.folder)
        return sum((folder / f).stat().st_size for f in [self.template_file, *self.parts.values()])

    @classmethod
    def load(cls, store: Store, folder=None) -> "IVFPQSearch | None":
        """The index saved next to the store for `store`'s shards (all of a store's, or a group's:
        `store` holds only those), or None when there is none or it does not cover them (the store
        changed since: search exactly, or `update_index`)."""
        import faiss

        meta, folder = _read_meta(folder or store.folder)
        if not _covers(meta, store.model_id, _shard_sizes(store), whole=False):
            return None
        try:
            index = _merged(faiss.read_index(str(folder / meta["trained"])), folder, store,
                            {s.file: meta["parts"][s.file][0] for s in store.shards})
        except (RuntimeError, KeyError, TypeError):  # missing or damaged: as if there were none
            return None
        self = cls(store, index, meta["key"], nprobe=meta["nprobe"], refine=meta["refine"],
                   trained_for=meta.get("trained_for", 0), parts={f: p for f, (p, _) in meta["parts"].items()})
        self.template_file = meta["trained"]
        return self


class _Merger:
    """Merges parts into one index: faiss `merge_from`, except where faiss 1.15 gets it wrong.

    `BlockInvertedLists::add_entries` (the fast-scan lists) copies whole blocks when the list
    already holds a multiple of `block_size` entries (a byte count, 480 for PQ30x4fs) and copies
    as many bytes as the whole list then holds: past the end of both buffers, so the lists come
    out wrong and the heap is corrupted (the process dies later). Such a list holds whole blocks
    (480 is a multiple of the 32 codes a block packs), so it is joined here instead, block bytes
    after block bytes, and added to the emptied list in one piece (the path that copies right)."""

    def __init__(self, index):
        import faiss

        self.index = index
        self.lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
        self.nlist = faiss.extract_index_ivf(index).nlist
        self.sizes = np.array([self.lists.list_size(i) for i in range(self.nlist)], np.int64)

    def merge(self, part, add_id: int) -> None:
        import faiss

        theirs = faiss.downcast_InvertedLists(faiss.extract_index_ivf(part).invlists)
        sizes = np.array([theirs.list_size(i) for i in range(self.nlist)], np.int64)
        block, per_block = getattr(self.lists, "block_size", 0), getattr(self.lists, "n_per_block", 0)
        risky = np.flatnonzero((self.sizes > 0) & (sizes > 0) & (self.sizes % block == 0)) if block else []
        for i in map(int, risky):
            o, m = int(self.sizes[i]), int(sizes[i])
            ids = np.concatenate([faiss.rev_swig_ptr(self.lists.get_ids(i), o).copy(),
                                  faiss.rev_swig_ptr(theirs.get_ids(i), m) + np.int64(add_id)])
            codes = np.concatenate([
                faiss.rev_swig_ptr(self.lists.get_codes(i), o // per_block * block).copy(),
                faiss.rev_swig_ptr(theirs.get_codes(i), -(-m // per_block) * block).copy()])
            self.lists.resize(i, 0)
            self.lists.add_entries(i, o + m, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
            theirs.resize(i, 0)  # merge_from passes over it now
        self.index.merge_from(part, int(add_id))
        self.sizes += sizes


def _part(template, shard, dim: int, should_stop=None, on_added=None):
    """A copy of the trained `template` holding one shard's vectors (ids: rows of the shard),
    added in batches; None when stopped."""
    import faiss

    part = faiss.clone_index(template)
    for lo in range(0, len(shard.time), ADD_BATCH):
        if should_stop and should_stop():
            return None
        v = dequantize(shard.vectors[lo : lo + ADD_BATCH], dim)
        part.add_with_ids(v, np.arange(lo, lo + len(v), dtype=np.int64))
        if on_added:
            on_added(len(v))
    return part


def write_parts(store: Store, template, template_file: str, shards: list, jobs: int | None = None,
                should_stop=None, on_added=None) -> dict[str, str] | None:
    """Each of `shards` (saved shards of `store`) added to a copy of the trained `template` and
    written into the store's folder: {shard file: part file}; None when stopped. Adding is the
    cost of an index (each vector's cell and codes: ~50-60k vectors a second on one core), and
    shards are independent, so with several shards they are added in `jobs` worker processes
    (default: one per core), each reading its shard and `template_file` from the folder; a stop
    then waits for the shards in flight (~30 s each at 2M vectors on one core). `on_added(n)`:
    n more vectors added (per batch in this process, per shard in workers)."""
    from tagmatch.store.parallel import ordered_map, usable_cores

    folder, parts = Path(store.folder), {}
    jobs = min(jobs or usable_cores(), len(shards))
    if jobs <= 1:
        for s in shards:
            part = _part(template, s, store.dim, should_stop, on_added)
            if part is None:
                return None
            parts[s.file] = _write_index(part, folder, "part")
        return parts
    results = ordered_map(_part_in_worker, [(str(folder), template_file, s.file) for s in shards], "joblib", jobs)
    try:
        for i, name in results:
            parts[shards[i].file] = name
            if on_added:
                on_added(len(shards[i].time))
            if should_stop and should_stop() and len(parts) < len(shards):
                return None  # the parts written so far are removed at the next commit
    finally:
        results.close()
    return parts


def _part_in_worker(folder: str, template_file: str, shard_file: str) -> str:
    """One saved shard's part, added and written in a worker process (`write_parts`)."""
    import faiss

    from tagmatch.store.folder import read_shards
    from tagmatch.store.parallel import ignore_sigint

    ignore_sigint()
    faiss.omp_set_num_threads(1)  # one worker per core
    m, (shard,) = read_shards(Path(folder), [shard_file])
    template = faiss.read_index(str(Path(folder) / template_file))
    return _write_index(_part(template, shard, int(m["dim"])), Path(folder), "part")


def _merged(template, folder: Path, store: Store, parts: dict[str, str]):
    """The template with the saved parts of `store`'s shards (`parts`: shard file -> part file)
    merged in, each shard's ids moved by its first vector number in `store`."""
    import faiss

    quantizer = faiss.extract_index_ivf(template).quantizer
    merger = _Merger(template)
    for start, s in zip(store.shard_starts(), store.shards):
        part = faiss.read_index(str(folder / parts[s.file]))
        pivf = faiss.extract_index_ivf(part)  # its placeholder cells: the template's take their place
        pivf.quantizer, pivf.own_fields = quantizer, False
        merger.merge(part, int(start))
    return template


def _write_index(index, folder: Path, kind: str, keep_quantizer: bool = False) -> str:
    """Write `index` as a new file of the store folder (crash-safe); its name. A part is written
    with an empty placeholder for its cells (~16 MB of centroids and graph at 32,768 cells,
    which the template holds once): a part costs what its shard holds."""
    import faiss

    from tagmatch.fsutil import atomic_path

    name = f"{ANN_PREFIX}-{kind}-{secrets.token_hex(6)}.faiss"
    ivf = faiss.extract_index_ivf(index)
    quantizer, own = ivf.quantizer, ivf.own_fields
    placeholder = faiss.IndexFlatIP(ivf.d)
    if not keep_quantizer:
        ivf.own_fields, ivf.quantizer = False, placeholder
    try:
        with atomic_path(folder / name) as tmp:
            faiss.write_index(index, str(tmp))
    finally:
        ivf.quantizer, ivf.own_fields = quantizer, own
    return name


def _commit(folder: Path, store: Store, fields: dict) -> None:
    """Write the index's JSON (the commit point), then delete the index files it does not name."""
    from tagmatch.fsutil import atomic_write_text, fsync_dir

    counts = {s.file: len(s.time) for s in store.shards}
    meta = {"version": META_VERSION, "model_id": store.model_id,
            **{k: v for k, v in fields.items() if k != "parts"},
            "parts": {f: [p, counts[f]] for f, p in fields["parts"].items()}}
    atomic_write_text(folder / ANN_META, json.dumps(meta))
    _remove_index_files(folder, keep={meta["trained"], *fields["parts"].values()})
    fsync_dir(folder)


def _read_meta(folder):
    folder = Path(folder)
    try:
        meta = json.loads((folder / ANN_META).read_text())
    except (OSError, ValueError):
        return None, folder
    return (meta if isinstance(meta, dict) else None), folder


def _shard_sizes(store: Store) -> dict[str, int]:
    return {s.file: len(s.time) for s in store.shards}


def _covers(meta: dict | None, model_id: str, shards: dict[str, int], whole: bool = True) -> bool:
    """Whether an index's JSON holds exactly these shards' vectors (file -> count; `whole`), or at
    least theirs (a group of a store's shards)."""
    if meta is None or meta.get("version") != META_VERSION or meta.get("model_id") != model_id:
        return False
    try:
        held = {f: n for f, (_, n) in meta["parts"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return held == shards if whole else all(held.get(f) == n for f, n in shards.items())


def _in_force(meta: dict | None, folder: Path, store: Store) -> bool:
    """Whether the index's JSON covers exactly the store's shards and every file it names is there."""
    return _covers(meta, store.model_id, _shard_sizes(store)) and all(
        (folder / f).is_file() for f in [meta["trained"], *(p for p, _ in meta["parts"].values())])


def _remove_index_files(folder: Path, keep: set[str] = frozenset()) -> None:
    for p in folder.iterdir():
        if p.name.startswith(ANN_PREFIX) and p.suffix == ".faiss" and p.name not in keep:
            p.unlink()


def searcher_for(store: Store):
    """What the matcher should search: the store's saved approximate index when it has a
    current one (`tagmatch index` keeps one for big stores), else the store itself (exact)."""
    if store.folder is None:
        return store
    meta, _ = _read_meta(store.folder)
    if not _covers(meta, store.model_id, _shard_sizes(store)):
        return store
    return IVFPQSearch.load(store) or store


def group_searcher(group: Store, store_shards: dict[str, int]):
    """What a search worker searches for a group of a store's shards (`group` holds only those;
    `store_shards`: every shard file of the store and its vector count, from its manifest): the
    saved index's parts for them when the index covers the whole store, as `searcher_for` would
    choose for the store, else the group itself (exact)."""
    meta, _ = _read_meta(group.folder)
    if not _covers(meta, group.model_id, store_shards):
        return group
    return IVFPQSearch.load(group) or group


def describe_search(store: Store, searcher=None) -> str:
    """How a scan searches `store` (with `searcher`, when it is known), in one line, read from
    the index's JSON without loading the index (`tagmatch info`, Home; a scan of a big store
    without a current index warns with it)."""
    meta, folder = _read_meta(store.folder) if store.folder is not None else (None, None)
    if isinstance(searcher, IVFPQSearch):
        meta = {"key": searcher.key, "nprobe": searcher.nprobe, "refine": searcher.refine}
    if isinstance(searcher, IVFPQSearch) or (
            searcher is None and _in_force(meta, folder, store)):
        return f"approximate ({meta['key']}, nprobe {meta['nprobe']}, re-rank {meta['refine']}x)"
    if meta is not None:
        return "exact: the approximate index is out of date (`tagmatch index` brings it up to date)"
    if store.n_vectors > EXACT_MAX_VECTORS:
        return "exact: no approximate index, slower at this size (`tagmatch index` builds one)"
    return "exact"


def update_index(store: Store, search: str = "auto", *, on_progress=None, should_stop=None,
                 jobs: int | None = None) -> str:
    """Keep the approximate index next to a saved store in step with it; says what it did, in
    one line. `search`: "auto" keeps an index once the store passes EXACT_MAX_VECTORS (or when
    one is there already), "approximate" always (from MIN_INDEX_VECTORS), "exact" removes it.

    Shards are immutable, so a changed store changes the index only where its shards changed:
    the parts of shards gone are dropped, new shards get theirs; nothing else is read or written.
    The cells are trained again only when the store has grown GROW_LIMIT times past what they were
    trained for. An index of the older one-file format keeps its trained cells: the parts are
    made from it. `jobs`: worker processes adding new shards (`write_parts`; default one per core)."""
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
    usable = (meta is not None and meta.get("model_id") == store.model_id
              and n <= GROW_LIMIT * meta.get("trained_for", 0))
    if usable and meta.get("version") == META_VERSION:
        old = {f: p for f, (p, _) in meta["parts"].items()}
        if _in_force(meta, folder, store):
            return f"search: approximate ({meta['key']}), index current, {n:,} vectors"
        try:
            template = faiss.read_index(str(folder / meta["trained"]))
        except RuntimeError:
            template = None
        if template is not None:
            current = {s.file for s in store.shards}
            parts = {f: p for f, p in old.items() if f in current and (folder / p).is_file()}
            new = [s for s in store.shards if s.file not in parts]
            removed = sum(n_old for f, (_, n_old) in meta["parts"].items() if f not in current)
            added, total = 0, sum(len(s.time) for s in new)

            def count(n_added: int) -> None:
                nonlocal added
                added += n_added
                if on_progress:
                    on_progress(Progress(STAGE, added, total, unit="vectors"))

            made = write_parts(store, template, meta["trained"], new, jobs, should_stop, count)
            if made is None:
                return "search: exact for now (updating the approximate index was stopped; `tagmatch index` goes on)"
            parts.update(made)
            _commit(folder, store, {**{k: meta[k] for k in ("key", "nprobe", "refine", "trained_for", "trained")},
                                    "parts": parts})
            return (f"search: approximate ({meta['key']}), index updated: +{added:,} -{removed:,} vectors "
                    f"in {time.perf_counter() - t0:.0f} s, {n:,} vectors")
    ann = None
    if usable and "slots" in meta:  # the one-file format: its trained cells, emptied, fill the parts
        try:
            template = faiss.read_index(str(folder / meta.get("file", f"{ANN_PREFIX}.faiss")))
            template.reset()
        except RuntimeError:
            template = None
        if template is not None:
            ann = IVFPQSearch._filled(store, template, meta["key"], meta["nprobe"], meta["refine"],
                                      meta["trained_for"], on_progress=on_progress, should_stop=should_stop,
                                      jobs=jobs)
            if ann is not None:
                ann.save()
                return (f"search: approximate ({ann.key}), index rewritten in parts in "
                        f"{time.perf_counter() - t0:.0f} s, {n:,} vectors")
    ann = IVFPQSearch.build(store, on_progress=on_progress, should_stop=should_stop, jobs=jobs)
    if ann is None:
        if meta is not None:  # the old index no longer fits the store: exact until the next run
            (folder / ANN_META).unlink()
        _remove_index_files(folder)
        return "search: exact for now (building the approximate index was stopped; `tagmatch index` builds it)"
    ann.save()
    return f"search: approximate ({ann.key}), index built in {time.perf_counter() - t0:.0f} s, {n:,} vectors"

"""The embedding store: reference vectors, where each came from, and the tracks' metadata, held
in shards of whole tracks. On disk a store is a folder (tagmatch.store.folder: the format, the
checksums, saving and loading).

A store is bound to the model and feature config that built it: loading it with another model is
refused, since its vectors would be meaningless to that model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from tagmatch.errors import StoreError
from tagmatch.audio.features import FeatureConfig
from tagmatch.store.folder import Shard, TrackInfo, check_vectors, read_store, save_store
SHARD_VECTORS = 1 << 21  # new tracks are cut into shards of about this many vectors (128 MB at 60-d)
SMALL_SHARD = SHARD_VECTORS // 16  # saves during a long index leave small shards: merged past
MAX_SMALL_SHARDS = 8  # this many, so a store never opens thousands of files
VECTOR_DTYPE = np.int8  # 1 byte a dimension, a quarter of float32 (cost: docs/benchmarks.md)


def top_k_columns(sims: np.ndarray, k: int, block: int = 64) -> np.ndarray:
    """Column indices of each row's k largest values (unordered), exact.

    The columns are dealt into groups of `block` (group j: columns j, j + m, j + 2m, ... for m
    groups); the k largest values lie in the k groups with the largest maxima, so only those
    k * block candidates are partitioned. Dealt rather than contiguous groups make the group
    maxima a reduction over the middle axis, which numpy vectorises: ~4x cheaper than
    contiguous blocks and ~15x cheaper than `argpartition` over the whole row.
    """
    q, n = sims.shape
    m = n // block
    if m <= 4 * k:
        return np.argpartition(-sims, k - 1, axis=1)[:, :k]
    gmax = sims[:, : m * block].reshape(q, block, m).max(axis=1)
    top_groups = np.argpartition(-gmax, k - 1, axis=1)[:, :k]
    idx = (top_groups[:, :, None] + m * np.arange(block)).reshape(q, k * block)
    if m * block < n:  # the ragged tail is always a candidate
        idx = np.concatenate([idx, np.broadcast_to(np.arange(m * block, n), (q, n - m * block))], axis=1)
    part = np.argpartition(-np.take_along_axis(sims, idx, 1), k - 1, axis=1)[:, :k]
    return np.take_along_axis(idx, part, 1)


FLOAT_CACHE_BYTES = 256 << 20  # float32 copy for search kept up to this size (~500k vectors)


def vector_scale(dim: int) -> float:
    """int8 steps per unit: components of a d-dim unit vector spread about 1/sqrt(d), so +-6 of
    those (capped at 1) covers them all and keeps the most resolution."""
    return 127.0 / min(1.0, 6.0 / np.sqrt(dim))


def quantize(vectors: np.ndarray, dim: int) -> np.ndarray:
    """float unit vectors [shape=(n, dim)] -> int8 fixed point (rare outliers clip)."""
    q = np.rint(np.asarray(vectors, np.float32) * vector_scale(dim))
    return np.clip(q, -127, 127).astype(VECTOR_DTYPE)


def dequantize(v: np.ndarray, dim: int) -> np.ndarray:
    """Stored rows (int8 from `quantize`, or float vectors in studies) as float32 unit vectors."""
    out = np.ascontiguousarray(v, dtype=np.float32)
    if v.dtype == VECTOR_DTYPE:
        out /= np.float32(vector_scale(dim))
    return out


def default_store_path() -> Path:
    """$TAGMATCH_STORE, else the user's data dir (XDG on Linux)."""
    env = os.environ.get("TAGMATCH_STORE")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("tagmatch")) / "store"


def default_cache_store_path() -> Path:
    """The embeddings `dupes` keeps between runs: $TAGMATCH_CACHE_STORE, else the user cache dir."""
    env = os.environ.get("TAGMATCH_CACHE_STORE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tagmatch")) / "dupes-store"


class Store:
    """Tracks (`tracks[i]` is track i) and their vectors, held in shards. `vectors`, `vec_track`
    (global track numbers) and `vec_time` give every vector in order, as one array each."""

    def __init__(self, feature_config: FeatureConfig, model_id: str, dim: int, vectors: np.ndarray | None = None,
                 vec_track: np.ndarray | None = None, vec_time: np.ndarray | None = None,
                 tracks: list[TrackInfo] | None = None, shards: list[Shard] | None = None) -> None:
        self.feature_config, self.model_id, self.dim = feature_config, model_id, dim
        self.tracks: list[TrackInfo] = list(tracks or [])
        self.shards: list[Shard] = list(shards or [])
        if vectors is not None and len(vectors):  # one shard from flat arrays (tools, restrict)
            self.shards = [Shard(vectors, np.asarray(vec_track, np.int32), np.asarray(vec_time, np.float32),
                                 len(self.tracks))]
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # tracks added since the last flush
        self._flat: dict[str, np.ndarray] = {}
        self.folder: Path | None = None  # where the shards with a `file` live
        self.roots: list[str] = []  # the folders indexed into it (absolute), as `tagmatch index` was given them
        self.vectors_checked_at: float | None = None  # when every vector was last compared with its checksum
        self._f32_key: bool | None = None  # the float32 search copy is current

    # ---- the flat view ---------------------------------------------------------------------
    def _flush(self) -> None:
        """Turn the tracks added since the last flush into shards (amortised: adding a track is
        O(its vectors), not O(the store))."""
        if not self._pending:
            return
        group: list[tuple[np.ndarray, np.ndarray]] = []
        for item in self._pending + [None]:
            if item is not None:
                group.append(item)
            if group and (item is None or sum(len(v) for v, _ in group) >= SHARD_VECTORS):
                local = np.concatenate([np.full(len(v), i, np.int32) for i, (v, _) in enumerate(group)])
                self.shards.append(Shard(np.concatenate([v for v, _ in group]), local,
                                         np.concatenate([t for _, t in group]), len(group)))
                group = []
        self._pending = []

    def _array(self, name: str) -> np.ndarray:
        if name not in self._flat:
            self._flush()
            if name == "vectors":
                parts = [s.vectors for s in self.shards] or [np.zeros((0, self.dim), VECTOR_DTYPE)]
            elif name == "vec_time":
                parts = [s.time for s in self.shards] or [np.zeros(0, np.float32)]
            else:
                offsets = np.cumsum([0] + [s.n_tracks for s in self.shards])
                parts = [s.track + np.int32(o) for s, o in zip(self.shards, offsets)] or [np.zeros(0, np.int32)]
            self._flat[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self._flat[name]

    def shard_starts(self) -> np.ndarray:
        """The first global vector number of each shard, then the number of vectors: where a
        global vector number lives (pending tracks are made into shards first)."""
        self._flush()
        return np.cumsum([0] + [len(s.time) for s in self.shards])

    @property
    def n_vectors(self) -> int:
        return int(self.shard_starts()[-1])

    def lookup(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Track numbers and window times of global vector numbers `idx` (any shape). A sharded
        store reads only those rows of each shard (pages of a memory map), so no store-sized
        table is built: at 100M vectors the flat `vec_track` + `vec_time` would be 800 MB."""
        if len(self.shards) <= 1 or "vec_track" in self._flat:
            return self.vec_track[idx], self.vec_time[idx]
        flat = np.asarray(idx, np.int64).ravel()
        first_track = np.cumsum([0] + [s.n_tracks for s in self.shards])
        track = np.empty(len(flat), np.int32)
        when = np.empty(len(flat), np.float32)
        for sh, sel, rows in self.rows_by_shard(flat):
            track[sel] = self.shards[sh].track[rows] + np.int32(first_track[sh])
            when[sel] = self.shards[sh].time[rows]
        return track.reshape(np.shape(idx)), when.reshape(np.shape(idx))

    def rows_by_shard(self, flat: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Global vector numbers `flat` [shape=(n,)] grouped by shard: (shard, positions in
        `flat`, rows in the shard), rows ascending (sequential reads of a memory map)."""
        starts = self.shard_starts()
        which = np.searchsorted(starts, flat, side="right") - 1
        for sh in np.unique(which):
            sel = np.flatnonzero(which == sh)
            rows = flat[sel] - starts[sh]
            order = np.argsort(rows, kind="stable")
            yield int(sh), sel[order], rows[order]

    def track_vectors(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Track t's window times [shape=(m,)], ascending, and its vectors as float32 unit vectors
        [shape=(m, dim)]: a slice of one shard (of a memory map, only those rows are read)."""
        self._flush()
        first = np.cumsum([0] + [s.n_tracks for s in self.shards])
        sh = int(np.searchsorted(first, t, side="right")) - 1
        shard, local = self.shards[sh], t - int(first[sh])
        lo, hi = np.searchsorted(shard.track, [local, local + 1])
        return np.asarray(shard.time[lo:hi]), dequantize(np.asarray(shard.vectors[lo:hi]), self.dim)

    @property
    def vectors(self) -> np.ndarray:
        """[shape=(n, dim)] int8: unit vectors times vector_scale(dim)."""
        return self._array("vectors")

    @property
    def vec_track(self) -> np.ndarray:
        """[shape=(n,)] int32 index into tracks."""
        return self._array("vec_track")

    @property
    def vec_time(self) -> np.ndarray:
        """[shape=(n,)] float32 window start in seconds."""
        return self._array("vec_time")

    def _changed(self) -> None:
        self._flat.clear()
        self._f32_key = None

    # ---- editing -------------------------------------------------------------------------
    def track_by_path(self) -> dict[str, int]:
        return {t.path: i for i, t in enumerate(self.tracks)}

    def add_track(self, info: TrackInfo, vectors: np.ndarray, times: np.ndarray) -> int:
        """`vectors`: float unit vectors, or int8 already quantized (as index workers send them)."""
        tid = len(self.tracks)
        self.tracks.append(info)
        q = vectors if vectors.dtype == VECTOR_DTYPE else quantize(vectors, self.dim)
        self._pending.append((q, np.asarray(times, np.float32)))
        self._changed()
        return tid

    def remove_tracks(self, ids: set[int]) -> None:
        """Drop tracks and their vectors; remaining track ids are renumbered densely. Only the
        shards that held a removed track change (and are written again on save)."""
        if not ids:
            return
        self._flush()
        first, shards = 0, []
        for s in self.shards:
            gone = {i - first for i in ids if first <= i < first + s.n_tracks}
            first += s.n_tracks
            if not gone:
                shards.append(s)
                continue
            keep_local = [i for i in range(s.n_tracks) if i not in gone]
            if not keep_local:
                continue
            check_vectors(s, self.folder)
            remap = np.full(s.n_tracks, -1, np.int32)
            remap[keep_local] = np.arange(len(keep_local), dtype=np.int32)
            keep = remap[s.track] >= 0
            shards.append(Shard(np.asarray(s.vectors[keep]), remap[s.track[keep]], np.asarray(s.time[keep]),
                                len(keep_local)))
        self.shards = shards
        self.tracks = [t for i, t in enumerate(self.tracks) if i not in ids]
        self._changed()

    # ---- search --------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by inner product. queries [shape=(q, dim)] float32.

        Returns (idx, sim), each [shape=(q, k')] with k' = min(k, n), best first.
        """
        n = int(self.shard_starts()[-1])
        k = min(k, n)
        dtype = self.shards[0].vectors.dtype if self.shards else VECTOR_DTYPE
        scale = vector_scale(self.dim) if dtype == VECTOR_DTYPE else 1.0  # float vectors: studies
        q = np.asarray(queries, np.float32) / np.float32(scale)
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
        best_idx = np.zeros((len(q), 0), np.int64)
        best_sim = np.full((len(q), 0), -np.inf, np.float32)
        for offset, table in self._search_tables():
            for lo in range(0, len(table), chunk):
                sims = q @ np.asarray(table[lo : lo + chunk]).astype(np.float32, copy=False).T
                part = top_k_columns(sims, min(k, sims.shape[1]))
                cand_sim = np.concatenate([best_sim, np.take_along_axis(sims, part, 1)], axis=1)
                cand_idx = np.concatenate([best_idx, part + offset + lo], axis=1)
                order = np.argsort(-cand_sim, axis=1)[:, :k]
                best_sim = np.take_along_axis(cand_sim, order, 1)
                best_idx = np.take_along_axis(cand_idx, order, 1)
        return best_idx, best_sim

    def _search_tables(self) -> list[tuple[int, np.ndarray]]:
        """(first vector, array) pieces to search. A small store is converted to float32 once and
        kept (for a 7 h library the per-query conversion cost more than the search); a big one is
        searched shard by shard, chunk by chunk, straight from its (mapped) int8 arrays, so memory
        stays bounded."""
        if sum(s.vectors.nbytes for s in self.shards) * 4 > FLOAT_CACHE_BYTES:
            return [(int(o), s.vectors) for o, s in zip(self.shard_starts(), self.shards)]
        if self._f32_key is None:
            self._f32, self._f32_key = np.asarray(self.vectors).astype(np.float32), True
        return [(0, self._f32)]

    # ---- persistence (tagmatch.store.folder) ---------------------------------------------
    def prepare_save(self) -> None:
        """Cut the pending tracks into shards and merge small ones: the shards a save writes."""
        self._flush()
        self._merge_small_shards()

    def save(self, path: Path) -> None:
        """Write the store as a folder: new and changed shards with their track lists, then the
        manifest (atomically), then delete what the manifest no longer names."""
        save_store(self, path)

    def _merge_small_shards(self) -> None:
        """Past MAX_SMALL_SHARDS small shards, merge runs of neighbouring small shards into one
        (only those are rewritten; track order and numbering do not change)."""
        if sum(len(s.time) < SMALL_SHARD for s in self.shards) <= MAX_SMALL_SHARDS:
            return
        merged: list[Shard] = []
        run: list[Shard] = []

        def close_run() -> None:
            if len(run) == 1:
                merged.append(run[0])
            elif run:
                for r in run:
                    check_vectors(r, self.folder)
                offsets = np.cumsum([0] + [r.n_tracks for r in run[:-1]]).astype(np.int32)
                merged.append(Shard(np.concatenate([np.asarray(r.vectors) for r in run]),
                                    np.concatenate([r.track + o for r, o in zip(run, offsets)]),
                                    np.concatenate([np.asarray(r.time) for r in run]),
                                    sum(r.n_tracks for r in run)))

        for s in self.shards:
            small = len(s.time) < SMALL_SHARD
            if small and sum(len(r.time) for r in run) + len(s.time) <= SHARD_VECTORS:
                run.append(s)
                continue
            close_run()
            run = [s] if small else []
            if not small:
                merged.append(s)
        close_run()
        self.shards = merged

    @classmethod
    def load(cls, path: Path, mmap: bool = True, verify: str = "quick", damaged: list | None = None) -> "Store":
        """Open a store folder; with `mmap` the vectors stay on disk until searched. `verify`:
        "quick" (the track lists, each shard's track numbers and times) or "full" (also the
        vectors); a damaged shard raises StoreError naming it, or with `damaged` (a list) is
        dropped with its tracks and listed there (tagmatch.store.folder.read_store)."""
        m, tracks, shards = read_store(Path(path), mmap, verify, damaged)
        store = cls(feature_config=FeatureConfig.from_dict(m["feature_config"]), model_id=m["model_id"],
                    dim=int(m["dim"]), tracks=tracks, shards=shards)
        store.folder = Path(path)
        checked = m.get("vectors_checked_at")
        store.vectors_checked_at = time.time() if verify == "full" else (
            float(checked) if isinstance(checked, (int, float)) else None)
        roots = m.get("roots") or []
        store.roots = [r for r in roots if isinstance(r, str)] if isinstance(roots, list) else []
        return store

    def check_model(self, model_id: str, feature_config: FeatureConfig, path: Path | str = "") -> None:
        """Refuse a store built with another model or front end."""
        if self.model_id != model_id or self.feature_config != feature_config:
            raise StoreError(
                f"store {path} was built with model {self.model_id}, not the model in use "
                f"({model_id}); re-index with this model (`tagmatch index --store NEW_PATH`) "
                "or pass the model that built it with --model")

    @property
    def hours(self) -> float:
        return sum(t.duration_s for t in self.tracks) / 3600

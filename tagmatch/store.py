"""The embedding store: reference vectors, where each came from, and the tracks' metadata.

Persisted with joblib as a plain dict (format name + version, feature config, model id, numpy
arrays, a list of track dicts), written atomically. A store is bound to the model and feature
config that built it: loading it with another model is refused, since its vectors would be
meaningless to that model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import joblib
import numpy as np

from tagmatch.errors import StoreError
from tagmatch.features import FeatureConfig
from tagmatch.fsutil import atomic_joblib_dump

STORE_FORMAT = "tagmatch-store"
STORE_VERSION = 2
VECTOR_DTYPE = np.int8  # 1 byte a dimension, a quarter of float32 (cost: docs/benchmarks.md)


def top_k_columns(sims: np.ndarray, k: int, block: int = 64) -> np.ndarray:
    """Column indices of each row's k largest values (unordered), exact.

    Rows are cut into blocks of `block` columns; the k largest values lie in the k blocks with
    the largest maxima, so only those k * block candidates are partitioned. A max over blocks
    is ~3x cheaper than `argpartition` over the whole row.
    """
    q, n = sims.shape
    nb = n // block
    if nb <= 4 * k:
        return np.argpartition(-sims, k - 1, axis=1)[:, :k]
    bmax = sims[:, : nb * block].reshape(q, nb, block).max(axis=2)
    top_blocks = np.argpartition(-bmax, k - 1, axis=1)[:, :k]
    idx = (top_blocks[:, :, None] * block + np.arange(block)).reshape(q, k * block)
    if nb * block < n:  # the ragged tail is always a candidate
        idx = np.concatenate([idx, np.broadcast_to(np.arange(nb * block, n), (q, n - nb * block))], axis=1)
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


def default_store_path() -> Path:
    """$TAGMATCH_STORE, else the user's data dir (XDG on Linux)."""
    env = os.environ.get("TAGMATCH_STORE")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("tagmatch")) / "store.joblib"


def default_cache_store_path() -> Path:
    """The embeddings `dupes` keeps between runs: $TAGMATCH_CACHE_STORE, else the user cache dir."""
    env = os.environ.get("TAGMATCH_CACHE_STORE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tagmatch")) / "dupes-store.joblib"


@dataclass
class TrackInfo:
    path: str  # absolute
    tags: dict
    duration_s: float
    size: int
    mtime_ns: int


@dataclass
class Store:
    feature_config: FeatureConfig
    model_id: str
    dim: int
    vectors: np.ndarray = None  # [shape=(n, dim)] int8: unit vectors times vector_scale(dim)
    vec_track: np.ndarray = None  # [shape=(n,)] int32 index into tracks
    vec_time: np.ndarray = None  # [shape=(n,)] float32 window start in seconds
    tracks: list[TrackInfo] = field(default_factory=list)

    def __post_init__(self):
        if self.vectors is None:
            self.vectors = np.zeros((0, self.dim), VECTOR_DTYPE)
            self.vec_track = np.zeros(0, np.int32)
            self.vec_time = np.zeros(0, np.float32)

    # ---- editing -------------------------------------------------------------------------
    def track_by_path(self) -> dict[str, int]:
        return {t.path: i for i, t in enumerate(self.tracks)}

    def add_track(self, info: TrackInfo, vectors: np.ndarray, times: np.ndarray) -> int:
        tid = len(self.tracks)
        self.tracks.append(info)
        self.vectors = np.concatenate([self.vectors, quantize(vectors, self.dim)])
        self._f32_key = None
        self.vec_track = np.concatenate([self.vec_track, np.full(len(vectors), tid, np.int32)])
        self.vec_time = np.concatenate([self.vec_time, times.astype(np.float32)])
        return tid

    def remove_tracks(self, ids: set[int]) -> None:
        """Drop tracks and their vectors; remaining track ids are renumbered densely."""
        if not ids:
            return
        keep_tracks = [i for i in range(len(self.tracks)) if i not in ids]
        remap = np.full(len(self.tracks), -1, np.int32)
        remap[keep_tracks] = np.arange(len(keep_tracks), dtype=np.int32)
        keep = remap[self.vec_track] >= 0
        self.vectors, self.vec_time = self.vectors[keep], self.vec_time[keep]
        self._f32_key = None
        self.vec_track = remap[self.vec_track[keep]]
        self.tracks = [self.tracks[i] for i in keep_tracks]

    # ---- search --------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by inner product. queries [shape=(q, dim)] float32.

        Returns (idx, sim), each [shape=(q, k')] with k' = min(k, n), best first.
        """
        n = len(self.vectors)
        k = min(k, n)
        scale = vector_scale(self.dim) if self.vectors.dtype == VECTOR_DTYPE else 1.0  # float: studies
        q = np.asarray(queries, np.float32) / np.float32(scale)
        table = self._search_table()
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
        best_idx = np.zeros((len(q), 0), np.int64)
        best_sim = np.full((len(q), 0), -np.inf, np.float32)
        for lo in range(0, n, chunk):
            sims = q @ table[lo : lo + chunk].astype(np.float32, copy=False).T
            part = top_k_columns(sims, min(k, sims.shape[1]))
            cand_sim = np.concatenate([best_sim, np.take_along_axis(sims, part, 1)], axis=1)
            cand_idx = np.concatenate([best_idx, part + lo], axis=1)
            order = np.argsort(-cand_sim, axis=1)[:, :k]
            best_sim = np.take_along_axis(cand_sim, order, 1)
            best_idx = np.take_along_axis(cand_idx, order, 1)
        return best_idx, best_sim

    def _search_table(self) -> np.ndarray:
        """The vectors as float32 for BLAS, converted once and kept while small (for a 7 h library
        the per-query conversion cost more than the search); big stores convert chunk by chunk."""
        if self.vectors.nbytes * 4 > FLOAT_CACHE_BYTES:
            return self.vectors
        key = (id(self.vectors), len(self.vectors))
        if getattr(self, "_f32_key", None) != key:
            self._f32, self._f32_key = self.vectors.astype(np.float32), key
        return self._f32

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: Path) -> None:
        atomic_joblib_dump({
            "format": STORE_FORMAT, "version": STORE_VERSION,
            "feature_config": self.feature_config.to_dict(), "model_id": self.model_id, "dim": self.dim,
            "vectors": self.vectors, "vec_track": self.vec_track, "vec_time": self.vec_time,
            "tracks": [asdict(t) for t in self.tracks],
        }, Path(path))

    @classmethod
    def load(cls, path: Path) -> "Store":
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no store at {path}: run `tagmatch index REF_DIR` first")
        try:
            d = joblib.load(path)
        except Exception as exc:
            raise StoreError(f"store {path} is unreadable or corrupt ({type(exc).__name__}); "
                             "re-create it with `tagmatch index`") from exc
        if not isinstance(d, dict) or d.get("format") != STORE_FORMAT:
            raise StoreError(f"{path} is not a tagmatch store")
        if d.get("version") != STORE_VERSION:
            raise StoreError(f"store {path} has format version {d.get('version')}; this tagmatch reads "
                             f"version {STORE_VERSION}: re-create it with `tagmatch index`")
        return cls(
            feature_config=FeatureConfig.from_dict(d["feature_config"]), model_id=d["model_id"],
            dim=int(d["dim"]), vectors=d["vectors"], vec_track=d["vec_track"], vec_time=d["vec_time"],
            tracks=[TrackInfo(**t) for t in d["tracks"]],
        )

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

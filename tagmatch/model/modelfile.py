"""Model files: save and load an encoder with its configs; `LoadedModel` embeds windows with it.

A model file is a joblib'd plain dict (never a pickled class, so the format outlives the code):
format/version, the feature and model configs, the parameters as numpy arrays, the score
calibration used by the matcher, training metadata, and optionally an output projection and a
query adapter. Its id is a hash of what a store's vectors depend on (configs, params, projection;
not the calibration nor the query adapter, which act on queries only); a store records the id of
the model that built it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from tagmatch.errors import ModelError
from tagmatch.audio.features import FeatureConfig, cut_windows
from tagmatch.model.calibration import Calibration
from tagmatch.fsutil import atomic_joblib_dump
from tagmatch import safeload
from tagmatch.safeload import UnsafeFile

if TYPE_CHECKING:
    from tagmatch.model.encoder import ModelConfig

MODEL_FORMAT = "tagmatch-model"
MODEL_VERSION = 1
DEFAULT_MODEL_NAME = "default_model/model.joblib"


@dataclass
class LoadedModel:
    feature_config: FeatureConfig
    model_config: ModelConfig
    params: dict
    calibration: Calibration = field(default_factory=Calibration)
    meta: dict = field(default_factory=dict)
    model_id: str = ""
    # [shape=(model dim, dim)]: a PCA of the encoder's outputs on real music, applied after it
    # (then re-normalised), so the store holds fewer dimensions (docs/benchmarks.md: 64 of 128 lose
    # nothing measurable). None: the encoder's own dimension.
    projection: np.ndarray | None = None
    # Query vectors only (`embed_query`): `tagmatch.train.adapter`. None: queries are embedded as
    # references are.
    query_adapter: dict | None = None
    path: Path | None = None  # the file it was loaded from: worker processes load the same one
    _embedder: Callable | None = field(default=None, repr=False)

    def for_library(self, store) -> "LoadedModel":
        """This model as the store's own decisions adapted it: the query adapter fine-tuned for
        this library (LIBRARY_ADAPTER, tagmatch.train.finetune) and the calibration refitted for
        it (tagmatch.model.calibration.library_calibration), each when there is one."""
        from dataclasses import replace

        from tagmatch.model.calibration import library_calibration

        folder = getattr(store, "folder", None)
        model = self
        adapter = library_adapter(folder, self.model_id)
        if adapter is not None:
            model = replace(model, query_adapter=adapter)
        found = library_calibration(folder, model.query_id)
        return replace(model, calibration=found[0]) if found else model

    @property
    def dim(self) -> int:
        """Dimension of the vectors `embed` returns (and a store built with this model holds)."""
        return self.model_config.dim if self.projection is None else int(self.projection.shape[1])

    @property
    def query_id(self) -> str:
        """What a query's vectors depend on: the model id, plus the query adapter's hash when there
        is one (caches of embedded queries are keyed by it)."""
        if self.query_adapter is None:
            return self.model_id
        h = hashlib.sha256()
        for key in sorted(self.query_adapter):
            h.update(key.encode())
            h.update(np.ascontiguousarray(self.query_adapter[key], np.float32).tobytes())
        return f"{self.model_id}-q{h.hexdigest()[:8]}"

    @property
    def context_frames(self) -> int:
        """Log-mel frames after a window that its embedding reads (0 for the window kind)."""
        return self.model_config.context_frames

    def default_query_hop_frames(self) -> int:
        """The query hop this model is meant for: 0.2 s for the window kind (against a 0.25 s
        reference grid its phases cycle through 0.05 s steps); half the stride for the shared
        kind (0.16 s: two phases of its 32-frame grid, which share four convolutions; a quarter,
        0.08 s, was as accurate on the bench and searched twice the windows: docs/benchmarks.md)."""
        if self.model_config.kind == "shared":
            return self.model_config.stride // 2
        return int(round(0.2 / self.feature_config.frame_seconds))

    def embed(self, windows: np.ndarray, batch: int = 32) -> np.ndarray:
        """windows [shape=(n, window_frames, n_mels)] log-mel -> [shape=(n, dim)] float32.
        The window kind only (a shared-kind model reads context after each window: `embed_at`).

        Small batches are the fastest on a CPU: at 32 windows a batch's activations stay in cache
        (0.35 ms a window on one thread; 0.54-0.62 ms at 256, docs/benchmarks.md)."""
        if self.model_config.kind != "window":
            raise ModelError(f"a {self.model_config.kind}-kind model embeds log-mel with embed_at")
        if self._embedder is None:
            from tagmatch.model.embedders import make_embedder

            self._embedder = make_embedder(self)
        return self._embedder(windows, batch)

    def embed_at(self, S: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The windows of log-mel `S` [shape=(frames, n_mels)] that start at frames `starts`
        -> [shape=(len(starts), dim)] float32. Each window must lie inside `S`; the context after
        it that `S` lacks is read as silence (the end of the audio)."""
        if self.model_config.kind == "window":
            return self.embed(cut_windows(S, np.asarray(starts, np.int64), self.feature_config))
        if self._embedder is None:
            from tagmatch.model.embedders import make_shared_embedder

            self._embedder = make_shared_embedder(self)
        return self._embedder(S, np.asarray(starts, np.int64))

    def embed_query(self, S: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """`embed_at` for a query (a messy copy to identify), through the query adapter when the
        model has one. References (what a store holds) are embedded with `embed_at`."""
        vectors = self.embed_at(S, starts)
        if self.query_adapter is None or len(vectors) == 0:
            return vectors
        from tagmatch.model.adapter import apply_adapter

        return apply_adapter(self.query_adapter, vectors)


def default_model_path() -> Path:
    return Path(str(resources.files("tagmatch").joinpath(DEFAULT_MODEL_NAME)))


def compute_model_id(feature_config: dict, model_config: dict, params: dict,
                     projection: np.ndarray | None = None) -> str:
    if projection is not None:
        params = {**params, "projection": projection}
    h = hashlib.sha256()
    h.update(json.dumps([feature_config, model_config], sort_keys=True).encode())
    flat = _flatten(params)
    for key in sorted(flat):
        h.update(key.encode())
        h.update(np.ascontiguousarray(flat[key]).tobytes())
    return h.hexdigest()[:16]


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, name))
        else:
            out[name] = np.asarray(v)
    return out


def save_model(path: Path, *, feature_config: FeatureConfig, model_config, params: dict,
               calibration: Calibration | None = None, meta: dict | None = None) -> str:
    """Write a model file atomically; returns its id."""
    params = _to_numpy(params)
    fc, mc = feature_config.to_dict(), model_config.to_dict()
    cal = calibration or Calibration()
    payload = {
        "format": MODEL_FORMAT, "version": MODEL_VERSION,
        "feature_config": fc, "model_config": mc, "params": params,
        "calibration": cal.to_dict(), "meta": meta or {},
    }
    atomic_joblib_dump(payload, Path(path), compress=3)
    return compute_model_id(fc, mc, params)


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float32)


def load_model(path: Path | str | None = None) -> LoadedModel:
    """Load a model file: `path`, else $TAGMATCH_MODEL, else the shipped default."""
    from tagmatch.model.encoder import ModelConfig

    path = Path(path or os.environ.get("TAGMATCH_MODEL") or default_model_path())
    try:
        d = safeload.load(path)
    except FileNotFoundError as exc:
        raise ModelError(f"model file not found: {path}") from exc
    except UnsafeFile:
        raise
    except Exception as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from exc
    if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path} is not a tagmatch model file")
    if d.get("version") != MODEL_VERSION:
        raise ModelError(f"{path}: model format version {d.get('version')} is not supported")
    fc, mc = d["feature_config"], d["model_config"]
    return LoadedModel(
        feature_config=FeatureConfig.from_dict(fc),
        model_config=ModelConfig.from_dict(mc),
        params=d["params"],
        calibration=Calibration.from_dict(d["calibration"]) if "calibration" in d else Calibration(),
        meta=d.get("meta", {}),
        model_id=compute_model_id(fc, mc, d["params"], d.get("projection")),
        projection=d.get("projection"),
        query_adapter=d.get("query_adapter"),
        path=path.resolve(),
    )


def untrained_model(feature_config: FeatureConfig, model_config: ModelConfig, seed: int = 0,
                    projection: np.ndarray | None = None) -> LoadedModel:
    """A model of random weights, in memory: for what depends on the architecture, not on what
    a model learnt (speed, windows, context, chunking). Its id says it is untrained."""
    import jax
    from flax import nnx

    from tagmatch.model.encoder import make_encoder

    enc = make_encoder(feature_config, model_config, rngs=nnx.Rngs(seed))
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(enc, nnx.Param)))
    return LoadedModel(feature_config, model_config, params, projection=projection,
                       model_id=f"untrained-{model_config.kind}-{seed}")


def _model_dict(path: Path) -> dict:
    """A model file's raw dict, for the in-place edits below."""
    d = safeload.load(path)
    if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path} is not a tagmatch model file")
    return d


def set_calibration(path: Path, calibration: Calibration, note: str = "") -> None:
    """Store a new score calibration in a model file (the params, hence the id, are unchanged)."""
    path = Path(path)
    d = _model_dict(path)
    d["calibration"] = calibration.to_dict()
    if note:
        d.setdefault("meta", {})["calibration_note"] = note
    atomic_joblib_dump(d, path, compress=3)


LIBRARY_ADAPTER = "query-adapter.joblib"  # in a store folder: {"model_id", "adapter", "facts"}


def library_adapter(store_folder: Path | None, model_id: str) -> dict | None:
    """The query adapter fine-tuned for a store's library (for this model), or None."""
    if store_folder is None or not (Path(store_folder) / LIBRARY_ADAPTER).exists():
        return None
    try:
        d = safeload.load(Path(store_folder) / LIBRARY_ADAPTER)
        return d["adapter"] if isinstance(d, dict) and d.get("model_id") == model_id else None
    except UnsafeFile:
        raise
    except Exception:
        return None  # unreadable: the model's own


def save_library_adapter(store_folder: Path, model_id: str, adapter: dict, facts: dict) -> Path:
    path = Path(store_folder) / LIBRARY_ADAPTER
    atomic_joblib_dump({"model_id": model_id, "adapter": {k: np.asarray(v, np.float32) for k, v in adapter.items()},
                        "facts": facts}, path)
    return path


def set_query_adapter(path: Path, adapter: dict | None, note: str = "") -> None:
    """Store a query adapter in a model file (None removes it). Queries then score differently, so
    the calibration is reset (refit it: `tools/bench.py --calibrate`); the id, and so every store
    built with the model, stays valid."""
    path = Path(path)
    d = _model_dict(path)
    if adapter is None:
        d.pop("query_adapter", None)
    else:
        d["query_adapter"] = {k: np.asarray(v, np.float32) for k, v in adapter.items()}
    d["calibration"] = Calibration().to_dict()
    if note:
        d.setdefault("meta", {})["query_adapter_note"] = note
    atomic_joblib_dump(d, path, compress=3)


def set_projection(path: Path, projection: np.ndarray | None, *, ref_hop_frames: int | None = None,
                   note: str = "") -> str:
    """Store an output projection (and optionally a new reference hop) in a model file.

    Both change what a store built with the model holds, so the model gets a new id, its
    calibration is reset (refit it: `tools/bench.py --calibrate`) and a query adapter fitted for
    the old vectors is dropped. Returns the new id.
    """
    path = Path(path)
    d = _model_dict(path)
    if projection is None:
        d.pop("projection", None)
    else:
        d["projection"] = np.asarray(projection, np.float32)
    if ref_hop_frames is not None:
        d["feature_config"] = {**d["feature_config"], "ref_hop_frames": int(ref_hop_frames)}
    d["calibration"] = Calibration().to_dict()
    d.pop("query_adapter", None)
    if note:
        d.setdefault("meta", {})["projection_note"] = note
    atomic_joblib_dump(d, path, compress=3)
    return compute_model_id(d["feature_config"], d["model_config"], d["params"], d.get("projection"))

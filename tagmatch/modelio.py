"""Model files: save/load an encoder with its configs, and embed windows fast.

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

import joblib
import numpy as np

from tagmatch.errors import ModelError
from tagmatch.features import LOG_EPS, FeatureConfig, cut_windows
from tagmatch.fsutil import atomic_joblib_dump

if TYPE_CHECKING:
    from tagmatch.model import ModelConfig

MODEL_FORMAT = "tagmatch-model"
MODEL_VERSION = 1
DEFAULT_MODEL_NAME = "default_model/model.joblib"


@dataclass(frozen=True)
class Calibration:
    """Maps the matcher's raw score (a margin of evidence per window) to a 0..1 confidence.

    confidence = sigmoid((raw - mid) / width); fitted on the dev corpus so that 0.5 is the
    default threshold between known and unknown songs (`tools/bench.py --calibrate`). The defaults,
    for a model not calibrated yet, are about where the shipped model's fit lies.
    """

    mid: float = 0.02
    width: float = 0.004
    # The score the fit is for: "verified" (since session 12: aligned, plus the check against the
    # reference files), "aligned" (session 10) or "votes" (a model file calibrated before, whose
    # calibration records no score). The matcher scores as its model's calibration expects, so an
    # older model's threshold keeps its meaning until it is calibrated again.
    score: str = "verified"

    def to_dict(self) -> dict:
        return {"mid": self.mid, "width": self.width, "score": self.score}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**{"score": "votes", **d})

    def confidence(self, raw: float) -> float:
        return float(1.0 / (1.0 + np.exp(-(raw - self.mid) / self.width)))


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
    # Query vectors only (`embed_query`): `tagmatch.query_adapter`. None: queries are embedded as
    # references are.
    query_adapter: dict | None = None
    path: Path | None = None  # the file it was loaded from: worker processes load the same one
    _embedder: Callable | None = field(default=None, repr=False)

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
            self._embedder = _make_embedder(self)
        return self._embedder(windows, batch)

    def embed_at(self, S: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The windows of log-mel `S` [shape=(frames, n_mels)] that start at frames `starts`
        -> [shape=(len(starts), dim)] float32. Each window must lie inside `S`; the context after
        it that `S` lacks is read as silence (the end of the audio)."""
        if self.model_config.kind == "window":
            return self.embed(cut_windows(S, np.asarray(starts, np.int64), self.feature_config))
        if self._embedder is None:
            self._embedder = _make_shared_embedder(self)
        return self._embedder(S, np.asarray(starts, np.int64))

    def embed_query(self, S: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """`embed_at` for a query (a messy copy to identify), through the query adapter when the
        model has one. References (what a store holds) are embedded with `embed_at`."""
        vectors = self.embed_at(S, starts)
        if self.query_adapter is None or len(vectors) == 0:
            return vectors
        from tagmatch.query_adapter import apply_adapter

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
    from tagmatch.model import ModelConfig

    path = Path(path or os.environ.get("TAGMATCH_MODEL") or default_model_path())
    try:
        d = joblib.load(path)
    except FileNotFoundError as exc:
        raise ModelError(f"model file not found: {path}") from exc
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

    from tagmatch.model import make_encoder

    enc = make_encoder(feature_config, model_config, rngs=nnx.Rngs(seed))
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(enc, nnx.Param)))
    return LoadedModel(feature_config, model_config, params, projection=projection,
                       model_id=f"untrained-{model_config.kind}-{seed}")


COMPILE_CACHE_BYTES = 64 << 20  # least recently used entries go first; one model's shapes take ~0.5 MB


def use_compile_cache() -> None:
    """Keep the encoders' compiled code on disk, so that the next process (each index worker, each
    scan) loads it instead of compiling again: 2-4 s a process on this CPU. Where:
    $TAGMATCH_XLA_CACHE ("off": nowhere), else the user cache dir. JAX's own cache, file-locked
    and capped. It must be set before the process's first compilation, or JAX ignores it."""
    import jax

    where = os.environ.get("TAGMATCH_XLA_CACHE")
    if where == "off" or jax.config.jax_compilation_cache_dir:
        return
    if not where:
        from platformdirs import user_cache_dir

        where = str(Path(user_cache_dir("tagmatch")) / "xla")
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # ours compile in 0.3-1.5 s
    jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)


def _encoder_parts(m: LoadedModel):
    """(graphdef, params, project): the model's encoder split for jax.jit, and its output
    projection as a function of the encoder's vectors (re-normalised; identity without one)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from tagmatch.model import make_encoder

    use_compile_cache()  # before the embedder's first compilation
    enc = nnx.eval_shape(lambda: make_encoder(m.feature_config, m.model_config, rngs=nnx.Rngs(0)))
    state = nnx.state(enc, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(np.asarray, m.params))
    proj = None if m.projection is None else np.asarray(m.projection, np.float32)

    def project(z):
        if proj is None:
            return z
        z = z @ proj
        return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-12)

    return nnx.split(enc, nnx.Param)[0], state, project


def _make_embedder(m: LoadedModel):
    """A jitted encoder at a fixed batch shape (one compile), padding the last batch."""
    import jax
    from flax import nnx

    graphdef, params, project = _encoder_parts(m)
    run = jax.jit(lambda p, x: project(nnx.merge(graphdef, p)(x)))
    fc = m.feature_config

    def embed(windows: np.ndarray, batch: int) -> np.ndarray:
        """Full batches of `batch`; the rest padded to a multiple of 8, so a few shapes are
        compiled (8, 16, 24, 32) and little work is padding (a 10 s fragment's 50 windows: 32 + 24)."""
        n = len(windows)
        if n == 0:
            return np.zeros((0, m.dim), np.float32)
        out, i = [], 0
        while i < n:
            size = min(batch, -(-(n - i) // 8) * 8)
            x = windows[i : i + size]
            if len(x) < size:
                x = np.concatenate([x, np.zeros((size - len(x), fc.window_frames, fc.n_mels),
                                                np.float32)])
            out.append(np.asarray(run(params, x))[: min(size, n - i)])
            i += size
        return np.concatenate(out)

    return embed


# Windows a shared-kind pass embeds at most (at a 32-frame stride, 41 s of log-mel): long
# tracks go in several passes, and a few input shapes (32, 64, 128 windows) are compiled.
_SHARED_MAX_WINDOWS = 128


def _make_shared_embedder(m: LoadedModel):
    """embed_at for the shared kind. Windows on the stride grid (a reference track) take one pass
    of the stack. Windows on several phases of it (a query every stride / 2 frames) share the
    first convolutions: phases 16 frames apart share the four whose positions are 16 frames
    apart, and only the last one and the head run once per phase. Long inputs go in chunks of at most
    `_SHARED_MAX_WINDOWS` windows, overlapping by what a window reads past its start. Every
    window gets the vector a pass over it alone (with its context) would give (tested)."""
    import math
    from functools import partial

    import jax
    import jax.numpy as jnp
    from flax import nnx

    fc, mc = m.feature_config, m.model_config
    graphdef, params, project = _encoder_parts(m)
    stride, span = mc.stride, fc.window_frames // mc.stride
    silence = np.float32(np.log(LOG_EPS))

    @partial(jax.jit, static_argnums=(2, 3, 4))
    def run(p, x, offsets: tuple[int, ...], layers: int, width: int):
        """x [shape=(1, frames, n_mels)] -> [shape=(len(offsets), width, dim)]: the windows of
        each phase (`offsets` frames after x's start, multiples of 2**layers)."""
        e = nnx.merge(graphdef, p)
        h, level = e.bottom(x, layers)
        g, length = 2**layers, (width + span) * stride
        return project(jnp.concatenate([e.top(h[:, o // g : (o + length) // g], level[:, o : o + length], layers)
                                        for o in offsets]))

    def embed_at(S: np.ndarray, starts: np.ndarray) -> np.ndarray:
        out = np.zeros((len(starts), m.dim), np.float32)
        if len(starts) == 0:
            return out
        phases = np.unique(starts % stride)
        base = int(phases[0])
        offsets = tuple(int(p - base) for p in phases)
        g = math.gcd(stride, *offsets)  # a power of two: phases g frames apart share log2(g) layers
        layers = g.bit_length() - 1
        pos = (starts - base) // stride  # window positions on the stride grid from `base`
        which = np.searchsorted(phases, starts % stride)  # the phase of each start
        for j0 in range(int(pos.min()), int(pos.max()) + 1, _SHARED_MAX_WINDOWS):
            n = min(_SHARED_MAX_WINDOWS, int(pos.max()) + 1 - j0)
            width = max(32, 1 << (n - 1).bit_length())  # 32, 64 or 128 windows
            a = base + j0 * stride
            x = np.full(((width + span + (len(offsets) > 1)) * stride, fc.n_mels), silence, np.float32)
            part = S[a : a + len(x)]
            x[: len(part)] = part
            z = np.asarray(run(params, x[None], offsets, layers, width))
            here = np.flatnonzero((pos >= j0) & (pos < j0 + n))
            out[here] = z[which[here], pos[here] - j0]
        return out

    return embed_at


def _model_dict(path: Path) -> dict:
    """A model file's raw dict, for the in-place edits below."""
    d = joblib.load(path)
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

"""Fine-tuning the query adapter (tagmatch.model.adapter) from the user's review decisions.

An accepted match is a positive pair: the file's query windows and the reference's stored windows
where the alignment puts them. A rejected one is a hard negative: the same kind of pair, with a
reference the user says is wrong. The adapter (identity if the model has none) is trained from
where it is, at a small learning rate and pulled back towards its start, to move query windows
towards their accepted references (NT-Xent over the positives, as the adapter was fitted) and
away from their rejected ones (a hinge on their similarity). A fifth of the decided files is held
out: the new adapter is kept only if it separates the held-out positives from the held-out
negatives better than the old one did; otherwise the model is left as it was.

Reference vectors are not touched, so stores stay valid; margins move a little, so the library's
calibration is refitted from the same decisions afterwards (tagmatch.train.decisions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagmatch.errors import TagmatchError
from tagmatch.progress import OnProgress, Progress, quiet

HELD_OUT = 5  # of the accepted files, and of the rejected ones, every 5th (in the order of a hash of
# their names: the same split wherever the files are) is held out
NEGATIVE_MARGIN = 0.5  # a rejected pair's similarity above this is pushed down
CHECKPOINT_EVERY = 100  # steps


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 300
    learning_rate: float = 3e-5
    temperature: float = 0.05
    stay: float = 10.0  # weight of the pull back towards the starting adapter
    batch: int = 256
    seed: int = 0


@dataclass
class Pairs:
    """Query windows (raw: before any adapter) and the reference windows they are paired with."""

    query: np.ndarray  # [shape=(n, dim)]
    reference: np.ndarray  # [shape=(n, dim)]

    @classmethod
    def empty(cls, dim: int) -> "Pairs":
        return cls(np.zeros((0, dim), np.float32), np.zeros((0, dim), np.float32))

    def __len__(self) -> int:
        return len(self.query)


def _held_out(paths: list[str]) -> set[str]:
    """Every HELD_OUT-th of `paths` in the order of a hash of their file names (the first one
    too, so any list of files holds one out)."""
    import hashlib

    def key(p: str) -> str:
        return hashlib.blake2b(Path(p).name.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()

    return {p for i, p in enumerate(sorted(paths, key=key)) if i % HELD_OUT == 0}


def decision_pairs(docs, store, model, on_progress: OnProgress = quiet) -> dict[str, Pairs]:
    """{"train+", "train-", "held+", "held-"}: the decided files' window pairs. Files that are
    gone, changed since their scan, or not decided as match/reject are left out."""
    from tagmatch.audio.decode import read_segment
    from tagmatch.audio.features import SILENT_RMS, log_mel, window_rms, window_starts
    from tagmatch.match.align import ALIGN_TOLERANCE_S
    from tagmatch.match.config import MatchConfig
    from tagmatch.match.query import frame_grid
    from tagmatch.organize.seen import changed

    fc, hop = model.feature_config, frame_grid(model, MatchConfig())[0]
    by_path = store.track_by_path()
    out = {k: ([], []) for k in ("train+", "train-", "held+", "held-")}
    def decided(f) -> bool:  # an accepted match, or any rejected suggestion (a best guess too)
        d = f.get("decision") or {}
        if not f.get("match") or d.get("choice", 0) != 0 or d.get("tags"):
            return False
        return (d.get("status") == "accepted" and f.get("status") == "match") or d.get("status") == "rejected"

    todo = [f for d in docs for f in d.files if decided(f)]
    held = (_held_out([f["path"] for f in todo if f["decision"]["status"] == "accepted"])
            | _held_out([f["path"] for f in todo if f["decision"]["status"] == "rejected"]))
    for n, f in enumerate(todo, 1):
        on_progress(Progress("reading the decided files", n, len(todo), f["path"]))
        track = by_path.get((f.get("match") or {}).get("path"))
        if track is None or not Path(f["path"]).is_file() or (f.get("seen") and changed(f["path"], f["seen"])):
            continue
        try:
            y = read_segment(f["path"], fc.sample_rate, 0.0, 10.0)
        except TagmatchError:
            continue
        S = log_mel(y, fc)
        starts = window_starts(len(S), hop, fc)
        starts = starts[window_rms(y, starts, fc) > SILENT_RMS]
        if not len(starts):
            continue
        q = model.embed_at(S, starts)  # raw: the adapter is what is trained
        times, ref = store.track_vectors(track)
        at = starts * fc.frame_seconds + float(f["match"].get("offset_s") or 0.0)
        row = np.clip(np.searchsorted(times, at), 0, len(times) - 1)
        ok = np.abs(times[row] - at) <= ALIGN_TOLERANCE_S
        if not ok.any():
            continue
        kind = ("held" if f["path"] in held else "train") + ("+" if f["decision"]["status"] == "accepted" else "-")
        out[kind][0].append(q[ok])
        out[kind][1].append(ref[row[ok]])
    return {k: (Pairs(np.concatenate(a), np.concatenate(b)) if a else Pairs.empty(model.dim))
            for k, (a, b) in out.items()}


def separation(adapter: dict | None, positives: Pairs, negatives: Pairs) -> float:
    """Mean similarity of the positive pairs minus that of the negative pairs, once adapted."""
    from tagmatch.model.adapter import apply_adapter

    def sims(p: Pairs) -> float:
        if not len(p):
            return 0.0
        q = apply_adapter(adapter, p.query) if adapter else p.query
        return float(np.einsum("ij,ij->i", q, p.reference).mean())

    return sims(positives) - sims(negatives)


def identity_adapter(dim: int, hidden: int = 256, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"W1": (rng.normal(size=(dim, hidden)) / math.sqrt(dim)).astype(np.float32),
            "b1": np.zeros(hidden, np.float32), "W2": np.zeros((hidden, dim), np.float32),
            "b2": np.zeros(dim, np.float32)}


def _fingerprint(start: dict, positives: Pairs, negatives: Pairs, cfg: FinetuneConfig) -> str:
    """What a checkpoint belongs to: the start, the data and the settings."""
    import hashlib

    h = hashlib.blake2b(repr(cfg).encode(), digest_size=12)
    for a in [*(start[k] for k in sorted(start)), positives.query, positives.reference, negatives.query,
              negatives.reference]:
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()


def finetune(start: dict, positives: Pairs, negatives: Pairs, cfg: FinetuneConfig = FinetuneConfig(),
             on_progress: OnProgress = quiet, checkpoint: Path | None = None,
             should_stop=lambda: False) -> dict | None:
    """The adapter trained from `start` on the pairs (see the module docstring). With
    `checkpoint`, the parameters are saved there every CHECKPOINT_EVERY steps and when stopped
    (`should_stop`; then None is returned), and a run with the same start, data and settings
    resumes from it; the file is removed once the run ends."""
    import jax
    import jax.numpy as jnp
    import optax

    if len(positives) < 2:
        raise TagmatchError("fine-tuning needs at least two accepted files with their audio at hand")
    p0 = {k: jnp.asarray(v) for k, v in start.items()}
    tx = optax.adam(cfg.learning_rate)
    state = tx.init(p0)

    def adapt(p, z):
        y = z + jax.nn.gelu(z @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return y / (jnp.linalg.norm(y, axis=-1, keepdims=True) + 1e-9)

    def loss_fn(p, q, r, nq, nr):
        logits = adapt(p, q) @ r.T / cfg.temperature
        pos = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(q.shape[0])).mean()
        neg = jnp.mean(jax.nn.relu(jnp.einsum("ij,ij->i", adapt(p, nq), nr) - NEGATIVE_MARGIN) ** 2)
        stay = sum(jnp.sum((p[k] - p0[k]) ** 2) for k in p)
        return pos + neg / cfg.temperature + cfg.stay * stay

    @jax.jit
    def step(p, s, q, r, nq, nr):
        loss, grads = jax.value_and_grad(loss_fn)(p, q, r, nq, nr)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    from tagmatch import safeload
    from tagmatch.fsutil import atomic_joblib_dump

    negatives = negatives if len(negatives) else Pairs(positives.query[:1], -positives.reference[:1])
    key = _fingerprint(start, positives, negatives, cfg) if checkpoint else ""
    params, first = p0, 0
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            saved = safeload.load(checkpoint)
            if saved.get("key") == key:  # the same run: go on from there (the optimiser's moments start again)
                params, first = {k: jnp.asarray(v) for k, v in saved["params"].items()}, int(saved["step"])
        except Exception:
            pass  # unreadable: start again

    def save(done: int) -> None:
        if checkpoint is not None:
            atomic_joblib_dump({"key": key, "step": done, "params": {k: np.asarray(v) for k, v in params.items()}},
                               Path(checkpoint))

    rng = np.random.default_rng(cfg.seed + first)
    for i in range(first, cfg.steps):
        if should_stop():
            save(i)
            return None
        a = rng.integers(0, len(positives), min(cfg.batch, len(positives)))
        b = rng.integers(0, len(negatives), min(cfg.batch, len(negatives)))
        params, state, loss = step(params, state, positives.query[a], positives.reference[a],
                                   negatives.query[b], negatives.reference[b])
        if (i + 1) % CHECKPOINT_EVERY == 0:
            save(i + 1)
        if (i + 1) % 50 == 0 or i + 1 == cfg.steps:
            on_progress(Progress("fine-tuning the query adapter", i + 1, cfg.steps, loss=float(loss), unit="steps",
                                 info=f"resumed at step {first}" if first else ""))
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return {k: np.asarray(v, np.float32) for k, v in params.items()}

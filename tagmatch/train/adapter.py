"""Fitting the query adapter (`tagmatch.model.adapter`), a small residual MLP applied to query
vectors only, after the encoder is trained.

Why: a query is a degraded copy and a reference is the clean original, but the Siamese encoder
embeds both with the same weights, so it cannot correct in one direction. With the encoder frozen,
this adapter learns to move a degraded window's vector towards its clean original's: pairs are made
from the training music with the training augmentation (the clean view embedded as a store would
embed it, the degraded one as a query), and an NT-Xent loss pulls each adapted query to its own
clean vector, away from the others in the batch. It starts as the identity (the output layer is
zero) and trains at a small learning rate, so it corrects rather than re-learns.

Reference vectors are not touched: a store stays valid (the adapter is not part of the model id),
and only the calibration has to be fitted again. What it buys is measured in docs/benchmarks.md
("Query adapter").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from tagmatch.audio.augment import AugmentConfig
from tagmatch.errors import TagmatchError
from tagmatch.progress import OnProgress, Progress

PAIR_BATCH = 256  # pairs embedded per jitted call


@dataclass(frozen=True)
class AdapterConfig:
    pairs: int = 179_200  # (clean, degraded) training pairs: 700 calls, ~11 min on 2 cores (shipped model)
    # A query window's start is up to half the query hop from its aligned reference window
    # (0.16 s against a 0.32 s grid: 80 ms), more than the encoder's training shift of 50 ms.
    max_shift_s: float = 0.08
    light_share: float = 0.25  # of the pairs degraded at a fifth of the probabilities (clean-ish copies)
    hidden: int = 256
    steps: int = 3000
    batch: int = 1024
    learning_rate: float = 1e-4
    temperature: float = 0.05
    seed: int = 0


def training_pairs(model, music: list[np.ndarray], noise: list[np.ndarray] | None, cfg: AdapterConfig,
                   progress: OnProgress | None = None,
                   should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(clean, degraded) vectors [shape=(n, dim)] of random moments of `music` with `model`
    (a LoadedModel), degraded as in training (`augment.degrade`, real `noise` when given).
    Stopped (`should_stop`), it returns the pairs made so far, possibly none."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from tagmatch.audio.augment import degrade
    from tagmatch.model.embedders import encoder_parts
    from tagmatch.train.loop import AudioPool, synthetic_noise

    fc, ctx = model.feature_config, model.context_frames
    aug = replace(AugmentConfig(), max_shift_s=cfg.max_shift_s)
    crop = aug.crop_samples(fc, ctx)
    rng = np.random.default_rng(cfg.seed)
    pool = AudioPool.from_signals(music)
    noise_pool = AudioPool.from_signals(noise) if noise else synthetic_noise(rng, 120, fc.sample_rate)
    if noise_pool.lengths.max() < crop:
        noise_pool = synthetic_noise(rng, 120, fc.sample_rate)
    graphdef, params, project = encoder_parts(model)
    light = int(round(cfg.light_share * PAIR_BATCH))

    def first_window(e, x):  # a shared-kind encoder gives every window of the view; the first is ours
        z = e(x)
        return z[:, 0] if z.ndim == 3 else z

    @jax.jit
    def embed_pairs(p, key, crops, nz):
        k1, k2, k3 = jax.random.split(key, 3)
        h = crops.shape[0] - light  # the rest are lightly degraded

        def views(k, c, z, strength):
            return jax.vmap(lambda kk, cc, zz: degrade(kk, cc, zz, fc, aug, strength, ctx))(
                jax.random.split(k, c.shape[0]), c, z)

        clean = views(k1, crops, nz, 0.0)  # shift 0, no damage: the reference window itself
        degraded = jnp.concatenate([views(k2, crops[:h], nz[:h], 1.0), views(k3, crops[h:], nz[h:], 0.2)])
        e = nnx.merge(graphdef, p)
        return project(first_window(e, clean)), project(first_window(e, degraded))

    calls = max(1, math.ceil(cfg.pairs / PAIR_BATCH))
    clean, degraded = [], []
    for i in range(calls):
        if should_stop and should_stop():
            break
        crops = pool.crops(rng, PAIR_BATCH, crop, min_rms=1e-3)
        nz = noise_pool.crops(rng, PAIR_BATCH, crop)
        a, b = embed_pairs(params, jax.random.PRNGKey(cfg.seed * 100_003 + i), crops, nz)
        clean.append(np.asarray(a))
        degraded.append(np.asarray(b))
        if progress:
            progress(Progress("query adapter: pairs", i + 1, calls, unit="batches",
                              info=f"{(i + 1) * PAIR_BATCH} (clean, degraded) pairs"))
    if not clean:
        return np.zeros((0, model.dim), np.float32), np.zeros((0, model.dim), np.float32)
    return np.concatenate(clean)[: cfg.pairs], np.concatenate(degraded)[: cfg.pairs]


def fit_adapter(clean: np.ndarray, degraded: np.ndarray, cfg: AdapterConfig = AdapterConfig(),
                progress: OnProgress | None = None) -> dict:
    """Fit the adapter on pairs; returns its parameters as numpy arrays (W1, b1, W2, b2)."""
    import jax
    import jax.numpy as jnp
    import optax

    clean, degraded = np.asarray(clean, np.float32), np.asarray(degraded, np.float32)
    n, dim = clean.shape
    if n < 2:
        raise TagmatchError("the query adapter needs at least two training pairs")
    batch = min(cfg.batch, n)
    key = jax.random.PRNGKey(cfg.seed)
    params = {"W1": jax.random.normal(key, (dim, cfg.hidden)) / math.sqrt(dim), "b1": jnp.zeros(cfg.hidden),
              "W2": jnp.zeros((cfg.hidden, dim)), "b2": jnp.zeros(dim)}
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, min(100, max(1, cfg.steps // 10)),
                                                  max(cfg.steps, 2), cfg.learning_rate * 0.02)
    tx = optax.adamw(schedule, weight_decay=1e-4)
    state = tx.init(params)

    def adapt(p, z):
        y = z + jax.nn.gelu(z @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return y / (jnp.linalg.norm(y, axis=-1, keepdims=True) + 1e-9)

    def loss_fn(p, q, r):
        logits = adapt(p, q) @ r.T / cfg.temperature
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(q.shape[0])).mean()

    @jax.jit
    def step(p, s, q, r):
        loss, grads = jax.value_and_grad(loss_fn)(p, q, r)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(cfg.seed)
    for i in range(cfg.steps):
        idx = rng.choice(n, batch, replace=False) if batch == n else rng.integers(0, n, batch)
        params, state, loss = step(params, state, degraded[idx], clean[idx])
        if progress and ((i + 1) % 100 == 0 or i + 1 == cfg.steps):
            progress(Progress("query adapter: fitting", i + 1, cfg.steps, loss=float(loss), unit="steps",
                              info=f"loss {float(loss):.3f}"))
    return {k: np.asarray(v, np.float32) for k, v in params.items()}


def fit_query_adapter(model_path, music: list[np.ndarray], noise: list[np.ndarray] | None,
                      cfg: AdapterConfig = AdapterConfig(), *, note: str = "",
                      on_progress: OnProgress | None = None,
                      should_stop: Callable[[], bool] | None = None) -> int:
    """Make pairs with the model in `model_path`, fit its adapter and store it there (the
    calibration is reset; the id stays). Returns the number of pairs, 0 when stopped first (the
    model is then left as it was)."""
    from tagmatch.model.modelfile import load_model, set_query_adapter

    clean, degraded = training_pairs(load_model(model_path), music, noise, cfg, on_progress, should_stop)
    if should_stop and should_stop():
        return 0
    adapter = fit_adapter(clean, degraded, cfg, on_progress)
    set_query_adapter(model_path, adapter, note=f"{note}{len(clean)} pairs, {cfg.steps} steps, seed {cfg.seed}")
    return len(clean)

"""Siamese training: two degraded views of the same moment -> nearby embeddings.

flax/examples style: a frozen `TrainConfig`, pure-ish step functions under `nnx.jit`, and a
`train()` loop that checkpoints (atomically) so a long run resumes where it stopped. No labels are
needed: any folder of audio is training data.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from tagmatch.audio.decode import load_audio
from tagmatch.audio.degrade import coloured_noise
from tagmatch.audio.augment import AugmentConfig
from tagmatch.errors import AudioReadError, TagmatchError
from tagmatch.audio.features import FeatureConfig
from tagmatch.fsutil import atomic_joblib_dump
from tagmatch.model.encoder import ModelConfig
from tagmatch.progress import OnProgress, Progress
from tagmatch import safeload

LOSSES = ("ntxent", "pair-bce")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4000
    batch_pairs: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    temperature: float = 0.05
    loss: str = "ntxent"  # or "pair-bce": the seed's distance + sigmoid formulation
    clean_view_strength: float = 0.2  # the reference-like view is mostly clean
    seed: int = 0
    checkpoint_every: int = 100
    # Hard negatives: this share of each batch comes from the tracks of one source (a soundtrack:
    # same composer, instruments and mix), so in-batch negatives include similar-sounding songs,
    # which is what unknown songs that look like library songs are. Needs `sources` in train().
    same_source_share: float = 0.0
    # Distillation: with a teacher model (train(teacher=...)), add this weight times the cosine
    # distance of both of the student's views to the teacher's embedding of the clean view. A
    # smaller student learns the teacher's geometry in far fewer steps than from the views alone.
    distill_weight: float = 0.0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class AudioPool:
    """Decoded audio in one array, for fast random crops. `starts`/`lengths` index tracks."""

    audio: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_signals(cls, signals: list[np.ndarray]) -> "AudioPool":
        lengths = np.array([len(s) for s in signals], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return cls(np.concatenate(signals).astype(np.float32), starts, lengths)

    def crops(self, rng: np.random.Generator, n: int, size: int, min_rms: float = 0.0,
              tracks: np.ndarray | None = None) -> np.ndarray:
        """`n` random crops of `size` samples, uniform over positions (of `tracks` only, when
        given: a boolean mask), skipping near-silence."""
        ok = self.lengths >= size
        if tracks is not None:
            ok = ok & tracks
        if not ok.any():
            raise TagmatchError(f"no training file is longer than {size} samples")
        valid = np.where(ok, self.lengths - size + 1, 0)
        cum = np.cumsum(valid)
        out = np.empty((n, size), np.float32)
        filled = 0
        for _ in range(50):
            pos = rng.integers(0, cum[-1], size=2 * (n - filled))
            track = np.searchsorted(cum, pos, side="right")
            local = pos - np.concatenate([[0], cum[:-1]])[track]
            idx = (self.starts[track] + local)[:, None] + np.arange(size)[None]
            c = self.audio[idx]
            keep = c[np.sqrt((c**2).mean(axis=1)) > min_rms][: n - filled]
            out[filled : filled + len(keep)] = keep
            filled += len(keep)
            if filled == n:
                return out
        raise TagmatchError("training audio is almost all silence")


def synthetic_noise(rng: np.random.Generator, seconds: float, sr: int) -> AudioPool:
    """White, pink and brown noise, for when no real background recordings are given."""
    n = int(seconds * sr)
    return AudioPool.from_signals([coloured_noise(rng, n, sr, exponent) for exponent in (0.0, 1.0, 2.0)])


def decode_folder(paths: list[Path], sr: int, on_progress: OnProgress | None = None,
                  n_jobs: int = 2, should_stop: Callable[[], bool] | None = None) -> list[np.ndarray]:
    """Decode files in parallel (joblib); undecodable ones are reported (Progress "decoding", with
    the error) and skipped."""
    from joblib import Parallel, delayed

    def one(p):
        try:
            return load_audio(p, sr), None
        except AudioReadError as exc:
            return None, exc.reason

    signals = []
    decoded = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(one)(p) for p in paths)
    for i, (p, (y, err)) in enumerate(zip(paths, decoded), 1):
        if should_stop and should_stop():
            break
        if on_progress:
            on_progress(Progress("decoding", i, len(paths), str(p), err))
        if y is not None:
            signals.append(y)
    return signals


def make_train_step(cfg: TrainConfig, teacher=None):
    """Build the jitted step: augment both views, embed, loss, update. Returns (loss, top1).
    `teacher`: a model (a `Siamese` wrapper) whose embedding of the clean view the student is
    pulled towards (cfg.distill_weight); it is not trained. It reads its own context after the
    window (no more than the student's views hold)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from tagmatch.audio.augment import degrade

    feat, aug = cfg.features, cfg.augment
    ctx = cfg.model.context_frames

    def views(key, crops, noise_a, noise_b):
        n = crops.shape[0]
        ka, kb = jax.random.split(key)
        va = jax.vmap(lambda k, c, z: degrade(k, c, z, feat, aug, cfg.clean_view_strength, ctx))
        vb = jax.vmap(lambda k, c, z: degrade(k, c, z, feat, aug, 1.0, ctx))
        return va(jax.random.split(ka, n), crops, noise_a), vb(jax.random.split(kb, n), crops, noise_b)

    def loss_fn(model, xa, xb, target):
        n = xa.shape[0]
        z = model.embed_views(jnp.concatenate([xa, xb]))
        za, zb = z[:n], z[n:]
        sim = za @ zb.T
        labels = jnp.arange(n)
        if cfg.loss == "ntxent":
            logits = sim / cfg.temperature
            loss = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                          + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())
        else:  # pair-bce: positives on the diagonal, one shifted negative per positive
            pos = model.pair_logit(za, zb)
            neg = model.pair_logit(za, jnp.roll(zb, 1, axis=0))
            logits = jnp.concatenate([pos, neg])
            targets = jnp.concatenate([jnp.ones(n), jnp.zeros(n)])
            loss = optax.sigmoid_binary_cross_entropy(logits, targets).mean()
        if target is not None:
            loss = loss + cfg.distill_weight * (2.0 - (za * target).sum(-1).mean() - (zb * target).sum(-1).mean()) / 2
        top1 = (sim.argmax(axis=1) == labels).mean()
        return loss, top1

    @nnx.jit
    def train_step(model, optimizer, crops, noise_a, noise_b, key, teacher=None):
        xa, xb = views(key, crops, noise_a, noise_b)
        target = None if teacher is None else jax.lax.stop_gradient(
            teacher.embed_views(xa[:, : feat.window_frames + teacher.context_frames]))
        (loss, top1), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, xa, xb, target)
        optimizer.update(model, grads)
        return loss, top1

    if teacher is None:
        return train_step
    return lambda model, optimizer, crops, noise_a, noise_b, key: train_step(
        model, optimizer, crops, noise_a, noise_b, key, teacher)


def make_optimizer(model, cfg: TrainConfig):
    import optax
    from flax import nnx

    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(cfg.warmup_steps, max(1, cfg.steps // 10)), max(cfg.steps, 2),
        end_value=cfg.learning_rate * 0.02)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=cfg.weight_decay))
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def train(
    music: list[np.ndarray],
    out: Path,
    cfg: TrainConfig,
    *,
    noise: list[np.ndarray] | None = None,
    checkpoint: Path | None = None,
    progress: OnProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    meta: dict | None = None,
    init_from: Path | None = None,
    sources: list[str] | None = None,
    teacher: Path | None = None,
) -> dict:
    """Train an encoder on decoded `music` and save it to `out` (atomically).

    With `checkpoint`, state is saved there every `checkpoint_every` steps and a run resumes
    from it. `init_from` (a model file with the same configs) starts a fresh run from its
    encoder weights instead of random ones: fine-tuning, e.g. the default model on your library.
    `sources` names where each track of `music` comes from (an album, a soundtrack): with
    cfg.same_source_share > 0, that share of each batch is drawn from one source's tracks.
    `teacher` (a model file with the same features and output dimension, any architecture):
    distil it into this model, with weight cfg.distill_weight.
    Returns a summary (steps, final loss, history).
    """
    import jax
    from flax import nnx

    from tagmatch.model.encoder import Siamese
    from tagmatch.model.modelfile import save_model

    if cfg.loss not in LOSSES:
        raise TagmatchError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
    feat = cfg.features
    pool = AudioPool.from_signals(music)
    rng0 = np.random.default_rng(cfg.seed)
    noise_pool = AudioPool.from_signals(noise) if noise else synthetic_noise(rng0, 120, feat.sample_rate)
    crop = cfg.augment.crop_samples(feat, cfg.model.context_frames)
    if noise_pool.lengths.max() < crop:
        noise_pool = synthetic_noise(rng0, 120, feat.sample_rate)

    model = Siamese(feat, cfg.model, rngs=nnx.Rngs(cfg.seed))
    optimizer = make_optimizer(model, cfg)
    start, history = 0, []
    if init_from is not None:
        _init_encoder(model, Path(init_from), cfg)
    if checkpoint and Path(checkpoint).exists():
        ck = safeload.load(checkpoint)
        if ck.get("config") != _config_key(cfg):
            raise TagmatchError(f"checkpoint {checkpoint} was made with another configuration")
        _restore(model, ck["model"])
        _restore(optimizer, ck["optimizer"])
        start, history = ck["step"], ck["history"]

    # A shared-kind model's reference windows sit on its stride grid: one pass over each track.
    saved_feat = replace(feat, ref_hop_frames=cfg.model.stride) if cfg.model.kind == "shared" else feat

    def export(done: int) -> dict:
        params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model.encoder, nnx.Param)))
        summary = {"steps": done, "loss": cfg.loss, "final_loss": history[-1][1] if history else None,
                   "history": history[-200:], "train_config": _config_key(cfg), **(meta or {})}
        summary["model_id"] = save_model(out, feature_config=saved_feat, model_config=cfg.model,
                                         params=params, meta=summary)
        return summary

    source_masks = []
    if cfg.same_source_share > 0:
        if not sources or len(sources) != len(music):
            raise TagmatchError("same_source_share needs a source name for every training track")
        names = np.array(sources)
        # sources with at least two long-enough tracks can give negatives of their own
        source_masks = [m for m in (names == u for u in np.unique(names)) if (m & (pool.lengths >= crop)).sum() >= 2]
    teacher_model = None
    if teacher is not None:
        teacher_model, teacher_id = _teacher(Path(teacher), cfg)
        meta = {**(meta or {}), "teacher": teacher_id}  # recorded in the model file
    step_fn = make_train_step(cfg, teacher_model)
    t_last, step = time.perf_counter(), start
    for step in range(start, cfg.steps):
        if should_stop and should_stop():
            break
        rng = np.random.default_rng([cfg.seed, step])
        crops = batch_crops(pool, rng, cfg, crop, source_masks)
        na = noise_pool.crops(rng, cfg.batch_pairs, crop)
        nb = noise_pool.crops(rng, cfg.batch_pairs, crop)
        key = jax.random.fold_in(jax.random.key(cfg.seed), step)
        loss, top1 = step_fn(model, optimizer, crops, na, nb, key)
        loss, top1 = float(loss), float(top1)
        if not np.isfinite(loss):
            raise TagmatchError(f"training diverged at step {step} (loss {loss})")
        history.append((step + 1, loss, top1))
        now = time.perf_counter()
        if progress:
            rate = cfg.batch_pairs / max(now - t_last, 1e-9)
            progress(Progress("training", step + 1, cfg.steps, loss=loss, unit="steps",
                              info=f"loss {loss:.3f}  top1 {top1:.2f}  {rate:.0f} pairs/s"))
        t_last = now
        if checkpoint and (step + 1) % cfg.checkpoint_every == 0:
            _save_checkpoint(checkpoint, cfg, model, optimizer, step + 1, history)
            export(step + 1)  # the model file follows the checkpoints, so a stopped run is usable
    else:
        step = cfg.steps
    done = step  # a stop leaves `step` at the first step not taken
    if checkpoint and done > start:
        _save_checkpoint(checkpoint, cfg, model, optimizer, done, history)
    return export(done)


def batch_crops(pool: AudioPool, rng: np.random.Generator, cfg: TrainConfig, crop: int,
                source_masks: list[np.ndarray]) -> np.ndarray:
    """A batch of crops: uniform over the music, except `cfg.same_source_share` of it drawn from
    one source (chosen in proportion to its tracks), the hard negatives of the others."""
    n_hard = int(round(cfg.same_source_share * cfg.batch_pairs)) if source_masks else 0
    if n_hard == 0:
        return pool.crops(rng, cfg.batch_pairs, crop, min_rms=1e-3)
    sizes = np.array([m.sum() for m in source_masks], np.float64)
    mask = source_masks[rng.choice(len(source_masks), p=sizes / sizes.sum())]
    return np.concatenate([pool.crops(rng, n_hard, crop, min_rms=1e-3, tracks=mask),
                           pool.crops(rng, cfg.batch_pairs - n_hard, crop, min_rms=1e-3)])


def _teacher(path: Path, cfg: TrainConfig):
    """The model file at `path` as a `Siamese` wrapper (its projection is not used: the student
    learns the encoder's own output) and its id. Any kind teaches any kind whose training views
    carry at least the context it reads."""
    from flax import nnx

    from tagmatch.model.encoder import Siamese
    from tagmatch.model.modelfile import load_model

    if cfg.distill_weight <= 0:
        raise TagmatchError("a teacher needs distill_weight > 0")
    t = load_model(path)
    if replace(t.feature_config, ref_hop_frames=0) != replace(cfg.features, ref_hop_frames=0):
        raise TagmatchError(f"{path}: its features differ from this training's; it cannot teach this model")
    if t.model_config.dim != cfg.model.dim:
        raise TagmatchError(f"{path}: it embeds in {t.model_config.dim} dimensions, this model in {cfg.model.dim}")
    if t.model_config.context_frames > cfg.model.context_frames:
        raise TagmatchError(f"{path}: it reads more context than this model's training views hold")
    wrapper = Siamese(t.feature_config, t.model_config, rngs=nnx.Rngs(0))
    _restore(wrapper.encoder, t.params)
    return wrapper, t.model_id


def _init_encoder(model, path: Path, cfg: TrainConfig) -> None:
    """Copy the encoder weights of the model file at `path` into `model` (configs must agree)."""
    from tagmatch.model.modelfile import load_model

    start = load_model(path)
    if start.feature_config != cfg.features or start.model_config != cfg.model:
        raise TagmatchError(f"{path}: its features or architecture differ from this training's; "
                            "it cannot be fine-tuned with this configuration")
    _restore(model.encoder, start.params)


def _config_key(cfg: TrainConfig) -> dict:
    d = asdict(replace(cfg, checkpoint_every=0))
    d.pop("steps")
    return d


def _save_checkpoint(path: Path, cfg, model, optimizer, step: int, history: list) -> None:
    import jax
    from flax import nnx

    pure = lambda obj: jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(obj)))  # noqa: E731
    atomic_joblib_dump({"config": _config_key(cfg), "step": step, "history": history,
                        "model": pure(model), "optimizer": pure(optimizer)}, Path(path))


def _restore(obj, pure: dict) -> None:
    from flax import nnx

    state = nnx.state(obj)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(obj, state)

"""The encoders: log-mel windows -> L2-normalised embeddings (Flax NNX).

Shared weights make them Siamese: training passes two views of the same moment through one
module. The seed's encoder (four 3x3 convolutions at full resolution + global max pooling)
embeds only ~60 windows/s on a 2-core CPU; stride-2 convolutions with LayerNorm + GELU and a
flatten into a dense projection keep frequency layout (which max pooling throws away) and run at
thousands of windows/s. See docs/model.md for the measurements behind this choice.

Two kinds (`ModelConfig.kind`):
- "window": each ~1 s window on its own, standardised as a whole (`Encoder`).
- "shared": the convolutions run once over a long stretch of log-mel and a window head reads
  every `stride`-th position (`SharedEncoder`). Overlapping windows share their convolution
  work, so a window every 0.32 s costs ~4x less per second of audio than the window kind at
  0.25 s. Its input normalisation is per frame (local), which is what lets the work be shared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from tagmatch.audio.features import FeatureConfig


@dataclass(frozen=True)
class ModelConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128, 128)  # one stride-2 3x3 conv each
    hidden: int = 256
    dim: int = 128  # embedding size
    kind: str = "window"  # or "shared" (see the module docstring)

    @property
    def stride(self) -> int:
        """Frames between the positions of the last convolution."""
        return 2 ** len(self.channels)

    @property
    def context_frames(self) -> int:
        """Log-mel frames after a window's end that its embedding reads (the shared kind's
        convolutions look ahead; the window kind reads its window only)."""
        return self.stride if self.kind == "shared" else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        d.setdefault("kind", "window")  # files from before there were two kinds
        return cls(**d)


def standardise(x: jax.Array) -> jax.Array:
    """Zero mean, unit variance per window: removes gain, so loudness never matters."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return (x - mean) / (std + 1e-3)


def conv_stack(cfg: ModelConfig, rngs: nnx.Rngs) -> tuple[nnx.List, nnx.List]:
    """The stride-2 3x3 convolutions and their LayerNorms, shared by both kinds."""
    convs, norms, c_in = [], [], 1
    for c_out in cfg.channels:
        convs.append(nnx.Conv(c_in, c_out, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs))
        norms.append(nnx.LayerNorm(c_out, rngs=rngs))
        c_in = c_out
    return nnx.List(convs), nnx.List(norms)


class Encoder(nnx.Module):
    """x [shape=(batch, window_frames, n_mels)] log-mel -> [shape=(batch, dim)], unit norm."""

    def __init__(self, feat: FeatureConfig, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.convs, self.norms = conv_stack(cfg, rngs)
        c_in = cfg.channels[-1]
        t, f = feat.window_frames, feat.n_mels
        for _ in cfg.channels:
            t, f = -(-t // 2), -(-f // 2)
        self.hidden = nnx.Linear(t * f * c_in, cfg.hidden, rngs=rngs)
        self.out = nnx.Linear(cfg.hidden, cfg.dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = standardise(x)[..., None]
        for conv, norm in zip(self.convs, self.norms):
            h = nnx.gelu(norm(conv(h)))
        h = h.reshape(h.shape[0], -1)
        h = self.out(nnx.gelu(self.hidden(h)))
        return h / (jnp.linalg.norm(h, axis=-1, keepdims=True) + 1e-6)


class SharedEncoder(nnx.Module):
    """log-mel [shape=(batch, frames, n_mels)], frames a multiple of `stride` -> [shape=(batch,
    frames / stride - window_frames / stride, dim)]: the window starting at every `stride`-th
    frame whose window and `context_frames` after it lie inside the input.

    Each stride-2 "SAME" convolution on an even length reads positions 2i..2i+2, so position j of
    the last one reads frames [stride * j, stride * j + 2 * stride - 2]: only forwards. A window's
    embedding therefore depends on its own frames and the `stride - 1` after it, never on where
    the input started, and one pass over a track gives the same vectors as one pass per window.
    Gain is removed per frame (minus its mean over bands); the loudness contour over the window,
    which that throws away, goes to the head separately, centred per window.
    """

    CONTOUR_POOL = 4  # frames per contour value

    def __init__(self, feat: FeatureConfig, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if feat.window_frames % cfg.stride or feat.n_mels % cfg.stride:
            raise ValueError(f"window_frames and n_mels must be multiples of {cfg.stride}")
        self.convs, self.norms = conv_stack(cfg, rngs)
        c_in = cfg.channels[-1]
        self.stride = cfg.stride
        self.span = feat.window_frames // cfg.stride  # positions per window
        contour = feat.window_frames // self.CONTOUR_POOL
        self.hidden = nnx.Linear(self.span * (feat.n_mels // cfg.stride) * c_in + contour, cfg.hidden, rngs=rngs)
        self.out = nnx.Linear(cfg.hidden, cfg.dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.top(*self.bottom(x, 0), 0)

    def bottom(self, x: jax.Array, layers: int) -> tuple[jax.Array, jax.Array]:
        """The per-frame level [shape=(batch, frames)] and the output of the first `layers`
        convolutions: positions every 2**layers frames. Windows whose starts differ by a multiple
        of 2**layers share it (a query's phases on the stride grid: `tagmatch.model.embedders`)."""
        level = x.mean(axis=-1)
        h = (x - level[..., None])[..., None]
        for conv, norm in list(zip(self.convs, self.norms))[:layers]:
            h = nnx.gelu(norm(conv(h)))
        return h, level

    def top(self, h: jax.Array, level: jax.Array, layers: int) -> jax.Array:
        """The rest after `bottom(x, layers)`: the other convolutions and the window head."""
        for conv, norm in list(zip(self.convs, self.norms))[layers:]:
            h = nnx.gelu(norm(conv(h)))
        b, positions = h.shape[:2]
        n = positions - self.span
        h = h.reshape(b, positions, -1)
        z = jnp.concatenate([h[:, i : i + n] for i in range(self.span)], axis=-1)
        per = self.stride // self.CONTOUR_POOL
        pooled = level.reshape(b, positions, per, self.CONTOUR_POOL).mean(-1)
        contour = jnp.concatenate([pooled[:, i : i + n] for i in range(self.span)], axis=-1)
        contour = contour - contour.mean(axis=-1, keepdims=True)
        z = self.out(nnx.gelu(self.hidden(jnp.concatenate([z, contour], axis=-1))))
        return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-6)


def make_encoder(feat: FeatureConfig, cfg: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
    if cfg.kind == "window":
        return Encoder(feat, cfg, rngs=rngs)
    if cfg.kind == "shared":
        return SharedEncoder(feat, cfg, rngs=rngs)
    raise ValueError(f"unknown encoder kind {cfg.kind!r}")


class Siamese(nnx.Module):
    """Training wrapper: one shared encoder for both views, plus the seed's pair head.

    The pair head (|a - b| -> dense -> sigmoid) is used only by the `pair-bce` loss; the
    contrastive loss compares embeddings directly. Only the encoder is saved for use.
    """

    def __init__(self, feat: FeatureConfig, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.encoder = make_encoder(feat, cfg, rngs=rngs)
        self.pair_head = nnx.Linear(cfg.dim, 1, rngs=rngs)
        self.shared = cfg.kind == "shared"
        self.context_frames = cfg.context_frames  # read after the window: a teacher's crops end there

    def embed_views(self, x: jax.Array) -> jax.Array:
        """Training crops [shape=(batch, window_frames + context_frames, n_mels)] -> one
        embedding each [shape=(batch, dim)]: the window at the crop's start."""
        z = self.encoder(x)
        return z[:, 0] if self.shared else z

    def pair_logit(self, za: jax.Array, zb: jax.Array) -> jax.Array:
        return self.pair_head(jnp.abs(za - zb))[:, 0]

"""The encoder: a log-mel window -> an L2-normalised embedding (Flax NNX).

Shared weights make it Siamese: training passes two views of the same moment through this one
module. The seed's encoder (four 3x3 convolutions at full resolution + global max pooling)
embeds only ~60 windows/s on a 2-core CPU; stride-2 convolutions with LayerNorm + GELU and a
flatten into a dense projection keep frequency layout (which max pooling throws away) and run at
thousands of windows/s. See docs/model.md for the measurements behind this choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from tagmatch.features import FeatureConfig


@dataclass(frozen=True)
class ModelConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128, 128)  # one stride-2 3x3 conv each
    hidden: int = 256
    dim: int = 128  # embedding size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


def standardise(x: jax.Array) -> jax.Array:
    """Zero mean, unit variance per window: removes gain, so loudness never matters."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return (x - mean) / (std + 1e-3)


class Encoder(nnx.Module):
    """x [shape=(batch, window_frames, n_mels)] log-mel -> [shape=(batch, dim)], unit norm."""

    def __init__(self, feat: FeatureConfig, cfg: ModelConfig, *, rngs: nnx.Rngs):
        convs, norms = [], []
        c_in = 1
        for c_out in cfg.channels:
            convs.append(nnx.Conv(c_in, c_out, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs))
            norms.append(nnx.LayerNorm(c_out, rngs=rngs))
            c_in = c_out
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
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


def count_params(model: nnx.Module) -> int:
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


class Siamese(nnx.Module):
    """Training wrapper: one shared encoder for both views, plus the seed's pair head.

    The pair head (|a - b| -> dense -> sigmoid) is used only by the `pair-bce` loss; the
    contrastive loss compares embeddings directly. Only the encoder is saved for use.
    """

    def __init__(self, feat: FeatureConfig, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.encoder = Encoder(feat, cfg, rngs=rngs)
        self.pair_head = nnx.Linear(cfg.dim, 1, rngs=rngs)

    def pair_logit(self, za: jax.Array, zb: jax.Array) -> jax.Array:
        return self.pair_head(jnp.abs(za - zb))[:, 0]

"""The query adapter at query time: a small residual MLP that moves a degraded query window's
vector towards where its clean original lies (fitted by `tagmatch.train.adapter`; numpy here, so
that applying it needs no JAX)."""

from __future__ import annotations

import math

import numpy as np


def gelu(x: np.ndarray) -> np.ndarray:
    """jax.nn.gelu's default (tanh) form, so numpy and the training code agree."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def apply_adapter(params: dict, z: np.ndarray) -> np.ndarray:
    """Unit query vectors [shape=(n, dim)] -> adapted unit vectors (float32)."""
    z = np.asarray(z, np.float32)
    y = z + gelu(z @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
    return (y / (np.linalg.norm(y, axis=-1, keepdims=True) + 1e-9)).astype(np.float32)

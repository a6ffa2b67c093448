"""Embedding on the CPU: a model's encoder jitted once per shape, for the window kind (batches of
cut windows) and the shared kind (a pass over log-mel whose overlapping windows share their
convolutions), and JAX's compile cache kept on disk between processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagmatch.audio.features import LOG_EPS

if TYPE_CHECKING:
    from tagmatch.model.modelfile import LoadedModel


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


def encoder_parts(m: LoadedModel):
    """(graphdef, params, project): the model's encoder split for jax.jit, and its output
    projection as a function of the encoder's vectors (re-normalised; identity without one)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from tagmatch.model.encoder import make_encoder

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


def make_embedder(m: LoadedModel):
    """A jitted encoder at a fixed batch shape (one compile), padding the last batch."""
    import jax
    from flax import nnx

    graphdef, params, project = encoder_parts(m)
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
SHARED_MAX_WINDOWS = 128


def make_shared_embedder(m: LoadedModel):
    """embed_at for the shared kind. Windows on the stride grid (a reference track) take one pass
    of the stack. Windows on several phases of it (a query every stride / 2 frames) share the
    first convolutions: phases 16 frames apart share the four whose positions are 16 frames
    apart, and only the last one and the head run once per phase. Long inputs go in chunks of at most
    `SHARED_MAX_WINDOWS` windows, overlapping by what a window reads past its start. Every
    window gets the vector a pass over it alone (with its context) would give (tested)."""
    import math
    from functools import partial

    import jax
    import jax.numpy as jnp
    from flax import nnx

    fc, mc = m.feature_config, m.model_config
    graphdef, params, project = encoder_parts(m)
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
        for j0 in range(int(pos.min()), int(pos.max()) + 1, SHARED_MAX_WINDOWS):
            n = min(SHARED_MAX_WINDOWS, int(pos.max()) + 1 - j0)
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

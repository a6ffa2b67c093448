"""Encoder speed per second of audio: the shipped per-window encoder against a shared-stack
prototype (untrained), to size the next architecture (docs/model.md, "Next").

The shipped encoder embeds each 0.96 s window on its own, every 0.25 s, so every log-mel frame
goes through the convolutions ~4 times. The prototype runs the same five stride-2 convolutions
once over a whole chunk of log-mel (each frame once) and puts a window head (dense 256 -> 128)
on every 3 consecutive output positions: a window every 0.32 s. Its input is normalised per frame
(mean over bands), which removes gain like the shipped per-window standardisation but is local,
so the stack can be shared. Only speed is measured here: it is not trained.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def best_cpu(fn, reps: int) -> float:
    """Best of 3 runs of `reps` calls: CPU seconds per call."""
    fn()
    runs = []
    for _ in range(3):
        c = time.process_time()
        for _ in range(reps):
            fn()
        runs.append((time.process_time() - c) / reps)
    return min(runs)


def shared_stack(channels=(16, 32, 64, 128, 128), hidden=256, dim=128):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class SharedStack(nnx.Module):
        def __init__(self, *, rngs: nnx.Rngs):
            convs, norms, c_in = [], [], 1
            for c in channels:
                convs.append(nnx.Conv(c_in, c, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs))
                norms.append(nnx.LayerNorm(c, rngs=rngs))
                c_in = c
            self.convs, self.norms = nnx.List(convs), nnx.List(norms)
            self.hidden = nnx.Linear(3 * 2 * c_in, hidden, rngs=rngs)
            self.out = nnx.Linear(hidden, dim, rngs=rngs)

        def __call__(self, S):  # (1, T, 64) -> (T / 32 - 2, dim)
            h = (S - S.mean(axis=-1, keepdims=True))[..., None]
            for conv, norm in zip(self.convs, self.norms):
                h = nnx.gelu(norm(conv(h)))
            h = h[0]
            n = h.shape[0] - 2
            z = jnp.concatenate([h[i : n + i] for i in range(3)], axis=1).reshape(n, -1)
            z = self.out(nnx.gelu(self.hidden(z)))
            return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-6)

    graphdef, state = nnx.split(SharedStack(rngs=nnx.Rngs(0)))
    run = jax.jit(lambda st, S: nnx.merge(graphdef, st)(S))
    return lambda S: np.asarray(run(state, S))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunk-s", type=int, nargs="+", default=[10, 20, 60], help="log-mel chunk lengths")
    args = ap.parse_args(argv)
    from tagmatch.modelio import load_model
    from tagmatch.threads import one_compute_thread

    one_compute_thread()  # as `tagmatch index` runs the encoder
    model = load_model()
    fc = model.feature_config
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((32, fc.window_frames, fc.n_mels)).astype(np.float32)
    per_window = best_cpu(lambda: model.embed(windows), 50) / 32
    per_s = per_window / (fc.ref_hop_frames * fc.frame_seconds)
    print(f"shipped, per window: {1e3 * per_window:.3f} ms a window, {1e3 * per_s:.3f} ms per second of audio "
          f"(a window every {fc.ref_hop_frames * fc.frame_seconds:g} s)")
    embed = shared_stack()
    for seconds in args.chunk_s:
        frames = int(seconds / fc.frame_seconds) // 32 * 32
        S = rng.standard_normal((1, frames, fc.n_mels)).astype(np.float32)
        t = best_cpu(lambda: embed(S), 20)
        print(f"shared stack, {seconds} s chunks: {1e3 * t / seconds:.3f} ms per second of audio "
              f"({frames // 32 - 2} windows a chunk, every 0.32 s): {per_s * seconds / t:.1f}x less")
    return 0


if __name__ == "__main__":
    sys.exit(main())

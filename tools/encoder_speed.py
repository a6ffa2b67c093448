"""Encoder CPU per second of audio, one thread: a model (the shipped one, shared kind, by default)
against one of the other kind with the same channels (`--other MODEL`, else untrained weights:
speed does not depend on them), on the reference grid and on a query grid.

The window kind embeds each 0.96 s window on its own (reference every `ref_hop_frames`, query
every 0.2 s), so every log-mel frame goes through the convolutions ~4-5 times. The shared kind
runs them once over a stretch of log-mel (reference: a window every 0.32 s), and a query's two
phases 0.16 s apart share the first four convolutions (tagmatch/model/modelfile.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

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


def other_kind(like):
    """A model of the other kind with `like`'s channels and random weights, on that kind's
    reference grid (shared: its stride; window: 0.25 s, as the previous default)."""
    from tagmatch.model.modelfile import untrained_model

    kind = "window" if like.model_config.kind == "shared" else "shared"
    mc = replace(like.model_config, kind=kind)
    hop = mc.stride if kind == "shared" else int(round(0.25 / like.feature_config.frame_seconds))
    return untrained_model(replace(like.feature_config, ref_hop_frames=hop), mc, projection=like.projection)


def per_second(model, S: np.ndarray, hop: int, reps: int) -> float:
    """CPU ms per second of audio to embed the windows of S every `hop` frames."""
    fc = model.feature_config
    starts = np.arange(0, len(S) - fc.window_frames + 1, hop)
    return 1e3 * best_cpu(lambda: model.embed_at(S, starts), reps) / (len(S) * fc.frame_seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model file, either kind (default: the shipped one)")
    ap.add_argument("--other", type=Path, help="a model of the other kind (default: untrained, same channels)")
    args = ap.parse_args(argv)
    from tagmatch.model.modelfile import load_model
    from tagmatch.threads import one_compute_thread

    one_compute_thread()  # as `tagmatch index` runs the encoder
    model = load_model(args.model)
    other = load_model(args.other) if args.other else other_kind(model)
    fc = model.feature_config
    rng = np.random.default_rng(0)
    track = (rng.standard_normal((6000, fc.n_mels)) - 5).astype(np.float32)  # 60 s
    fragment = track[:1032]  # a 10 s query fragment and its context
    for model in sorted((model, other), key=lambda m: m.model_config.kind != "window"):
        name = model.model_config.kind
        ref_hop = model.feature_config.ref_hop_frames
        q_hop = model.default_query_hop_frames()
        ref = per_second(model, track, ref_hop, 5)
        query = per_second(model, fragment, q_hop, 20)
        print(f"{name}: reference (a window every {ref_hop * fc.frame_seconds:g} s) {ref:.3f} ms per second of "
              f"audio; query (every {q_hop * fc.frame_seconds:g} s) {query:.3f} ms per second, "
              f"{query * 10:.1f} ms per 10 s fragment", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Encoder CPU per second of audio, one thread: a window-kind model (the shipped one by default)
against a shared-kind model of the same channels (`--shared MODEL`, else untrained weights:
speed does not depend on them), on the reference grid and on a query grid.

The window kind embeds each 0.96 s window on its own (reference every `ref_hop_frames`, query
every 0.2 s), so every log-mel frame goes through the convolutions ~4-5 times. The shared kind
runs them once over a stretch of log-mel (reference: a window every 0.32 s), and a query's two
phases 0.16 s apart share the first four convolutions (tagmatch/modelio.py).
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


def untrained_shared(like):
    """A shared-kind model with `like`'s channels and random weights."""
    from tagmatch.modelio import untrained_model

    mc = replace(like.model_config, kind="shared")
    return untrained_model(replace(like.feature_config, ref_hop_frames=mc.stride), mc, projection=like.projection)


def per_second(model, S: np.ndarray, hop: int, reps: int) -> float:
    """CPU ms per second of audio to embed the windows of S every `hop` frames."""
    fc = model.feature_config
    starts = np.arange(0, len(S) - fc.window_frames + 1, hop)
    return 1e3 * best_cpu(lambda: model.embed_at(S, starts), reps) / (len(S) * fc.frame_seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="window-kind model (default: the shipped one)")
    ap.add_argument("--shared", type=Path, help="shared-kind model (default: untrained, same channels)")
    args = ap.parse_args(argv)
    from tagmatch.modelio import load_model
    from tagmatch.threads import one_compute_thread

    one_compute_thread()  # as `tagmatch index` runs the encoder
    window = load_model(args.model)
    shared = load_model(args.shared) if args.shared else untrained_shared(window)
    fc = window.feature_config
    rng = np.random.default_rng(0)
    track = (rng.standard_normal((6000, fc.n_mels)) - 5).astype(np.float32)  # 60 s
    fragment = track[:1032]  # a 10 s query fragment and its context
    for name, model in (("window", window), ("shared", shared)):
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

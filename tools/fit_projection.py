"""Fit the model's output projection (PCA of its embeddings of real music) and write it into the
model file, optionally with a new reference hop. The trade-off study (docs/benchmarks.md) measured
64 of 128 dimensions losing nothing, which halves the store and the search.

    .venv/bin/python -m tools.fit_projection --model M --dim 64 --ref-hop-s 0.25
    .venv/bin/python -m tools.bench --model M --calibrate     # the calibration is reset: refit it

The PCA is fitted on the encoder's vectors of the dev corpus' known songs (the benchmark's
reference; never the held-out unknowns), a window every 0.5 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tagmatch.audio.decode import load_audio
from tagmatch.train.devcorpus import DEFAULT_ROOT, corpus_available, load_corpus
from tagmatch.errors import TagmatchError
from tagmatch.store.index import reference_frames
from tagmatch.model.modelfile import default_model_path, load_model, set_projection


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--ref-hop-s", type=float, default=None, help="also set the reference hop")
    args = ap.parse_args(argv)
    if not corpus_available(args.corpus):
        print(f"dev corpus not found at {args.corpus}", file=sys.stderr)
        return 1
    model = load_model(args.model)
    if model.projection is not None:
        print(f"{args.model} already has a projection", file=sys.stderr)
        return 1
    fc = model.feature_config
    vectors = []
    for i, t in enumerate(load_corpus(args.corpus).known, 1):
        try:
            S, starts = reference_frames(load_audio(t.path, fc.sample_rate), fc)
        except TagmatchError:
            continue
        vectors.append(model.embed_at(S, starts))
        if i % 20 == 0:
            print(f"embedded {i} tracks", flush=True)
    v = np.concatenate(vectors)
    axes = np.linalg.svd(v - v.mean(axis=0), full_matrices=False)[2][: args.dim].T  # (model dim, dim)
    hop = None if args.ref_hop_s is None else int(round(args.ref_hop_s / fc.frame_seconds))
    new_id = set_projection(args.model, axes, ref_hop_frames=hop,
                            note=f"PCA of {len(v)} vectors of the dev corpus' known songs to {args.dim} dims"
                                 + (f"; reference hop {args.ref_hop_s} s" if hop else ""))
    print(f"wrote a {axes.shape[0]}->{args.dim} projection into {args.model} (new id {new_id}); "
          "refit the calibration: tools/bench.py --calibrate")
    return 0


if __name__ == "__main__":
    sys.exit(main())

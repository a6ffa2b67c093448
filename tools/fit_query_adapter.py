"""Fit a model's query adapter on the development corpus (`tagmatch.train.adapter`), in place.

Decodes the corpus' known songs and training noise (the songs the encoder was trained on; the
benchmark's unknown songs and noise recordings are never used), embeds (clean, degraded) pairs
with the model, fits the adapter and stores it in the model file. The calibration is reset: run
`tools/bench.py --model M --calibrate` next. Stores built with the model stay valid.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from tagmatch.train.devcorpus import DEFAULT_ROOT, corpus_available, load_corpus
from tagmatch.model.modelfile import load_model
from tagmatch.train.adapter import AdapterConfig, fit_query_adapter
from tagmatch.train.loop import decode_folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="model file to add the adapter to (rewritten)")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--pairs", type=int, default=AdapterConfig.pairs)
    ap.add_argument("--steps", type=int, default=AdapterConfig.steps)
    ap.add_argument("--seed", type=int, default=AdapterConfig.seed)
    args = ap.parse_args(argv)
    if not corpus_available(args.corpus):
        print(f"dev corpus not found at {args.corpus}: run ../shared/corpus/fetch-dev-corpus", file=sys.stderr)
        return 1
    cfg = replace(AdapterConfig(), pairs=args.pairs, steps=args.steps, seed=args.seed)
    model = load_model(args.model)
    corpus = load_corpus(args.corpus)
    t0 = time.time()
    sr = model.feature_config.sample_rate
    music = decode_folder([t.path for t in corpus.known], sr)
    noise = decode_folder(corpus.train_noise, sr)
    print(f"decoded {len(music)} tracks and {len(noise)} noise recordings in {time.time() - t0:.0f} s", flush=True)

    def progress(p):
        if p.done % (50 if p.unit == "batches" else 500) == 0 or p.done == p.total:
            print(f"{p.stage}: {p.done}/{p.total} {p.info} [{time.time() - t0:.0f} s]", flush=True)

    fit_query_adapter(args.model, music, noise, cfg, on_progress=progress,
                      note=f"tools/fit_query_adapter.py: {len(music)} dev-corpus tracks, ")
    print(f"wrote the query adapter to {args.model} ({time.time() - t0:.0f} s); "
          f"now run tagmatch calibrate --dev-corpus --model {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

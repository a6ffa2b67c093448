"""Where the CPU time goes (`make profile`): per stage of the index path and of the query path.

Index: decode (+ resample to 8 kHz), log-mel, window cutting, embedding, on a sample of the
bench's reference tracks. Query: decode, windows, embedding, search + votes of each whole file,
on a sample of the bench's cached queries against the bench's store, searched as a scan searches
it (its approximate index when `make bench` kept one); then the same files through `match_file`
as a scan runs them (fragment by fragment, stopping once sure). Run `make bench` first. CPU
seconds of this process (all threads), one file at a time; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tools import bench

from tagmatch.audio.decode import load_audio
from tagmatch.audio.features import log_mel, window_starts
from tagmatch.match.config import MatchConfig
from tagmatch.match.decide import match_file, match_vectors
from tagmatch.match.query import query_frames
from tagmatch.model.modelfile import load_model
from tagmatch.store.shards import Store
from tagmatch.threads import one_compute_thread


class Clock:
    """Accumulates CPU seconds per stage."""

    def __init__(self):
        self.cpu: dict[str, float] = {}

    def __call__(self, stage: str, fn, *a, **kw):
        c = time.process_time()
        out = fn(*a, **kw)
        self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c
        return out


def profile_index(files: list[Path], model) -> tuple[dict[str, float], float]:
    fc, clock, seconds = model.feature_config, Clock(), 0.0
    for p in files:
        y = clock("decode", load_audio, p, fc.sample_rate)
        seconds += len(y) / fc.sample_rate
        S = clock("log-mel", log_mel, y, fc)
        starts = clock("windows", window_starts, len(S), fc.ref_hop_frames, fc)
        clock("embed", model.embed_at, S, starts)
    return clock.cpu, seconds


def profile_queries(files: list[Path], store: Store, model, cfg: MatchConfig, searcher) -> dict[str, float]:
    fc, clock = model.feature_config, Clock()
    for p in files:
        y = clock("decode", load_audio, p, fc.sample_rate)
        S, starts = clock("windows", query_frames, y, model, cfg)
        v = clock("embed", model.embed_query, S, starts)
        clock("search + votes", match_vectors, str(p), v, starts, len(S), store, model, cfg, searcher)
    return clock.cpu


def profile_scan(files: list[Path], store: Store, model, cfg: MatchConfig, searcher) -> tuple[float, int]:
    """CPU seconds of `match_file` over the files, and how many stopped reading early."""
    c, stopped = time.process_time(), 0
    for p in files:
        stopped += match_file(p, store, model, cfg, searcher).stopped_at_s is not None
    return time.process_time() - c, stopped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=bench.DEFAULT_CACHE)
    ap.add_argument("--tracks", type=int, default=15, help="reference tracks to decode and embed")
    ap.add_argument("--queries", type=int, default=80, help="cached excerpt queries to match")
    args = ap.parse_args(argv)
    store_path = args.cache / "store"
    if not store_path.exists():
        print(f"profile: no bench store at {store_path}; run `make bench` first. Skipping.")
        return 0
    one_compute_thread()  # as `tagmatch index` and `tagmatch scan` run it
    model = load_model(args.model)
    store = Store.load(store_path)
    store.check_model(model.model_id, model.feature_config, store_path)
    bench.warm_up(model)
    load_audio(next(p for p in (args.cache / "ref").iterdir()), 8000)
    log_mel(np.zeros(8000, np.float32), model.feature_config)  # the mel basis: first call only
    store.search(np.zeros((1, store.dim), np.float32), 10)

    refs = sorted((args.cache / "ref").iterdir())[:: max(1, len(list((args.cache / "ref").iterdir())) // args.tracks)]
    cpu, seconds = profile_index(refs[: args.tracks], model)
    total = sum(cpu.values())
    print(f"index: {len(refs[:args.tracks])} tracks, {seconds / 60:.1f} min of audio, {total:.1f} s CPU "
          f"= {seconds / total:.0f}x realtime per core")
    for k, v in cpu.items():
        print(f"  {k:<16} {v:6.2f} s  {100 * v / total:4.0f}%  ({seconds / v:6.0f}x realtime per core)")

    queries = sorted(p for p in (args.cache / "queries").glob("g*-seed1/*_*s/*")
                     if not p.name.endswith(".json"))
    queries = queries[:: max(1, len(queries) // args.queries)][: args.queries]
    from tagmatch.store.ann import describe_search, searcher_for

    cfg, searcher = MatchConfig(), searcher_for(store)
    cpu = profile_queries(queries, store, model, cfg, searcher)
    total = sum(cpu.values())
    print(f"query: {len(queries)} excerpt files (10-20 s) against {store.n_vectors:,} vectors, search "
          f"{describe_search(store, searcher)}; whole files: {1000 * total / len(queries):.0f} ms CPU per file")
    for k, v in cpu.items():
        print(f"  {k:<16} {1000 * v / len(queries):6.1f} ms  {100 * v / total:4.0f}%")
    scan_s, stopped = profile_scan(queries, store, model, cfg, searcher)
    print(f"  as a scan runs them (fragment by fragment, stopping once sure): {1000 * scan_s / len(queries):.0f} ms "
          f"CPU per file, {stopped} of {len(queries)} stopped early")
    return 0


if __name__ == "__main__":
    sys.exit(main())

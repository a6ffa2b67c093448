"""How `dupes` scales: a 10,000-file collection made from the dev-corpus bench store.

`make bench-dupes` embeds ~310 real files (the corpus and its degraded copies). Embedding scales
linearly (measured there per 1,000 files); the comparison does not have to, and this measures it
at 10,000 files without 55 hours of audio to embed: the bench store's vectors are replicated
(each replica rotated by its own random orthogonal matrix, so replicas are unrelated music with
the same internal structure, plus a little noise) until the collection holds --files files.
Then `find_duplicates` runs with the IVF index, and the groups found in every replica are
compared with those of the original (exact search, one replica): same groups = nothing lost.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

from tagmatch.dupes.find import find_duplicates
from tagmatch.store.shards import Store, TrackInfo, quantize, vector_scale

CACHE = Path.home() / ".cache" / "tagmatch" / "bench-dupes"


def replicate(base: Store, copies: int, seed: int = 0) -> Store:
    rng = np.random.default_rng(seed)
    v0 = base.vectors.astype(np.float32) / np.float32(vector_scale(base.dim))
    vecs, tracks, times, infos = [], [], [], []
    for r in range(copies):
        q = np.linalg.qr(rng.standard_normal((base.dim, base.dim)))[0].astype(np.float32) if r else np.eye(base.dim, dtype=np.float32)
        v = v0 @ q + rng.normal(0, 0.02, v0.shape).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        vecs.append(quantize(v, base.dim))
        tracks.append(base.vec_track + r * len(base.tracks))
        times.append(base.vec_time)
        infos += [TrackInfo(f"r{r}/{t.path}", t.tags, t.duration_s, t.size, t.mtime_ns) for t in base.tracks]
    return Store(feature_config=base.feature_config, model_id=base.model_id, dim=base.dim,
                 vectors=np.concatenate(vecs), vec_track=np.concatenate(tracks).astype(np.int32),
                 vec_time=np.concatenate(times), tracks=infos)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, help="bench store (default: the newest under ~/.cache/tagmatch/bench-dupes)")
    ap.add_argument("--files", type=int, default=10_000)
    args = ap.parse_args(argv)
    stores = [p for p in CACHE.glob("store-*") if p.is_dir()]
    path = args.store or max(stores, key=lambda p: p.stat().st_mtime, default=None)
    if path is None or not path.exists():
        print("no bench store: run `make bench-dupes` first", file=sys.stderr)
        return 0
    base = Store.load(path)
    infos0 = {i: {"path": t.path, "duration_s": t.duration_s, "tags": {}} for i, t in enumerate(base.tracks)}
    window_s = base.feature_config.window_samples / base.feature_config.sample_rate
    t0 = time.perf_counter()
    ref = find_duplicates(base, infos0, window_s, search="exact")
    t_base = time.perf_counter() - t0
    copies = -(-args.files // len(base.tracks))
    big = replicate(base, copies)
    n = len(base.tracks)
    infos = {i: {"path": t.path, "duration_s": t.duration_s, "tags": {}} for i, t in enumerate(big.tracks)}
    print(f"{len(big.tracks)} files, {len(big.vectors):,} vectors ({big.hours:.0f} h); "
          f"base {n} files compared in {t_base:.0f} s (exact)", flush=True)
    stages: dict[str, float] = {}
    last = [time.perf_counter(), None]

    def progress(p) -> None:
        stage = p.stage
        if stage != last[1]:
            if last[1]:
                stages[last[1]] = time.perf_counter() - last[0]
            last[:] = [time.perf_counter(), stage]
    t0 = time.perf_counter()
    groups = find_duplicates(big, infos, window_s, search="approximate", progress=progress)
    total = time.perf_counter() - t0
    stages[last[1]] = time.perf_counter() - last[0]
    stages["index build (before searching)"] = total - sum(stages.values())
    want = sorted((g.kind, tuple(g.members)) for g in ref)
    per_replica: dict[int, list] = {}
    for g in groups:
        per_replica.setdefault(g.members[0] // n, []).append((g.kind, tuple(sorted(m % n for m in g.members))))
    want_sorted = sorted((k, tuple(sorted(m))) for k, m in want)
    same = sum(sorted(per_replica.get(r, [])) == want_sorted for r in range(copies))
    cross = sum(len({m // n for m in g.members}) > 1 for g in groups)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"compared in {total:.0f} s wall ({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())}); "
          f"peak RSS {rss:.0f} MB")
    print(f"replicas with exactly the base's groups: {same}/{copies}; groups spanning replicas: {cross}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

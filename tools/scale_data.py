"""The vectors `make scale` measures: the dupes bench's real reference vectors replicated into
stores of N tracks' worth, the bench's query files embedded once, and exact search over a store
as the reference for the approximate one's recall (see tools/scale_store.py for the set-up)."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import joblib
import numpy as np

from tagmatch.store.folder import disk_bytes
from tagmatch.store.shards import SHARD_VECTORS, Shard, Store, TrackInfo, quantize, top_k_columns, vector_scale

CACHE = Path.home() / ".cache" / "tagmatch" / "scale"
BENCH = Path.home() / ".cache" / "tagmatch" / "bench"
BENCH_DUPES = Path.home() / ".cache" / "tagmatch" / "bench-dupes"
TRACK_VECTORS = 1008  # a typical track: 4.2 min at 4 reference windows a second


def base_store(model, bench: bool = False) -> dict:
    """The dupes bench's store made by the shipped model: a folder (format 3 or 4) or an older single
    file (read with joblib: only its arrays are used). `bench`: the bench's store instead (`make
    bench`: the 107 reference songs of the dev corpus, 7.4 h)."""
    if bench:
        cands = [BENCH / "store"] if (BENCH / "store" / "manifest.json").exists() else []
        if not cands or Store.load(cands[0]).model_id != model.model_id:
            raise SystemExit(f"no bench store for model {model.model_id}: run `make bench` first")
    else:
        cands = sorted(BENCH_DUPES.glob(f"store-{model.model_id}*"))
    if not cands:
        raise SystemExit(f"no bench-dupes store for model {model.model_id}: run `make bench-dupes` first")
    p = cands[-1]
    if p.is_dir():
        s = Store.load(p, mmap=False)
        tracks = [{"path": t.path, "duration_s": t.duration_s, "size": t.size, "mtime_ns": t.mtime_ns}
                  for t in s.tracks]
        return {"vectors": np.asarray(s.vectors), "vec_track": np.asarray(s.vec_track),
                "vec_time": np.asarray(s.vec_time), "tracks": tracks, "feature_config": s.feature_config,
                "path": str(p)}
    d = joblib.load(p)
    from tagmatch.audio.features import FeatureConfig

    return {"vectors": d["vectors"], "vec_track": np.asarray(d["vec_track"], np.int32),
            "vec_time": np.asarray(d["vec_time"], np.float32), "tracks": d["tracks"],
            "feature_config": FeatureConfig.from_dict(d["feature_config"]), "path": str(p)}


def build_store(base: dict, model, n_tracks: int, path: Path, seed: int = 0, first_replica: int = 0) -> dict:
    """Replicas of the base vectors, whole tracks, until n_tracks x TRACK_VECTORS vectors; shards
    of whole tracks of about SHARD_VECTORS vectors each (as indexing cuts them). Replica 0 is the
    base itself; `first_replica` > 0 gives a store of rotated replicas only (another group of a
    bigger library, tools/scale_cluster.py)."""
    dim = base["vectors"].shape[1]
    want = n_tracks * TRACK_VECTORS
    rng = np.random.default_rng(seed)
    v0 = base["vectors"].astype(np.float32) / np.float32(vector_scale(dim))
    bt, btime, btracks = base["vec_track"], base["vec_time"], base["tracks"]
    bounds = np.searchsorted(bt, np.arange(len(btracks) + 1))  # base vectors are grouped by track
    shards, infos, pend, total, r = [], [], [], 0, first_replica
    t0 = time.perf_counter()

    def cut() -> None:
        vecs = np.concatenate([p[0] for p in pend])
        local = np.concatenate([np.full(len(p[0]), i, np.int32) for i, p in enumerate(pend)])
        shards.append(Shard(vecs, local, np.concatenate([p[1] for p in pend]), len(pend)))
        pend.clear()

    while total < want:
        if r:
            q = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
            v = v0 @ q + rng.normal(0, 0.02, v0.shape).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            qv = quantize(v, dim)
        else:
            qv = base["vectors"]
        for t in range(len(btracks)):
            if total >= want:
                break
            a, b = bounds[t], bounds[t + 1]
            if a == b:
                continue
            pend.append((qv[a:b], btime[a:b]))
            info = btracks[t]
            infos.append(TrackInfo(f"/scale/r{r:04d}/{Path(info['path']).name}", {}, float(info["duration_s"]),
                                   int(info.get("size", 0)), int(info.get("mtime_ns", 0))))
            total += b - a
            if sum(len(p[0]) for p in pend) >= SHARD_VECTORS:
                cut()
        r += 1
    if pend:
        cut()
    gen_s = time.perf_counter() - t0
    store = Store(base["feature_config"], model.model_id, dim, tracks=infos, shards=shards)
    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    store.save(path)
    save_s = time.perf_counter() - t0
    return {"tracks": len(infos), "replicas": r - first_replica, "vectors": int(total), "hours": round(store.hours, 1),
            "shards": len(shards), "generate_s": round(gen_s, 1), "save_s": round(save_s, 1),
            "store_bytes": disk_bytes(path)}


# ---- the real queries ----------------------------------------------------------------------

def query_set(model, base: dict, limit: int) -> list[dict]:
    """The bench's degraded query files (excerpts, not whole files), embedded as `tagmatch scan` does;
    with the base track each known query came from (None for songs not in the reference)."""
    out = CACHE / f"queries-{model.query_id}.joblib"
    if out.exists():
        qs = joblib.load(out)
        if len(qs) >= limit:
            return qs[:limit]
    from tagmatch.audio.decode import load_audio
    from tagmatch.train.devcorpus import DEFAULT_ROOT
    from tagmatch.errors import TagmatchError
    from tagmatch.match.config import MatchConfig
    from tagmatch.match.query import query_frames

    key_to_track = {}
    for i, t in enumerate(base["tracks"]):
        p = Path(t["path"])
        if p.is_symlink() or p.exists():
            try:
                rel = str(p.resolve().relative_to(DEFAULT_ROOT.resolve()))
            except ValueError:
                continue
            key_to_track[hashlib.sha1(rel.encode()).hexdigest()[:10]] = i
    folder = BENCH / "queries" / "g1-seed1"
    files = sorted(p for p in folder.glob("*/*") if not p.name.endswith(".json") and "whole" not in p.parent.name)
    # interleave the conditions so a prefix is a mixed sample
    by_cond: dict[str, list[Path]] = {}
    for p in sorted(files, key=lambda p: hashlib.sha1(str(p.relative_to(folder)).encode()).digest()):
        by_cond.setdefault(p.parent.name, []).append(p)  # a fixed shuffle: known and unknown mixed
    order = [p for grp in zip(*by_cond.values()) for p in grp]
    fc, cfg = model.feature_config, MatchConfig()
    qs = []
    for p in order[:limit]:
        try:
            y = load_audio(p, fc.sample_rate)
            S, starts = query_frames(y, model, cfg)
        except TagmatchError:
            continue
        kind, h = p.name.split("-")[:2]
        qs.append({"name": f"{p.parent.name}/{p.name}", "kind": kind, "truth": key_to_track.get(h) if kind == "known" else None,
                   "vectors": model.embed_query(S, starts), "starts": starts, "n_frames": len(S)})
    CACHE.mkdir(parents=True, exist_ok=True)
    joblib.dump(qs, out)
    return qs


# ---- stages --------------------------------------------------------------------------------

def exact_reference(store: Store, queries: np.ndarray, k: int, chunk: int = 131072) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k for many query windows at once (the agreement reference): one matrix product
    per chunk, then only the few similarities above each query's running k-th best are kept, so
    after the first chunks (replica 0, where the true matches are) few rows need a top-k.
    Same neighbours as Store.search (checked on the 1k store)."""
    scale = np.float32(vector_scale(store.dim))
    q = np.asarray(queries, np.float32) / scale
    best_i = np.full((len(q), k), -1, np.int64)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    offset = 0
    for sh in store.shards:
        for lo in range(0, len(sh.time), chunk):
            sims = q @ np.asarray(sh.vectors[lo : lo + chunk]).astype(np.float32).T
            hit = np.flatnonzero((sims > best_s[:, -1:]).any(axis=1))
            if len(hit):
                sub = sims[hit]
                part = top_k_columns(sub, min(k, sub.shape[1]))
                cs = np.concatenate([best_s[hit], np.take_along_axis(sub, part, 1)], axis=1)
                ci = np.concatenate([best_i[hit], part + offset + lo], axis=1)
                o = np.argsort(-cs, axis=1, kind="stable")[:, :k]
                best_s[hit], best_i[hit] = np.take_along_axis(cs, o, 1), np.take_along_axis(ci, o, 1)
        offset += len(sh.time)
    return best_i, best_s

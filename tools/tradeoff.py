"""Quality/size/speed trade-off study (`make tradeoff`): reference hop, query hop, vector dtype and
embedding dimension, on the benchmark's query set, one variant at a time.

The first variant is the model's own settings (its reference hop and query hop, int8, its
dimension); each other changes one of them. Every reference track is embedded once on the finest
reference grid of the variants (half the model's hop) and every query on the finest query grid
(half the model's query hop); a variant subsamples those, stores them in its dtype, or projects
both sides onto the top principal axes of the reference vectors (a stand-in for a smaller
embedding: it needs no retraining). Each variant then runs the real matcher (`match_vectors`).

Reported per variant: top-1 on known songs with no threshold; top-1 at the raw-margin threshold
that lets no unknown song through (and 1 %); store bytes per hour; windows embedded per second of
query audio (the scan's main CPU cost). Uses the bench's cached queries (`make bench` first).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import joblib
import numpy as np

from tagmatch.train.queries import CONDITIONS, link_reference
from tools import bench

from tagmatch.audio.decode import load_audio
from tagmatch.train.devcorpus import DEFAULT_ROOT, corpus_available, load_corpus
from tagmatch.errors import TagmatchError
from tagmatch.store.index import reference_frames
from tagmatch.match.config import MatchConfig
from tagmatch.match.decide import match_vectors
from tagmatch.match.query import query_frames
from tagmatch.store.shards import Store, TrackInfo, quantize

@dataclass(frozen=True)
class Variant:
    ref_hop_s: float
    query_hop_s: float
    dtype: str = "int8"  # "float32" | "float16" | "int8"
    dim: int = 0  # 0: the model's; else PCA to this many dimensions

    @property
    def label(self) -> str:
        return (f"ref {self.ref_hop_s:g} s, query {self.query_hop_s:g} s, {self.dtype}, "
                f"dim {self.dim or 'model'}")


def variants_for(model) -> tuple[Variant, ...]:
    """The model's own settings first, then one change at a time. Query hops are multiples of half
    the model's (the finest grid embedded), reference hops of half its reference hop."""
    fs = model.feature_config.frame_seconds
    ref, query = model.feature_config.ref_hop_frames * fs, model.default_query_hop_frames() * fs
    own = Variant(round(ref, 4), round(query, 4))
    return (own,
            replace(own, query_hop_s=round(query / 2, 4)), replace(own, query_hop_s=round(query * 1.5, 4)),
            replace(own, query_hop_s=round(query * 2.5, 4)), replace(own, ref_hop_s=round(ref * 2, 4)),
            replace(own, dim=model.dim // 2), replace(own, dtype="float16"), replace(own, dim=model.dim // 4),
            replace(own, ref_hop_s=round(ref / 2, 4)), replace(own, dtype="float32"))


def embed_reference(ref_files: list[Path], model, hop_frames: int) -> dict:
    fc = model.feature_config
    vecs, track, frames, durs = [], [], [], []
    for i, p in enumerate(ref_files):
        try:
            y = load_audio(p, fc.sample_rate)
        except TagmatchError:
            continue
        S, st = reference_frames(y, replace(fc, ref_hop_frames=hop_frames))
        if not len(st):
            continue
        vecs.append(model.embed_at(S, st))
        track.append(np.full(len(st), len(durs), np.int32))
        frames.append(st)
        durs.append((p.name, len(y) / fc.sample_rate))
        if (i + 1) % 20 == 0:
            bench.log(f"reference: embedded {i + 1}/{len(ref_files)}")
    return {"vectors": np.concatenate(vecs), "track": np.concatenate(track), "frames": np.concatenate(frames),
            "tracks": durs}


def embed_queries(queries, model, hop_s: float) -> list[dict]:
    fc = model.feature_config
    cfg = MatchConfig(query_hop_s=hop_s)
    out = []
    for i, q in enumerate(queries):
        try:
            S, starts = query_frames(load_audio(q.path, fc.sample_rate), model, cfg)
            vectors = model.embed_query(S, starts)
        except TagmatchError:
            S, starts, vectors = np.zeros((0, fc.n_mels), np.float32), np.zeros(0, int), np.zeros((0, model.dim), np.float32)
        out.append({"vectors": vectors, "starts": starts, "n_frames": len(S),
                    "condition": q.condition, "kind": q.kind, "group": q.group,
                    "seconds": q.meta.get("duration_s", 0.0)})
        if (i + 1) % 100 == 0:
            bench.log(f"queries: embedded {i + 1}/{len(queries)}")
    return out


def make_store(ref: dict, v: Variant, model, proj: np.ndarray | None) -> Store:
    fc = model.feature_config
    keep = ref["frames"] % int(round(v.ref_hop_s / fc.frame_seconds)) == 0
    vecs = ref["vectors"][keep]
    if proj is not None:
        vecs = _unit(vecs @ proj)
    dim = vecs.shape[1]
    return Store(feature_config=fc, model_id=model.model_id, dim=dim,
                 tracks=[TrackInfo(name, {}, d, 0, 0) for name, d in ref["tracks"]],
                 vectors=quantize(vecs, dim) if v.dtype == "int8" else vecs.astype(v.dtype),
                 vec_track=ref["track"][keep], vec_time=(ref["frames"][keep] * fc.frame_seconds).astype(np.float32))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def evaluate(v: Variant, ref: dict, queries: list[dict], model, by_name: dict, pcs: np.ndarray) -> dict:
    fc = model.feature_config
    proj = pcs[:, : v.dim] if v.dim else None
    store = make_store(ref, v, model, proj)
    cfg = MatchConfig(query_hop_s=v.query_hop_s)
    step = int(round(v.query_hop_s / fc.frame_seconds))
    rows, windows, seconds = [], 0, 0.0
    t0 = time.process_time()
    for q in queries:
        sel = q["starts"] % step == 0
        vec = q["vectors"][sel]
        if proj is not None and len(vec):
            vec = _unit(vec @ proj)
        windows += int(sel.sum())
        seconds += q["seconds"]
        if not len(vec):
            rows.append((q, False, -1.0))
            continue
        fm = match_vectors("", vec, q["starts"][sel], q["n_frames"], store, model, cfg)
        pred = by_name.get(store.tracks[fm.match.track].path) if fm.match else None
        rows.append((q, bool(pred is not None and pred.group == q["group"]),
                     fm.match.margin if fm.match else -1.0))
    match_cpu = time.process_time() - t0
    known = [(ok, m, q["condition"]) for q, ok, m in rows if q["kind"] == "known"]
    unk = np.array([m for q, ok, m in rows if q["kind"] == "unknown"])
    hours = sum(d for _, d in ref["tracks"]) / 3600
    bytes_per_vec = store.vectors.itemsize * store.dim + 8  # + vec_track int32 + vec_time float32
    res = {"variant": v.label, **v.__dict__, "top1": np.mean([ok for ok, _, _ in known]),
           "store_mb_per_hour": len(store.vectors) * bytes_per_vec / 1e6 / hours,
           "windows_per_query_s": windows / max(seconds, 1e-9),
           "match_ms_per_query": 1000 * match_cpu / len(rows)}
    for name, fp in (("at_0fp", 0.0), ("at_1fp", 0.01)):
        thr = np.quantile(unk, 1 - fp) if len(unk) else 0.0
        res[f"top1_{name}"] = np.mean([ok and m > thr for ok, m, _ in known])
        for cond in ("noise0_reverb_12s", "speed_plus3_15s"):
            sub = [ok and m > thr for ok, m, c in known if c == cond]
            if sub and name == "at_0fp":
                res[f"{cond}_at_0fp"] = float(np.mean(sub))
    return {k: (round(float(x), 4) if isinstance(x, (float, np.floating)) else x) for k, x in res.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=bench.DEFAULT_CACHE)
    ap.add_argument("--variants", choices=["all", "default"], default="all",
                    help="'default': only the shipped settings (quick model comparisons)")
    args = ap.parse_args(argv)
    if not corpus_available(args.corpus):
        print(f"tradeoff: dev corpus not found at {args.corpus}. Skipping.")
        return 0
    from tagmatch.model.modelfile import load_model

    model = load_model(args.model)
    corpus = load_corpus(args.corpus)
    by_name = link_reference(corpus, args.cache / "ref")
    conds = [c for c in CONDITIONS if c.excerpt_s is not None]  # whole files: 100% anyway, and slow
    variants = variants_for(model) if args.variants == "all" else variants_for(model)[:1]
    hop = min(int(round(v.ref_hop_s / model.feature_config.frame_seconds)) for v in variants)
    query_hop_s = min(v.query_hop_s for v in variants)
    ref_path = args.cache / f"tradeoff-ref-{model.model_id}-hop{hop}.joblib"
    finer = [p for p in args.cache.glob(f"tradeoff-ref-{model.model_id}-hop*.joblib")
             if hop % int(p.stem.rsplit("hop", 1)[1]) == 0]  # a finer grid holds this one
    if finer:
        ref = joblib.load(finer[0])
    else:
        ref = embed_reference(sorted((args.cache / "ref").iterdir()), model, hop)
        joblib.dump(ref, ref_path)
    indexed = {by_name[n] for n, _ in ref["tracks"]}
    corpus = replace(corpus, known=[t for t in corpus.known if t in indexed])
    queries = bench.make_queries(corpus, conds, args.seed, args.limit, 0, args.cache)
    q_path = args.cache / f"tradeoff-queries-{model.query_id}-seed{args.seed}-{args.limit}-hop{query_hop_s:g}.joblib"
    if q_path.exists():
        qv = joblib.load(q_path)
    else:
        qv = embed_queries(queries, model, query_hop_s)
        joblib.dump(qv, q_path)
    ref_vecs = ref["vectors"] - ref["vectors"].mean(axis=0)
    pcs = np.linalg.svd(ref_vecs[:: max(1, len(ref_vecs) // 20000)], full_matrices=False)[2].T
    results = []
    print(f"{'variant':<48} {'top-1':>6} {'@0 FP':>6} {'@1% FP':>6} {'reverb@0':>8} {'speed@0':>7} "
          f"{'MB/h':>5} {'win/s':>5} {'match ms':>8}")
    for v in variants:
        r = evaluate(v, ref, qv, model, by_name, pcs)
        results.append(r)
        print(f"{r['variant']:<48} {r['top1']:6.3f} {r['top1_at_0fp']:6.3f} {r['top1_at_1fp']:6.3f} "
              f"{r.get('noise0_reverb_12s_at_0fp', 0):8.3f} {r.get('speed_plus3_15s_at_0fp', 0):7.3f} "
              f"{r['store_mb_per_hour']:5.2f} {r['windows_per_query_s']:5.1f} {r['match_ms_per_query']:8.1f}",
              flush=True)
    out = args.cache / f"tradeoff-{model.query_id}.json"
    out.write_text(json.dumps({"model_id": model.model_id, "seed": args.seed, "queries": len(qv),
                               "limit": args.limit,
                               "results": results}, indent=1))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Store and search at scale (`make scale`): 1k, 10k and 100k tracks' worth of vectors.

There is no 7,000-hour library to embed here, so the real reference vectors of the dupes bench
(`make bench-dupes`: ~17 h from 310 files, embedded by the shipped model) are replicated, as in
tools/scale_dupes.py: each replica is rotated by its own random orthogonal matrix (unrelated music
with the same internal structure) plus a little noise, renormalised and quantized to int8.
Replica 0 is the real vectors unchanged, so the real bench queries have their true tracks in every
store and every other replica is a distractor. "N tracks' worth" = N x 4.2 min at the shipped
reference hop (0.25 s) = N x 1,008 vectors, cut at whole tracks (the base tracks are shorter than
4.2 min, so a store holds more, shorter tracks than N).

Per size, with every stage cached under ~/.cache/tagmatch/scale/ (a re-run goes on from there):
  build    replicate, save with Store.save (sharded), time it, store size on disk
  index    build the approximate index (tagmatch.store.ann.IVFPQSearch), save it next to the store
  update   (only when asked: --stages update) on a hard-linked copy of the store, what
           `tagmatch index` spends keeping the index current: first build, one track added,
           one track removed
  measure  in a fresh process: Store.load time and resident memory, index load time and memory,
           ms per 10 s query fragment (50 query windows) exact and approximate, and agreement of
           the approximate search with exact: per-window recall@10 and the real matcher's top-1
           track per query file (match_vectors with each searcher)
Query vectors: the bench's degraded query files (~/.cache/tagmatch/bench/queries/g1-seed1),
decoded and embedded once as match.py does (cached).

Prints one JSON line per stage and a summary table; everything also goes to
~/.cache/tagmatch/scale/results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np

from tagmatch.store.shards import SHARD_VECTORS, Shard, Store, TrackInfo, disk_bytes, quantize, top_k_columns, vector_scale

CACHE = Path.home() / ".cache" / "tagmatch" / "scale"
BENCH = Path.home() / ".cache" / "tagmatch" / "bench"
BENCH_DUPES = Path.home() / ".cache" / "tagmatch" / "bench-dupes"
TRACK_VECTORS = 1008  # a typical track: 4.2 min at 4 reference windows a second
FRAGMENT_WINDOWS = 50  # a 10 s query fragment at the 0.2 s query hop
SIZES = {"1k": 1_000, "10k": 10_000, "100k": 100_000}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_json(path: Path, d: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=1))
    tmp.replace(path)


# ---- the real vectors ----------------------------------------------------------------------

def base_store(model) -> dict:
    """The dupes bench's store made by the shipped model: a folder (format 3) or an older single
    file (read with joblib: only its arrays are used)."""
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


def build_store(base: dict, model, n_tracks: int, path: Path, seed: int = 0) -> dict:
    """Replicas of the base vectors, whole tracks, until n_tracks x TRACK_VECTORS vectors; shards
    of whole tracks of about SHARD_VECTORS vectors each (as indexing cuts them)."""
    dim = base["vectors"].shape[1]
    want = n_tracks * TRACK_VECTORS
    rng = np.random.default_rng(seed)
    v0 = base["vectors"].astype(np.float32) / np.float32(vector_scale(dim))
    bt, btime, btracks = base["vec_track"], base["vec_time"], base["tracks"]
    bounds = np.searchsorted(bt, np.arange(len(btracks) + 1))  # base vectors are grouped by track
    shards, infos, pend, total, r = [], [], [], 0, 0
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
    return {"tracks": len(infos), "replicas": r, "vectors": int(total), "hours": round(store.hours, 1),
            "shards": len(shards), "generate_s": round(gen_s, 1), "save_s": round(save_s, 1),
            "store_bytes": disk_bytes(path)}


# ---- the real queries ----------------------------------------------------------------------

def query_set(model, base: dict, limit: int) -> list[dict]:
    """The bench's degraded query files (excerpts, not whole files), embedded as match.py does;
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


class Precomputed:
    """A searcher that answers with results computed before (one batched exact pass for many
    query files is much cheaper than one pass per file)."""

    def __init__(self, idx: np.ndarray, sim: np.ndarray):
        self.idx, self.sim = idx, sim

    def search(self, queries: np.ndarray, k: int):
        return self.idx[:, :k], self.sim[:, :k]


def stage_index(size: str, store_path: Path, params: dict) -> dict:
    from tagmatch.store.ann import IVFPQSearch

    store = Store.load(store_path)
    t0 = time.perf_counter()
    s = IVFPQSearch.build(store, nlist=params.get("nlist"), pq=params.get("pq"), log=log)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    s.save()
    return {"index_key": s.key, "index_build_s": round(build_s, 1), "index_save_s": round(time.perf_counter() - t0, 1),
            "index_bytes": s.file_bytes(), **s.build_stats}


def stage_update(size: str, store_path: Path) -> dict:
    """What `tagmatch index` costs to keep the approximate index current (tagmatch.store.ann.update_index)
    on a copy of the store (hard links: shards are never written in place): the first build, then
    one track added, then one track removed from the first shard (its shard is rewritten)."""
    from tagmatch.store.ann import update_index

    work = store_path.parent / "update-store"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for f in store_path.iterdir():
        if f.name.startswith(("shard-", "tracks-")) or f.name == "manifest.json":
            os.link(f, work / f.name)
    res = {}

    def timed(label: str, store: Store) -> None:
        t0 = time.perf_counter()
        msg = update_index(store, "approximate", on_progress=None)
        res[label + "_s"] = round(time.perf_counter() - t0, 1)
        res[label] = msg
        log(f"{size}: {label}: {msg} ({res[label + '_s']} s)")

    timed("build", Store.load(work))
    store = Store.load(work)
    sh = store.shards[-1]
    rows = np.flatnonzero(sh.track == sh.track[-1])  # the last track's vectors, as a new track
    t = store.tracks[-1]
    store.add_track(TrackInfo(t.path + ".copy", dict(t.tags), t.duration_s, t.size, t.mtime_ns),
                    np.asarray(sh.vectors[rows]), np.asarray(sh.time[rows]))
    t0 = time.perf_counter()
    store.save(work)
    res["add_track_store_save_s"] = round(time.perf_counter() - t0, 2)
    timed("add_one_track", store)
    store = Store.load(work)
    store.remove_tracks({0})
    t0 = time.perf_counter()
    store.save(work)
    res["remove_track_store_save_s"] = round(time.perf_counter() - t0, 2)
    res["removed_shard_vectors"] = int(len(Store.load(store_path).shards[0].time))
    timed("remove_one_track", store)
    shutil.rmtree(work)
    return res


def stage_measure(size: str, store_path: Path, n_agree: int, n_exact_frag: int, settings: list[tuple[int, int]]) -> dict:
    """Run in a fresh process: open, resident memory, query cost, agreement."""
    from tagmatch.store.ann import IVFPQSearch
    from tagmatch.match.config import MatchConfig
    from tagmatch.match.decide import match_vectors
    from tagmatch.model.modelfile import load_model

    model = load_model()
    base = base_store(model)
    qs = query_set(model, base, max(n_agree, 200))
    del base
    res: dict = {}
    rss0 = rss_mb()
    t0 = time.perf_counter()
    store = Store.load(store_path)
    res["open_s"] = round(time.perf_counter() - t0, 3)
    res["rss_open_mb"] = round(rss_mb() - rss0)
    r1 = rss_mb()
    t0 = time.perf_counter()
    ann = IVFPQSearch.load(store)
    res["index_open_s"] = round(time.perf_counter() - t0, 3)
    res["rss_index_mb"] = round(rss_mb() - r1)
    cfg = MatchConfig()
    k = cfg.top_k
    frags = []
    for q in qs:
        for a in range(0, len(q["vectors"]) - FRAGMENT_WINDOWS + 1, FRAGMENT_WINDOWS):
            frags.append(q["vectors"][a : a + FRAGMENT_WINDOWS])
    # exact: a few fragments (one pass over every vector each); 0: keep the figures of a run before
    if n_exact_frag > 0:
        t0 = time.perf_counter()
        store.search(frags[0], k)  # the first: pages the vectors in (or makes the float copy)
        res["exact_first_fragment_ms"] = round(1000 * (time.perf_counter() - t0), 1)
        ts = []
        for f in frags[1 : 1 + n_exact_frag]:
            t0 = time.perf_counter()
            store.search(f, k)
            ts.append(time.perf_counter() - t0)
        res["exact_ms_per_fragment"] = round(1000 * float(np.median(ts)), 1)
        res["exact_fragments_timed"] = len(ts)
        res["rss_after_exact_mb"] = round(rss_mb() - rss0)
    # exact reference for agreement: batched, cached per size (the expensive part at 100k)
    sub = qs[:n_agree]
    ref_file = store_path.parent / f"exact-{store_path.name}-{n_agree}.joblib"
    if ref_file.exists():
        ref = joblib.load(ref_file)
    else:
        allv = np.concatenate([q["vectors"] for q in sub])
        t0 = time.perf_counter()
        parts_i, parts_s = [], []
        for lo in range(0, len(allv), 1024):
            i, s = exact_reference(store, allv[lo : lo + 1024], k)
            parts_i.append(i)
            parts_s.append(s)
            log(f"{size}: exact reference {lo + len(i)}/{len(allv)} windows ({time.perf_counter() - t0:.0f} s)")
        ref = {"idx": np.concatenate(parts_i), "sim": np.concatenate(parts_s),
               "seconds": time.perf_counter() - t0, "windows": len(allv)}
        joblib.dump(ref, ref_file)
    res["exact_batched_ms_per_window"] = round(1000 * ref["seconds"] / ref["windows"], 2)
    bounds = np.cumsum([0] + [len(q["vectors"]) for q in sub])
    # The base holds each song once as itself and, for most, as degraded copies (the dupes bench's
    # "t001.ogg", "t001-whole.mp3", "t001-part.m4a"): the same recording, between which the
    # matcher's choice is a near tie. "song" agreement counts those as one; "track" is strict.
    song = [(Path(t.path).parent.name, Path(t.path).stem.split("-")[0]) for t in store.tracks]
    exact_top = []
    for j, q in enumerate(sub):
        pre = Precomputed(ref["idx"][bounds[j] : bounds[j + 1]], ref["sim"][bounds[j] : bounds[j + 1]])
        fm = match_vectors(q["name"], q["vectors"], q["starts"], q["n_frames"], store, model, cfg, searcher=pre)
        exact_top.append((fm.match.track if fm.match else -1, fm.status))
    res["agreement_files"] = len(sub)
    res["agreement_windows"] = int(bounds[-1])
    known = [j for j, q in enumerate(sub) if q["truth"] is not None]
    res["exact_top1_correct_known"] = f"{sum(exact_top[j][0] >= 0 and song[exact_top[j][0]] == song[sub[j]['truth']] for j in known)}/{len(known)}"
    sweeps = []
    if ann is None:
        log(f"{size}: no (or a stale) index next to the store: approximate search not measured")
        settings = []
    for nprobe, refine in settings:
        ann.nprobe, ann.refine = nprobe, refine
        ann.search(frags[0], k)
        ts = []
        for f in frags[1:41]:
            t0 = time.perf_counter()
            ann.search(f, k)
            ts.append(time.perf_counter() - t0)
        agree = agree_song = same_status = correct = 0
        recall = []
        tm = []
        for j, q in enumerate(sub):
            t0 = time.perf_counter()
            fm = match_vectors(q["name"], q["vectors"], q["starts"], q["n_frames"], store, model, cfg, searcher=ann)
            tm.append((time.perf_counter() - t0) / max(1, len(q["vectors"]) / FRAGMENT_WINDOWS))
            top = fm.match.track if fm.match else -1
            agree += top == exact_top[j][0]
            agree_song += top == exact_top[j][0] or (top >= 0 and exact_top[j][0] >= 0 and song[top] == song[exact_top[j][0]])
            same_status += fm.status == exact_top[j][1]
            correct += q["truth"] is not None and top >= 0 and song[top] == song[q["truth"]]
            ai, _ = ann.search(q["vectors"], k)
            ei = ref["idx"][bounds[j] : bounds[j + 1]]
            recall.append(np.mean([len(set(a) & set(e)) / k for a, e in zip(ai, ei)]))
        sweeps.append({"nprobe": nprobe, "refine": ann.refine, "ms_per_fragment": round(1000 * float(np.median(ts)), 2),
                       "match_ms_per_fragment": round(1000 * float(np.median(tm)), 2),
                       "top1_agreement": round(agree / len(sub), 4), "top1_song_agreement": round(agree_song / len(sub), 4),
                       "status_agreement": round(same_status / len(sub), 4),
                       "recall_at_10": round(float(np.mean(recall)), 4),
                       "top1_correct_known": f"{correct}/{len(known)}"})
        log(f"{size}: {json.dumps(sweeps[-1])}")
    res["approx"] = sweeps
    res["rss_end_mb"] = round(rss_mb() - rss0)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1k,10k,100k", help="comma-separated, of " + ", ".join(SIZES))
    ap.add_argument("--stages", default="build,index,measure")
    ap.add_argument("--agree", default="1k:300,10k:300,100k:100",
                    help="query files for the agreement test, per size (exact reference is batched)")
    ap.add_argument("--exact-fragments", type=int, default=5)
    ap.add_argument("--settings", default="16:8,32:8,32:16,64:16",
                    help="approximate search settings to measure: nprobe:refine,...")
    ap.add_argument("--nlist", type=int, default=0, help="IVF cells (default: by size, see tagmatch.store.ann)")
    ap.add_argument("--pq", type=int, default=0, help="PQ sub-quantizers (default: tagmatch.store.ann's)")
    ap.add_argument("--measure-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    agree = dict(a.split(":") for a in args.agree.split(","))
    settings = [tuple(int(v) for v in x.split(":")) for x in args.settings.split(",")]
    if args.measure_child:
        size = args.measure_child
        res = stage_measure(size, CACHE / size / "store", int(agree.get(size, 100)), args.exact_fragments, settings)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    from tagmatch.model.modelfile import load_model

    results_path = CACHE / "results.json"
    results = load_json(results_path)
    model = load_model()
    base = None
    for size in args.sizes.split(","):
        folder = CACHE / size
        folder.mkdir(exist_ok=True)
        store_path = folder / "store"
        r = results.setdefault(size, {})
        if "build" in args.stages and not ((store_path / "manifest.json").exists() and "save_s" in r):
            base = base or base_store(model)
            log(f"{size}: building from {base['path']} ({len(base['vectors']):,} real vectors)")
            r.update(build_store(base, model, SIZES[size], store_path))
            r.pop("index_key", None)
            save_json(results_path, results)
            log(f"{size}: {json.dumps(r)}")
        if "index" in args.stages and "index_key" not in r:
            log(f"{size}: building the approximate index")
            r.update(stage_index(size, store_path, {"nlist": args.nlist or None, "pq": args.pq or None}))
            save_json(results_path, results)
            log(f"{size}: {json.dumps(r)}")
        if "update" in args.stages:
            log(f"{size}: keeping the approximate index current (a copy of the store)")
            r["update"] = stage_update(size, store_path)
            save_json(results_path, results)
        if "measure" in args.stages:
            log(f"{size}: measuring (fresh process)")
            cmd = [sys.executable, __file__, "--measure-child", size, "--agree", args.agree,
                   "--exact-fragments", str(args.exact_fragments), "--settings", args.settings]
            p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            print("\n".join(ln for ln in p.stdout.splitlines() if not ln.startswith("RESULT ")), flush=True)
            if p.returncode or not lines:
                log(f"{size}: measure failed (exit {p.returncode})")
                continue
            r.setdefault("measure", {}).update(json.loads(lines[-1][7:]))
            r["measure"]["load"] = [round(v, 2) for v in os.getloadavg()]
            save_json(results_path, results)
            log(f"{size}: {json.dumps(r['measure'])}")
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    rows = [("tracks (stored)", lambda r: f"{r['tracks']:,}"), ("vectors", lambda r: f"{r['vectors']:,}"),
            ("hours", lambda r: f"{r['hours']:,.0f}"),
            ("generate + save s", lambda r: f"{r['generate_s']:.0f} + {r['save_s']:.0f}"),
            ("store MB", lambda r: f"{r['store_bytes'] / 1e6:,.0f}"),
            ("open s", lambda r: f"{r['measure']['open_s']:.2f}"),
            ("RSS after open MB", lambda r: f"{r['measure']['rss_open_mb']}"),
            ("exact ms/fragment", lambda r: f"{r['measure']['exact_ms_per_fragment']:,.0f}"),
            ("index", lambda r: r["index_key"]), ("index build s", lambda r: f"{r['index_build_s']:.0f}"),
            ("index MB", lambda r: f"{r['index_bytes'] / 1e6:,.0f}")]
    sizes = [s for s in SIZES if s in results]
    print("\n| | " + " | ".join(sizes) + " |\n|---|" + "---|" * len(sizes))
    for label, f in rows:
        cells = []
        for s in sizes:
            try:
                cells.append(f(results[s]))
            except (KeyError, TypeError):
                cells.append("-")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())

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
decoded and embedded once as `tagmatch scan` does (cached).

Prints one JSON line per stage and a summary table; everything also goes to
~/.cache/tagmatch/scale/results.json.
"""

from __future__ import annotations

import argparse
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

from tagmatch.store.shards import Store, TrackInfo
from tools.scale_data import CACHE, base_store, build_store, exact_reference, query_set
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


class Precomputed:
    """A searcher that answers with results computed before (one batched exact pass for many
    query files is much cheaper than one pass per file): the rows of one file's windows, handed
    out in order as the matcher searches its fragments."""

    def __init__(self, idx: np.ndarray, sim: np.ndarray):
        self.idx, self.sim, self.at = idx, sim, 0

    def search(self, queries: np.ndarray, k: int):
        a, self.at = self.at, self.at + len(queries)
        return self.idx[a : self.at, :k], self.sim[a : self.at, :k]


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

"""Benchmark tagmatch on the dev corpus (`make bench`).

Measures what a user would care about: how often a messy copy of a library song is identified
(at the calibrated threshold and as the bare best guess), how often a song that is NOT in the
library is wrongly matched, and how fast indexing and scanning are. With --calibrate it first
fits the score calibration on a separate query set and writes it into the model file.

Reference library: the corpus' known tracks, symlinked into one folder (index_library indexes a
folder and the corpus mixes known and unknown songs in its package folders). Queries: degraded
copies of known and of held-out unknown tracks, made with real encoders (LAME through
libsndfile for MP3, FFmpeg through PyAV for AAC and Opus), deterministic from --seed and cached
as audio files under ~/.cache/tagmatch/bench/queries so re-runs skip generation. Nothing is
written into the repository.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tagmatch.fsutil import atomic_write_text
from tagmatch.progress import Progress
from tagmatch.train import queries as query_sets
from tagmatch.train.calibrate import calibrate, run_queries
from tagmatch.train.devcorpus import DEFAULT_ROOT, DevCorpus, Track, corpus_available, load_corpus
from tagmatch.train.queries import CONDITION_NAMES, GEN_VERSION, Query, link_reference, select_conditions

DEFAULT_CACHE = Path.home() / ".cache" / "tagmatch" / "bench"


WHOLE_LIMIT = 30  # whole-file queries are long: this many tracks per side by default


CONFIDENCE_GRID = (0.999, 0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1, 0.01)


_T0 = time.perf_counter()


def log(msg: str) -> None:
    """One progress line with the elapsed time (the bench runs for minutes; no fancy bars)."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", flush=True)


def loadavg() -> list[float]:
    """The 1/5/15-minute load average: timings are only comparable at similar load."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def log_progress(p: Progress) -> None:
    """The library's progress events as the bench's log lines: each error, every 100th item, and
    a stage's summary when it ends."""
    if p.error:
        log(f"{p.stage}: {p.item}: {p.error}")
    if p.info and p.done == p.total:
        log(f"{p.stage}: {p.info}")
    elif p.done % 100 == 0 or p.done == p.total:
        log(f"{p.stage}: {p.done}/{p.total} {p.unit or 'files'} ({p.info})" if p.info else
            f"{p.stage}: {p.done}/{p.total} {p.unit or 'files'}")


def make_queries(*args, **kw) -> list[Query]:
    """`tagmatch.train.queries.make_queries`, logging as the bench does."""
    return query_sets.make_queries(*args, on_progress=log_progress, **kw)


def warm_up(model) -> float:
    """Compile the encoder for every input shape it uses, so no timing below includes JIT."""
    t0 = time.perf_counter()
    fc = model.feature_config
    if model.model_config.kind == "window":
        for n in (8, 16, 24, 32):  # every batch shape `embed` uses
            model.embed(np.zeros((n, fc.window_frames, fc.n_mels), np.float32))
    else:
        stride = model.model_config.stride
        for n in (32, 64, 128):  # every chunk `embed_at` uses
            model.embed_at(np.zeros(((n + 3) * stride, fc.n_mels), np.float32), np.arange(n) * stride)
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """CPU time of this process and of its worker processes (the index runs on joblib workers)."""
    import psutil

    me = psutil.Process()
    total = time.process_time()
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # ended meanwhile
            pass
    return total


def build_store(corpus: DevCorpus, model, cache: Path, reuse: bool):
    """Index the known tracks into a fresh store (or reuse the last one) and measure the speed.

    Returns (store, index stats, symlink name -> track); with --reuse-store the stats are those
    of the run that built it.
    """
    from tagmatch.errors import StoreError
    from tagmatch.store.index import index_library
    from tagmatch.store.folder import disk_bytes
    from tagmatch.store.shards import Store

    ref_dir, store_path, stats_path = cache / "ref", cache / "store", cache / "store-stats.json"
    by_name = link_reference(corpus, ref_dir)
    if reuse and store_path.exists() and stats_path.exists():
        try:
            store = Store.load(store_path)
            store.check_model(model.model_id, model.feature_config, store_path)
            store, report = index_library(ref_dir, store, model)
            if not (report.added or report.updated or report.removed):
                stats = json.loads(stats_path.read_text())
                stats["reused"] = True
                log(f"reusing store {store_path} ({len(store.tracks)} tracks, built by this model)")
                return store, stats, by_name
            log("reference folder changed since the store was built: re-indexing")
        except StoreError as exc:
            log(f"cannot reuse the store ({exc}): re-indexing")
    shutil.rmtree(store_path, ignore_errors=True)  # ours: a cache of derived vectors

    def progress(p) -> None:
        if p.error:
            log(f"index error {p.item}: {p.error}")
        if p.done % 20 == 0 or p.done == p.total:
            log(f"indexed {p.done}/{p.total} tracks")

    log(f"indexing {len(corpus.known)} known tracks (load {loadavg()})")
    w0, c0 = time.perf_counter(), cpu_seconds()
    store, report = index_library(ref_dir, None, model, progress=progress)  # as `tagmatch index`: auto
    wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    store.save(store_path)
    size = disk_bytes(store_path)
    hours = max(report.audio_seconds / 3600, 1e-9)  # nothing indexed: no division by zero
    stats = {
        "tracks": len(store.tracks), "errors": report.errors, "audio_hours": round(hours, 3),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "x_realtime": round(report.audio_seconds / wall, 1),
        "store_bytes": size, "store_mb_per_hour": round(size / 1e6 / hours, 3),
        "vectors": store.n_vectors, "vectors_per_hour": round(store.n_vectors / hours),
        "loadavg_after": loadavg(), "reused": False,
    }
    atomic_write_text(stats_path, json.dumps(stats, indent=1))
    log(f"indexed {stats['tracks']} tracks, {hours:.2f} h in {wall:.0f} s ({stats['x_realtime']}x realtime)")
    return store, stats, by_name


def queryable(corpus: DevCorpus, store, by_name: dict[str, Track]) -> DevCorpus:
    """`tagmatch.train.queries.queryable`, logging as the bench does."""
    return query_sets.queryable(corpus, store, by_name, on_progress=log_progress)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summary_row(records: list[dict]) -> dict:
    """Accuracy on known-song queries, false matches on unknown-song queries, and speed."""
    known = [r for r in records if r["kind"] == "known"]
    unknown = [r for r in records if r["kind"] == "unknown"]
    hit = sum(r["status"] == "match" and r["correct"] for r in known)
    top1 = sum(r["correct"] for r in known)
    wrong = sum(r["status"] == "match" and not r["correct"] for r in known)
    false = sum(r["status"] == "match" for r in unknown)
    walls = [r["wall_ms"] for r in records]
    return {
        "n_known": len(known), "acc_threshold": _rate(hit, len(known)), "acc_top1": _rate(top1, len(known)),
        "known_wrong_matches": wrong, "n_unknown": len(unknown), "false_matches": false,
        "false_match_rate": _rate(false, len(unknown)), "errors": sum(r["status"] == "error" for r in records),
        "median_wall_ms": statistics.median(walls) if walls else None,
    }


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per condition (in the order met) plus an 'overall' row."""
    out: dict[str, dict] = {}
    for cond in dict.fromkeys(r["condition"] for r in records):
        out[cond] = summary_row([r for r in records if r["condition"] == cond])
    out["overall"] = summary_row(records)
    return out


def speed_summary(records: list[dict]) -> dict:
    def stats(key: str) -> dict:
        v = [r[key] for r in records]
        return {"mean": round(statistics.fmean(v), 1), "median": round(statistics.median(v), 1)} if v else {}

    audio_s = sum(r["duration_s"] or 0.0 for r in records)
    wall_s = sum(r["wall_ms"] for r in records) / 1000
    excerpts = [r["cpu_ms"] for r in records if r["condition"] != "whole_mp3_128k"]
    whole = [r for r in records if r["condition"] == "whole_mp3_128k"]
    return {"queries": len(records), "audio_s": round(audio_s, 1), "wall_ms": stats("wall_ms"),
            "cpu_ms": stats("cpu_ms"), "x_realtime": round(audio_s / wall_s, 1) if wall_s else None,
            "excerpt_cpu_ms_median": round(statistics.median(excerpts), 1) if excerpts else None,
            "whole_cpu_ms_median": {k: round(statistics.median(r["cpu_ms"] for r in whole if r["kind"] == k), 1)
                                    for k in ("known", "unknown") if any(r["kind"] == k for r in whole)},
            "stopped_early": sum(r.get("stopped_at_s") is not None for r in records),
            "whole_stopped_early": sum(r.get("stopped_at_s") is not None for r in whole), "whole": len(whole)}


def tradeoff(records: list[dict], calibration) -> list[dict]:
    """Known accuracy vs unknown false-match rate as the confidence threshold is loosened."""
    known = [r for r in records if r["kind"] == "known"]
    unknown = [r for r in records if r["kind"] == "unknown"]

    def conf(r: dict) -> float:
        return r["confidence"] if r["confidence"] is not None else -1.0

    rows = []
    for c in CONFIDENCE_GRID:
        rows.append({
            "confidence": c, "margin": calibration.mid + calibration.width * math.log(c / (1 - c)),
            "known_acc": _rate(sum(r["correct"] and conf(r) >= c for r in known), len(known)),
            "known_wrong": _rate(sum(not r["correct"] and conf(r) >= c for r in known), len(known)),
            "false_match_rate": _rate(sum(conf(r) >= c for r in unknown), len(unknown)),
        })
    rows.append({"confidence": 0.0, "margin": None,  # no threshold: the best guess is always taken
                 "known_acc": _rate(sum(r["correct"] for r in known), len(known)),
                 "known_wrong": _rate(sum(not r["correct"] for r in known), len(known)),
                 "false_match_rate": _rate(sum(r["confidence"] is not None for r in unknown), len(unknown))})
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def print_table(summary: dict[str, dict]) -> None:
    print(f"\n{'condition':<20} {'known':>5} {'acc@thr':>8} {'top-1':>7} {'wrong':>5} "
          f"{'unknown':>7} {'false':>5} {'fm rate':>7} {'errors':>6} {'med ms':>7}")
    for name, r in summary.items():
        if name == "overall":
            print("-" * 84)
        print(f"{name:<20} {r['n_known']:>5} {_pct(r['acc_threshold']):>8} {_pct(r['acc_top1']):>7} "
              f"{r['known_wrong_matches']:>5} {r['n_unknown']:>7} {r['false_matches']:>5} "
              f"{_pct(r['false_match_rate']):>7} {r['errors']:>6} {r['median_wall_ms'] or 0:>7.0f}")
    print("acc@thr: status 'match' with the right song (remasters count); top-1: best candidate right, "
          "no threshold;\nwrong: known queries matched to the wrong song; false: unknown-song queries "
          "reported as a match.")


def print_speed(index: dict, query: dict, load: dict[str, list[float]], compile_s: float) -> None:
    print(f"\nindex: {index['tracks']} tracks, {index['audio_hours']:.2f} h of audio in {index['wall_s']:.0f} s wall "
          f"= {index['x_realtime']:.0f}x realtime (decode included), {index['cpu_s']:.0f} s CPU "
          f"({index['cpu_s'] / index['wall_s']:.2f} cores){' [reused store: timings from the run that built it]' if index.get('reused') else ''}")
    for path, err in index["errors"]:
        print(f"index error: {path}: {err}")
    print(f"store: {index['store_bytes'] / 1e6:.1f} MB = {index['store_mb_per_hour']:.2f} MB per hour of audio, "
          f"{index['vectors_per_hour']} vectors per hour")
    print(f"queries: {query['queries']} files, {query['audio_s'] / 60:.0f} min of audio; per file wall mean "
          f"{query['wall_ms']['mean']:.0f} ms, median {query['wall_ms']['median']:.0f} ms; CPU mean "
          f"{query['cpu_ms']['mean']:.0f} ms, median {query['cpu_ms']['median']:.0f} ms; "
          f"{query['x_realtime']}x realtime")
    if query.get("excerpt_cpu_ms_median") is not None:
        print(f"CPU median per 10-20 s excerpt {query['excerpt_cpu_ms_median']:.0f} ms"
              + "".join(f", per whole {k} file {v:.0f} ms" for k, v in query["whole_cpu_ms_median"].items())
              + f"; stopped early, sure after the first fragment(s): {query['stopped_early']} of {query['queries']} "
              f"files ({query['whole_stopped_early']} of {query['whole']} whole files)")
    print(f"encoder compile (excluded above): {compile_s:.1f} s")
    print("load average (1/5/15 min): " + "; ".join(f"{k} {v}" for k, v in load.items())
          + f"  ({os.cpu_count()} cores)")


def print_tradeoff(rows: list[dict]) -> None:
    print(f"\n{'confidence >=':>13} {'margin >=':>10} {'known acc':>10} {'known wrong':>12} {'unknown false':>14}")
    for r in rows:
        c = "none" if r["margin"] is None else f"{r['confidence']:g}"
        m = "-" if r["margin"] is None else f"{r['margin']:.4f}"
        print(f"{c:>13} {m:>10} {_pct(r['known_acc']):>10} {_pct(r['known_wrong']):>12} "
              f"{_pct(r['false_match_rate']):>14}")


def print_calibration(calib: dict) -> None:
    f, new, old = calib["facts"], calib["new"], calib["old"]
    print(f"\ncalibration fitted on seeds {', '.join(map(str, calib['seeds']))} ({f['n_queries']} queries, "
          f"{f['n_unknown']} of them unknown-song): mid={new['mid']} width={new['width']} "
          f"(was mid={old['mid']} width={old['width']}), written to {calib['model_path']}")
    print(f"  fit set: top unknown margins {f['unknown_margin_top']}, 99.5th percentile "
          f"{f['unknown_margin_p99_5']:.4f}; {f['allowed_false_matches']} false match(es) tolerated")
    print(f"  at mid: false-match rate {f['false_match_rate_at_mid']:.2%}, known accuracy {f['known_acc_at_mid']:.1%}; "
          f"right-song margin median {f['right_margin_median']:.4f}; free logistic fit mid "
          f"{f['free_logistic']['mid']} width {f['free_logistic']['width']}; confidence 0.9 at margin "
          f"{f['margin_at_conf_0.9']:.4f} (known accuracy there {f['known_acc_at_conf_0.9']:.1%})")


def _model_path(arg: Path | None) -> Path:
    from tagmatch.model.modelfile import default_model_path

    return Path(arg or os.environ.get("TAGMATCH_MODEL") or default_model_path())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_ROOT, help="dev corpus root (default %(default)s)")
    ap.add_argument("--model", type=Path, default=None, help="model file (default: $TAGMATCH_MODEL or the shipped one)")
    ap.add_argument("--seed", type=int, default=1, help="query generation seed; --calibrate fits on seed+1000")
    ap.add_argument("--limit", type=int, default=None, help="only the first N known and N unknown tracks as queries")
    ap.add_argument("--whole-limit", type=int, default=WHOLE_LIMIT, help="tracks per side for whole_mp3_128k")
    ap.add_argument("--conditions", default=None, help="comma-separated subset of: " + ", ".join(CONDITION_NAMES))
    ap.add_argument("--calibrate", action="store_true", help="fit the calibration first and write it into the model")
    ap.add_argument("--fit-unknown-sets", type=int, default=5,
                    help="unknown-song query sets in the calibration fit (seeds +1000, +2000, ...)")
    ap.add_argument("--reuse-store", action="store_true", help="reuse the last reference store if still valid")
    ap.add_argument("--search", choices=("auto", "approximate", "exact"), default="auto",
                    help="search the queries as `tagmatch index --search` would have the scan search (auto: "
                         "exact up to tagmatch.store.ann.EXACT_MAX_VECTORS, as a user's store of this size)")
    ap.add_argument("--probe", default=None, metavar="NPROBE:REFINE",
                    help="approximate search: cells probed and re-rank factor (default: tagmatch.store.ann.default_probe)")
    ap.add_argument("--query-hop", type=float, default=None, metavar="S",
                    help="seconds between query windows (default: the model's own, as `tagmatch scan`)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="work folder (default %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default CACHE/results.json)")
    args = ap.parse_args(argv)

    if not corpus_available(args.corpus):
        print(f"bench: dev corpus not found at {args.corpus}; get it with ../shared/corpus/fetch-dev-corpus "
              "(or set TAGMATCH_DEV_CORPUS). Skipping.", flush=True)
        return 0
    global _T0
    _T0 = time.perf_counter()
    conditions = select_conditions(args.conditions)
    out_path = args.out or args.cache / "results.json"
    load = {"start": loadavg()}
    corpus = load_corpus(args.corpus)
    log(f"corpus {corpus.root}: {len(corpus.known)} known, {len(corpus.unknown)} unknown tracks, "
        f"{len(corpus.bench_noise)} bench noise recordings; load {load['start']}")

    from tagmatch.model.modelfile import load_model
    from tagmatch.threads import one_compute_thread

    one_compute_thread()  # as `tagmatch index` and `tagmatch scan` run it
    model_path = _model_path(args.model)
    model = load_model(model_path)
    compile_s = warm_up(model)
    log(f"model {model_path} (id {model.query_id}, {model.calibration}); encoder compiled in {compile_s:.1f} s")

    store, index_stats, by_name = build_store(corpus, model, args.cache, args.reuse_store)
    from tagmatch.store.ann import searcher_for, update_index

    search = update_index(store, args.search)  # after the index timing, as `tagmatch index` reports it apart
    searcher = searcher_for(store)
    if args.probe and searcher is not store:
        searcher.nprobe, searcher.refine = (int(v) for v in args.probe.split(":"))
        search += f"; probing {searcher.nprobe} cells, re-rank {searcher.refine}x"
    log(search)
    load["after index"] = loadavg()
    corpus = queryable(corpus, store, by_name)

    stages = {"index_s": round(time.perf_counter() - _T0, 1)}
    calib = None
    if args.calibrate:
        t0 = time.perf_counter()
        calib = calibrate(corpus, conditions, store, model, model_path, by_name, cache=args.cache, seed=args.seed,
                          sets=args.fit_unknown_sets, limit=args.limit, whole_limit=args.whole_limit,
                          searcher=searcher, query_hop_s=args.query_hop, on_progress=log_progress,
                          by="tools/bench.py --calibrate")
        calib["summary"] = summarise(calib["records"])
        stages["calibration_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    queries = make_queries(corpus, conditions, args.seed, args.limit, args.whole_limit, args.cache)
    stages["queries_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    records = run_queries(queries, store, model, by_name, "bench", searcher, args.query_hop, log_progress)
    stages["scan_s"] = round(time.perf_counter() - t0, 1)
    load["end"] = loadavg()

    summary = summarise(records)
    speed = speed_summary(records)
    curve = tradeoff(records, model.calibration)
    print(f"\n== tagmatch bench: model {model.query_id} ({model.calibration}), seed {args.seed}, "
          f"{len(queries)} queries ==")
    print_table(summary)
    print_speed(index_stats, speed, load, compile_s)
    print(search)
    print_tradeoff(curve)
    if calib:
        print_calibration(calib)
    from tools.bench_learning import calibration_study, finetune_study, print_studies, rejection_study

    t0 = time.perf_counter()
    learning = {"calibration": calibration_study(records, model.calibration),
                "rejections": rejection_study(records, store, model, by_name, searcher),
                "finetune": finetune_study(records, store, model, by_name, searcher)}
    stages["learning_s"] = round(time.perf_counter() - t0, 1)
    print_studies(learning["calibration"], learning["rejections"], learning["finetune"])
    runtime = time.perf_counter() - _T0
    stages["total_s"] = round(runtime, 1)
    result = {
        "config": {"corpus": str(corpus.root), "model": str(model_path), "model_id": model.model_id,
                   "query_id": model.query_id, "calibration": model.calibration.to_dict(),
                   "seed": args.seed, "limit": args.limit, "query_hop_s": args.query_hop, "whole_limit": args.whole_limit,
                   "conditions": {c.name: c.codec for c in conditions}, "gen_version": GEN_VERSION,
                   "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")},
        "summary": summary, "speed": {"index": index_stats, "query": speed, "encoder_compile_s": round(compile_s, 2),
                                      "search": search},
        "loadavg": load, "tradeoff": curve, "calibration": calib, "learning": learning, "stages": stages,
        "records": records,
    }
    atomic_write_text(out_path, json.dumps(result, indent=1))
    log(f"bench done in {runtime:.0f} s ({', '.join(f'{k} {v:.0f}' for k, v in stages.items())}); "
        f"results in {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

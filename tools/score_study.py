"""Scoring study (`make score-study`): other ways to turn a query's nearest neighbours into a
suggestion and a confidence, on the benchmark's queries, without re-embedding anything.

Every query of the bench (seed 1, all conditions) and of its calibration sets (seeds 1001, 2001,
3001) is embedded once and searched exactly once for its top 32 stored neighbours per window;
that is cached (~/.cache/tagmatch/bench/hits-<model>.joblib). Each scoring variant then turns
the cached hits into a best track and a raw score per query, is calibrated by the rule of
`tools/bench.py --calibrate` (the threshold is the smallest score that fewer than 0.5% of the
calibration sets' unknown-song queries reach), and is measured on seed 1: top-1 at that
threshold per condition, and false matches on unknown songs. The study keeps those three
calibration sets (567 unknown-song queries), so its figures compare with the scoring-study tables
in docs/benchmarks.md; the shipped calibration (`tools/bench.py --calibrate`, `tagmatch calibrate
--dev-corpus`) is fitted on five (seeds 1001-5001).

`--early-stop` studies instead when a scan may stop reading a file (`MatchConfig.stop_confidence`):
the margins that the first 5, 10, 15... s of every query reach, for unknown songs (which must
never look sure) and known ones, and what stopping at a margin costs and saves.

Needs `make bench` first (its query files and reference links); builds the bench's store when
it is missing.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import joblib
import numpy as np

from tagmatch.train.calibrate import MAX_FALSE_MATCH
from tagmatch.train.queries import select_conditions
from tools import bench

from tagmatch.audio.decode import load_audio
from tagmatch.train.devcorpus import DEFAULT_ROOT, corpus_available, load_corpus
from tagmatch.errors import TagmatchError
from tagmatch.match.config import MatchConfig
from tagmatch.match.decide import decide
from tagmatch.match.query import fragment_bounds, frame_grid, query_frames
from tagmatch.match.votes import Hits, rival_margins, vote

K = 32  # neighbours cached per window (the matcher uses 10)
TEST_SEED = 1
FIT_SEEDS = (1001, 2001, 3001)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- the cached hits ----------------------------------------------------------------------------
def query_sets(corpus, cache: Path) -> list[tuple[int, object]]:
    conditions = select_conditions(None)
    fit_conditions = [c for c in conditions if c.excerpt_s is not None]
    qs = [(TEST_SEED, q) for q in bench.make_queries(corpus, conditions, TEST_SEED, None, bench.WHOLE_LIMIT, cache)]
    qs += [(FIT_SEEDS[0], q) for q in bench.make_queries(corpus, fit_conditions, FIT_SEEDS[0], None,
                                                         bench.WHOLE_LIMIT, cache)]
    for seed in FIT_SEEDS[1:]:
        qs += [(seed, q) for q in bench.make_queries(corpus, fit_conditions, seed, None, bench.WHOLE_LIMIT, cache,
                                                     kinds=("unknown",))]
    return qs


def hits_for(queries, store, model, by_name, cache_file: Path) -> list[dict]:
    """Per query: its windows' top-K (track, time, sim), embeddings, start frames, frame count and
    truth."""
    done = joblib.load(cache_file) if cache_file.exists() else {}
    fc, cfg = model.feature_config, MatchConfig()
    out, t0, new = [], time.perf_counter(), 0
    for i, (seed, q) in enumerate(queries, 1):
        key = str(q.path)
        if key not in done or (done[key]["error"] is None and "vectors" not in done[key]):  # older caches
            rec = {"error": None}
            try:
                y = load_audio(q.path, fc.sample_rate)
                S, starts = query_frames(y, model, cfg)
                n_frames = len(S)
                vectors = model.embed_query(S, starts)
                idx, sim = store.search(vectors, K)
                track, when = store.lookup(idx)
                rec.update(track=track.astype(np.int32), time=when.astype(np.float32), sim=sim.astype(np.float32),
                           starts=starts, n_frames=n_frames, vectors=vectors.astype(np.float16))
            except TagmatchError as exc:
                rec["error"] = str(exc)
            done[key] = rec
            new += 1
            if new % 200 == 0:
                joblib.dump(done, cache_file)
                log(f"hits: {i}/{len(queries)} ({time.perf_counter() - t0:.0f} s)")
        rec = dict(done[key])
        rec.update(seed=seed, condition=q.condition, kind=q.kind, group=q.group)
        out.append(rec)
    if new:
        joblib.dump(done, cache_file)
    groups = [by_name.get(Path(t.path).name) for t in store.tracks]
    for r in out:
        r["track_group"] = groups
    return out


# ---- scoring variants -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """How hits become per-track scores, and which number is thresholded."""

    name: str
    k: int = 10
    transform: Callable | None = None  # (query's hits) -> sim' [w, K]: what a hit votes with
    raw: str = "margin"  # "margin" | "ratio" | "margin_x_agree"
    bin_s: float = 0.5
    aligned: int = 0  # > 0: the matcher's own decision (`decide`), this many tracks scored along their alignment


@dataclass(frozen=True)
class Context:
    store: object
    model: object

    @property
    def frame_s(self) -> float:
        return self.model.feature_config.frame_seconds


def decided(r: dict, v: Variant, ctx: Context):
    """The matcher's FileMatch for a query's cached hits (top v.k of them), as `match_vectors`
    decides with exact search."""
    frame_s, hits = ctx.frame_s, []
    cfg = MatchConfig(top_k=v.k, offset_bin_s=v.bin_s, rescore=v.aligned)
    for a, b in fragment_bounds(r["n_frames"], *frame_grid(ctx.model, cfg)[1:]):
        sel = (r["starts"] >= a) & (r["starts"] < b)
        if sel.any():
            hits.append(Hits(a * frame_s, r["track"][sel, : v.k], r["time"][sel, : v.k], r["sim"][sel, : v.k],
                              r["starts"][sel] * frame_s, r["vectors"][sel].astype(np.float32)))
    return decide("", hits, ctx.store, ctx.model, cfg)


def totals_of(r: dict, v: Variant, ctx: Context) -> tuple[dict[int, float], list]:
    sim = r["sim"] if v.transform is None else v.transform(r)
    track, when, sim = r["track"][:, : v.k], r["time"][:, : v.k], sim[:, : v.k]
    q_time = r["starts"] * ctx.frame_s
    frags = []
    for a, b in fragment_bounds(r["n_frames"], *frame_grid(ctx.model, MatchConfig())[1:]):
        sel = (r["starts"] >= a) & (r["starts"] < b)
        if sel.any():
            frags.append(vote(track[sel], when[sel], sim[sel], q_time[sel], v.bin_s))
    n = len(frags)
    totals: dict[int, float] = {}
    for f in frags:
        for t, (s, _) in f.items():
            totals[t] = totals.get(t, 0.0) + s / n
    return totals, frags


def score(r: dict, v: Variant, ctx: Context) -> tuple[int | None, float]:
    """(best track, raw score) of one query under variant v."""
    if r["error"] is not None:
        return None, -math.inf
    if v.aligned:
        fm = decided(r, v, ctx)
        return (fm.match.track, fm.match.margin) if fm.match else (None, -math.inf)
    totals, frags = totals_of(r, v, ctx)
    if not totals:
        return None, -math.inf
    margins = rival_margins(totals, MatchConfig().same_audio_ratio)
    best = max(totals, key=totals.get)
    m = margins[best]
    if v.raw == "ratio":
        return best, m / max(totals[best], 1e-9)
    if v.raw == "margin_x_agree":
        agree = sum(1 for f in frags if f and max(f, key=lambda t: f[t][0]) == best) / max(1, len(frags))
        return best, m * agree
    return best, m


def above_background(q: float) -> Callable:
    """Each hit's similarity minus the window's q-quantile of its K neighbours' (its background)."""
    def f(r: dict) -> np.ndarray:
        return np.maximum(r["sim"] - np.quantile(r["sim"], q, axis=1, keepdims=True), 0.0)
    return f


def minus_kth(j: int) -> Callable:
    def f(r: dict) -> np.ndarray:
        return np.maximum(r["sim"] - r["sim"][:, j : j + 1], 0.0)
    return f


def power(p: float) -> Callable:
    def f(r: dict) -> np.ndarray:
        return np.maximum(r["sim"], 0.0) ** p
    return f


def specific(c: float, far_s: float | None = None) -> Callable:
    """Down-weight a hit whose track fills many of the window's K neighbours (a drone or a held
    chord matches everywhere in a stationary stretch): x min(1, c / n), n = that track's hits
    among the K; with `far_s`, x c / (c + n_far), counting only its hits > far_s away in time."""
    def f(r: dict) -> np.ndarray:
        same = r["track"][:, :, None] == r["track"][:, None, :]
        if far_s is None:
            return r["sim"] * np.minimum(1.0, c / same.sum(2))
        far = same & (np.abs(r["time"][:, :, None] - r["time"][:, None, :]) > far_s)
        return r["sim"] * (c / (c + far.sum(2)))
    return f


VARIANTS = (
    Variant("shipped: top-10 votes pick 5 tracks, scored along their alignment, margin", aligned=5),
    Variant("... 3 tracks", aligned=3),
    Variant("... 8 tracks", aligned=8),
    Variant("votes only (no aligned score): top-10, margin"),
    Variant("top-20, margin", k=20),
    Variant("top-10, ratio margin/score", raw="ratio"),
    Variant("top-10, margin x fragments agreeing", raw="margin_x_agree"),
    Variant("top-10, sim - 32nd sim", transform=minus_kth(31)),
    Variant("top-10, sim - 16th sim", transform=minus_kth(15)),
    Variant("top-10, sim - median of 32", transform=above_background(0.5)),
    Variant("top-20, sim - 32nd sim", k=20, transform=minus_kth(31)),
    Variant("top-10, sim^3", transform=power(3.0)),
    Variant("top-10, margin, 0.25 s bins", bin_s=0.25),
    Variant("top-10, hits weighted by the track's share of the 32 (c 8)", transform=specific(8)),
    Variant("top-10, hits weighted by the track's far hits among the 32 (c 8, > 1.5 s)",
            transform=specific(8, 1.5)),
)


def evaluate(records: list[dict], v: Variant, ctx: Context) -> dict:
    rows = []
    for r in records:
        best, raw = score(r, v, ctx)
        right = r["kind"] == "known" and best is not None and r["track_group"][best] is not None \
            and r["track_group"][best].group == r["group"]
        rows.append((r["seed"], r["condition"], r["kind"], right, raw))
    fit = [x for x in rows if x[0] != TEST_SEED]
    u = np.sort([x[4] for x in fit if x[2] == "unknown"])[::-1]
    allowed = math.ceil(MAX_FALSE_MATCH * len(u)) - 1
    threshold = math.nextafter(float(u[allowed]), math.inf) if np.isfinite(u[allowed]) else -math.inf
    test = [x for x in rows if x[0] == TEST_SEED]
    out = {"variant": v.name, "threshold": threshold, "conditions": {}}
    for cond in dict.fromkeys(x[1] for x in test):
        known = [x for x in test if x[1] == cond and x[2] == "known"]
        unknown = [x for x in test if x[1] == cond and x[2] == "unknown"]
        out["conditions"][cond] = {
            "known": len(known), "top1_at_threshold": np.mean([x[3] and x[4] >= threshold for x in known]),
            "top1": np.mean([x[3] for x in known]),
            "false": int(sum(x[4] >= threshold for x in unknown)), "unknown": len(unknown)}
    known = [x for x in test if x[2] == "known"]
    unknown = [x for x in test if x[2] == "unknown"]
    fit_known = [x for x in fit if x[2] == "known"]  # seed 1001's: the threshold comes from unknowns only
    out["fit_known_at_threshold"] = np.mean([x[3] and x[4] >= threshold for x in fit_known])
    out["overall"] = {"top1_at_threshold": np.mean([x[3] and x[4] >= threshold for x in known]),
                      "top1": np.mean([x[3] for x in known]),
                      "false": int(sum(x[4] >= threshold for x in unknown)), "unknown": len(unknown),
                      "wrong_at_threshold": int(sum((not x[3]) and x[4] >= threshold for x in known))}
    return out


# ---- stopping early -----------------------------------------------------------------------------
def prefix_margins(r: dict, ctx: Context, step_s: float = 5.0) -> list[tuple[float, int | None, float]]:
    """(seconds read, best track, margin) after every `step_s` of a query shorter than its end,
    from the windows that start before then, scored as the shipped matcher scores them (top-10,
    10 s fragments)."""
    out, v, frame_s = [], VARIANTS[0], ctx.frame_s
    t = step_s
    while round(t / frame_s) < r["n_frames"] - 1:
        frames = int(round(t / frame_s))
        keep = r["starts"] < frames  # the windows that start in it, as a fragment's
        cut = {**r, "n_frames": frames, "starts": r["starts"][keep], "sim": r["sim"][keep],
               "track": r["track"][keep], "time": r["time"][keep], "vectors": r["vectors"][keep]}
        best, m = score(cut, v, ctx) if keep.any() else (None, -math.inf)
        out.append((t, best, m))
        t += step_s
    return out


def early_stop_study(records: list[dict], ctx: Context) -> None:
    fc, calibration = ctx.model.feature_config, ctx.model.calibration
    frame_s = fc.frame_seconds

    def right(r, best):
        return r["kind"] == "known" and best is not None and r["track_group"][best] is not None \
            and r["track_group"][best].group == r["group"]

    rows = []
    for r in records:
        if r["error"] is None:
            best, m = score(r, VARIANTS[0], ctx)
            rows.append((r, right(r, best), m, [(t, right(r, b), mm) for t, b, mm in prefix_margins(r, ctx)]))
    print("\nbest margin reached by the first N s of unknown-song queries (all seeds):")
    print("| first | queries | max | 99.5th pct | whole queries' max |")
    print("|---|---|---|---|---|")
    whole_max = max(m for r, _, m, _ in rows if r["kind"] == "unknown")
    for t in (5.0, 10.0, 15.0, 20.0):
        ms = [mm for r, _, _, p in rows if r["kind"] == "unknown" for tt, _, mm in p if tt == t]
        if ms:
            print(f"| {t:g} s | {len(ms)} | {max(ms):.3f} | {np.quantile(ms, 0.995):.3f} | {whole_max:.3f} |")
    thr = calibration.mid
    print("\nstopping after the first whole fragment (10, 20, ... s; audio follows) whose margin reaches E:")
    print("| E (margin) (confidence) | seeds | audio read | files stopped | known right at threshold (reading all) "
          "| known wrong | unknown false |")
    print("|---|---|---|---|---|---|---|")
    for conf in (0.99, 0.999, 0.9999, 0.99999):
        e = calibration.mid + calibration.width * math.log(conf / (1 - conf))
        for label, sel in (("1001-3001", lambda r: r["seed"] != TEST_SEED), ("1", lambda r: r["seed"] == TEST_SEED)):
            sub = [x for x in rows if sel(x[0])]
            read = total = stopped = acc = acc_all = wrong = false = 0
            n_known = sum(r["kind"] == "known" for r, *_ in sub)
            for r, ok_all, m_all, parts in sub:
                dur = r["n_frames"] * frame_s
                # as QueryAudio: after a whole fragment, if a window can start after it
                stop = next(((t, ok, m) for t, ok, m in parts
                             if t % 10 == 0 and round(t / frame_s) + fc.window_frames <= r["n_frames"]
                             and m >= e), None)
                ok, m = (stop[1], stop[2]) if stop else (ok_all, m_all)
                read += stop[0] if stop else dur
                total += dur
                stopped += stop is not None
                if r["kind"] == "known":
                    acc += ok and m >= thr
                    acc_all += ok_all and m_all >= thr
                    wrong += (not ok) and m >= thr
                else:
                    false += m >= thr
            print(f"| {e:.4f} ({conf}) | {label} | {100 * read / total:.0f}% | {stopped} of {len(sub)} | "
                  f"{100 * acc / n_known:.1f}% ({100 * acc_all / n_known:.1f}%) | {wrong} | {false} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=bench.DEFAULT_CACHE)
    ap.add_argument("--only", default="", help="comma-separated variant numbers (default: all)")
    ap.add_argument("--model", type=Path, default=None, help="model file (default: the shipped one)")
    ap.add_argument("--early-stop", action="store_true", help="study stopping early instead (see above)")
    args = ap.parse_args(argv)
    if not corpus_available(DEFAULT_ROOT):
        print("score_study: dev corpus not found; get it with ../shared/corpus/fetch-dev-corpus. Skipping.")
        return 0
    from tagmatch.model.modelfile import load_model

    model = load_model(args.model)
    corpus = load_corpus(DEFAULT_ROOT)
    store, _, by_name = bench.build_store(corpus, model, args.cache, reuse=True)
    corpus = bench.queryable(corpus, store, by_name)
    queries = query_sets(corpus, args.cache)
    log(f"{len(queries)} queries; store {len(store.tracks)} tracks, {store.n_vectors:,} vectors")
    records = hits_for(queries, store, model, by_name, args.cache / f"hits-{model.query_id}.joblib")
    # each variant is calibrated here, so the aligned rows score as the matcher does, also for a
    # model file calibrated before (`decide` follows the model calibration's score). The cached
    # hits hold no audio, so the check against the reference files is not studied here.
    model.calibration = replace(model.calibration, score="aligned")
    ctx = Context(store, model)
    if args.early_stop:
        early_stop_study(records, ctx)
        return 0
    chosen = [VARIANTS[int(i)] for i in args.only.split(",")] if args.only else VARIANTS
    results = [evaluate(records, v, ctx) for v in chosen]
    conds = list(results[0]["conditions"])
    short = {c: c.replace("excerpt", "").replace("_", " ")[:14] for c in conds}
    print(f"\nmodel {model.query_id}")
    print("\n| variant | " + " | ".join(short[c] for c in conds) + " | overall | false | wrong | seed 1001 known |")
    print("|---|" + "---|" * (len(conds) + 4))
    for res in results:
        cells = [f"{100 * res['conditions'][c]['top1_at_threshold']:.1f}" for c in conds]
        o = res["overall"]
        print(f"| {res['variant']} | " + " | ".join(cells) +
              f" | **{100 * o['top1_at_threshold']:.1f}** | {o['false']}/{o['unknown']} | {o['wrong_at_threshold']} |"
              f" {100 * res['fit_known_at_threshold']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

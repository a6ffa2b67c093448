"""The calibration fit: the matcher's raw margin -> a confidence whose 0.5 lets fewer than 0.5%
of unknown songs through.

Known songs (indexed) and held-out unknown songs (not) are degraded into query sets
(`tagmatch.train.queries`) at several seeds, scanned as `tagmatch scan` would, and the fit is
written into the model file (`tagmatch calibrate`, `tools/bench.py --calibrate`).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tagmatch.train.devcorpus import DevCorpus, Track
from tagmatch.progress import OnProgress, Progress, quiet
from tagmatch.train.queries import Condition, Query, make_queries



MAX_FALSE_MATCH = 0.005  # calibration: at most this false-match rate on unknown songs


def run_queries(queries: list[Query], store, model, by_name: dict[str, Track], label: str,
                searcher=None, query_hop_s: float | None = None,
                on_progress: OnProgress = quiet) -> list[dict]:
    """match_file on every query, one at a time so each file's wall and CPU time is its own.
    `searcher`: what `tagmatch scan` would search (default: the store, exact). `query_hop_s`:
    None for the model's own. `by_name` maps a stored track's file name to its corpus track
    (`link_reference`), which says whether an answer is the right song."""
    from tagmatch.match.config import MatchConfig
    from tagmatch.match.decide import match_file

    cfg = MatchConfig(query_hop_s=query_hop_s)  # the threshold is on the calibrated confidence: 0.5
    records = []
    t0 = time.perf_counter()
    for i, q in enumerate(queries, 1):
        w0, c0 = time.perf_counter(), time.process_time()
        fm = match_file(q.path, store, model, cfg, searcher)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        best = fm.match
        pred = by_name.get(Path(store.tracks[best.track].path).name) if best else None
        records.append({
            "condition": q.condition, "kind": q.kind, "query": str(q.path), "source": q.source,
            "group": q.group, "status": fm.status, "error": fm.error,
            "pred_source": str(pred.path) if pred else None, "pred_group": pred.group if pred else None,
            "correct": bool(pred is not None and pred.group == q.group),
            "confidence": best.confidence if best else None, "margin": best.margin if best else None,
            "score": best.score if best else None, "pred_offset_s": best.offset_s if best else None,
            "fragments": [best.fragments_agreeing, best.fragments_total] if best else None,
            "offset_s": q.meta.get("offset_s"), "duration_s": q.meta.get("duration_s"),
            "wall_ms": round(wall * 1000, 1), "cpu_ms": round(cpu * 1000, 1), "stopped_at_s": fm.stopped_at_s,
            "verified": best.verified if best else None,
            "significance": best.significance if best else None,
        })
        on_progress(Progress(label, i, len(queries), str(q.path), fm.error, unit="queries",
                             info=f"{time.perf_counter() - t0:.0f} s"))
    return records


def calibration_data(records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(margin, label, is_unknown) per query: label 1 = a known query whose best candidate is
    the right song; 0 = unknown queries and known queries with a wrong best candidate.
    Queries without a candidate (errors, nothing found) get margin -inf."""
    m = np.array([r["margin"] if r["margin"] is not None else -np.inf for r in records], np.float64)
    label = np.array([r["kind"] == "known" and r["correct"] for r in records], bool)
    unknown = np.array([r["kind"] == "unknown" for r in records], bool)
    return m, label, unknown


def logistic_fit(margin: np.ndarray, label: np.ndarray, min_width: float) -> tuple[float, float]:
    """Two-parameter logistic regression P(label | margin) = sigmoid((margin - mid) / width).
    Returns (mid, width); the width is floored, since separable data would drive it to 0."""
    from scipy.optimize import minimize

    y = label.astype(np.float64)

    def nll(p: np.ndarray) -> float:
        z = (margin - p[0]) / math.exp(p[1])
        return float(np.sum(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)))

    start = np.array([float(np.median(margin)), math.log(max(float(np.std(margin)), min_width))])
    res = minimize(nll, start, method="L-BFGS-B",
                   bounds=[(float(margin.min()), float(margin.max())), (math.log(min_width), math.log(1.0))])
    return float(res.x[0]), float(math.exp(res.x[1]))


def fit_calibration(margin: np.ndarray, label: np.ndarray, unknown: np.ndarray,
                    max_false: float = MAX_FALSE_MATCH, min_width: float = 0.002):
    """Fit Calibration(mid, width) on (margin, label) pairs of a fitting query set.

    mid: the smallest margin (on a 0.0001 grid) reached by fewer than `max_false` of the unknown
    queries (strictly fewer, so with under 1/max_false unknown queries it sits above all of them:
    conservative). width: the scale of a free logistic fit of P(right song | margin), i.e. how
    fast the evidence separates right songs from the rest. (A logistic fit with mid pinned at
    the conservative point instead stretches the width to explain the many right answers just
    below it, and then confidence 0.9 is reached by only half the right answers.)
    Returns (Calibration, facts for the report).
    """
    from tagmatch.model.calibration import Calibration

    u = np.sort(margin[unknown])[::-1]
    if len(u) == 0:
        raise ValueError("calibration needs unknown-song queries")
    allowed = math.ceil(max_false * len(u)) - 1  # false matches tolerated
    edge = float(u[allowed]) if np.isfinite(u[allowed]) else 0.0  # -inf: that query found nothing
    mid = math.floor(edge * 1e4) / 1e4 + 1e-4  # strictly above that unknown margin

    ok = np.isfinite(margin)
    free_mid, free_width = logistic_fit(margin[ok], label[ok], min_width)
    cal = Calibration(mid=round(mid, 4), width=float(f"{free_width:.3g}"))
    known = ~unknown
    pos = label & known
    finite_u = margin[unknown][np.isfinite(margin[unknown])]
    facts = {
        "n_queries": int(len(margin)), "n_unknown": int(unknown.sum()), "n_right": int(label.sum()),
        "allowed_false_matches": allowed, "unknown_margin_top": [round(float(v), 4) for v in u[:5]],
        "unknown_margin_max": float(u[0]),
        "unknown_margin_p99_5": float(np.percentile(finite_u, 99.5)) if len(finite_u) else None,
        "false_match_rate_at_mid": float(np.mean(margin[unknown] >= cal.mid)),
        "known_acc_at_mid": float(np.mean(label[known] & (margin[known] >= cal.mid))) if known.any() else None,
        "right_margin_median": float(np.median(margin[pos])) if pos.any() else None,
        "free_logistic": {"mid": round(free_mid, 4), "width": round(free_width, 4)},
        "margin_at_conf_0.9": cal.mid + cal.width * math.log(9),
        "known_acc_at_conf_0.9": (float(np.mean(label[known] & (margin[known] >= cal.mid + cal.width * math.log(9))))
                                  if known.any() else None),
    }
    return cal, facts


def calibrate(corpus: DevCorpus, conditions: list[Condition], store, model, model_path: Path,
              by_name: dict[str, Track], *, cache: Path, seed: int = 1, sets: int = 5, limit: int | None = None,
              whole_limit: int = 30, searcher=None, query_hop_s: float | None = None,
              on_progress: OnProgress = quiet,
              by: str = "tagmatch calibrate") -> dict:
    """Fit the calibration on query sets of `corpus` (its known songs are what `store` holds),
    write it into `model_path` and into `model`, and return what the fit saw.

    The fit set: known and unknown queries at seed + 1000, plus unknown-only ones at seed + 2000,
    ... (`sets` in all): the threshold rests on the few highest unknown margins, and 27 unknown
    songs x 7 conditions is too few to tolerate even one false match at 0.5%. Whole-file queries
    have no randomness, so they would be the very files a report at `seed` uses: they are left
    out. The model's id is unchanged, so every store built with it stays valid."""
    from tagmatch.model.modelfile import set_calibration

    old = model.calibration
    model.calibration = replace(old, score="verified")  # fit the matcher's current score (older models too)
    fit_conditions = [c for c in conditions if c.excerpt_s is not None] or conditions
    seeds = [seed + 1000 * i for i in range(1, max(1, sets) + 1)]
    queries = make_queries(corpus, fit_conditions, seeds[0], limit, whole_limit, cache, on_progress=on_progress)
    for s in seeds[1:]:
        queries += make_queries(corpus, fit_conditions, s, limit, whole_limit, cache, kinds=("unknown",),
                                on_progress=on_progress)
    records = run_queries(queries, store, model, by_name, "scanning the calibration set", searcher, query_hop_s,
                          on_progress)
    cal, facts = fit_calibration(*calibration_data(records))
    note = (f"{by}, model {model.query_id}: seeds {', '.join(map(str, seeds))}, "
            f"{facts['n_queries']} queries; mid = margin reached by < {MAX_FALSE_MATCH:.1%} of "
            f"{facts['n_unknown']} unknown-song queries; width = free logistic fit of P(right song | margin)")
    set_calibration(model_path, cal, note)
    model.calibration = cal
    return {"old": {"mid": old.mid, "width": old.width}, "new": {"mid": cal.mid, "width": cal.width},
            "facts": facts, "note": note, "model_path": str(model_path), "seeds": seeds,
            "conditions": [c.name for c in fit_conditions], "records": records}


def describe_fit(fit: dict) -> str:
    """Two lines on what `calibrate` fitted and on what, as the CLI and the TUI say it."""
    f, new, old = fit["facts"], fit["new"], fit["old"]
    return (f"{fit['model_path']}: calibration mid {new['mid']} width {new['width']} (was mid {old['mid']} "
            f"width {old['width']}), fitted on {f['n_queries']} queries of seeds {', '.join(map(str, fit['seeds']))}\n"
            f"  {f['n_unknown']} of them unknown songs, {f['allowed_false_matches']} tolerated above the threshold; "
            f"known songs right at the threshold: {f['known_acc_at_mid']:.1%}")

"""`make bench`'s simulated user: what learning from decisions buys, measured on the bench scan.

The user reviews the first half of the bench's queries (a fixed shuffle) and decides each file
with a candidate from the truth: accept the right song, reject anything else (a wrong song, or a
suggestion for a song the library lacks). Then:

- **per-library calibration** (tagmatch.train.decisions): the threshold is refitted from those
  decisions, blended with the model's, and the second half is scored before and after at
  confidence 0.5: known songs matched right, and false matches (wrong songs on known queries plus
  any match on unknown ones). Scored from the recorded margins, so a file that the model's
  calibration stopped reading early keeps the margin of the part it read.
- **fine-tuning** (tagmatch.train.finetune): the query adapter is fine-tuned on the first half's
  decisions and the second half is scanned again with it, scored at the threshold.
- **rejections** (tagmatch.organize.rejections): the first half's rejected files are matched
  again with those rejections in force: how many still get the rejected reference (0 is the aim),
  and how many of them now get the right song.

    python -m tools.bench_learning [--results ~/.cache/tagmatch/bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def halves(records: list[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    order = np.random.default_rng(seed).permutation(len(records))
    half = len(records) // 2
    return [records[i] for i in order[:half]], [records[i] for i in order[half:]]


def decisions(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(margin, right) of every reviewed file that had a candidate."""
    had = [r for r in records if r["margin"] is not None]
    return (np.array([r["margin"] for r in had], np.float64),
            np.array([r["kind"] == "known" and r["correct"] for r in had], np.float64))


def score(records: list[dict], cal) -> dict:
    known = [r for r in records if r["kind"] == "known"]
    unknown = [r for r in records if r["kind"] == "unknown"]

    def matched(r):
        return r["margin"] is not None and cal.confidence(r["margin"]) >= 0.5

    return {"n_known": len(known), "right": sum(matched(r) and r["correct"] for r in known),
            "known_wrong": sum(matched(r) and not r["correct"] for r in known),
            "n_unknown": len(unknown), "unknown_matched": sum(matched(r) for r in unknown)}


def calibration_study(records: list[dict], prior) -> dict:
    from tagmatch.train.decisions import fit_from_decisions

    first, second = halves(records)
    margin, right = decisions(first)
    learned = fit_from_decisions(margin, right, prior)
    return {"decisions": int(len(right)), "right": int(right.sum()), "prior": prior.to_dict(),
            "learned": learned.to_dict(), "before": score(second, prior), "after": score(second, learned)}


def rejection_study(records: list[dict], store, model, by_name, searcher=None) -> dict:
    """Rescan the first half's rejected files with their rejections in force."""
    from tagmatch.match.config import MatchConfig
    from tagmatch.match.decide import match_file
    from tagmatch.organize.rejections import Rejections, encode, decode

    first, _ = halves(records)
    rejected = [r for r in first if r["margin"] is not None and not (r["kind"] == "known" and r["correct"])]
    cfg = MatchConfig()
    rejections, seen = Rejections(), []
    for r in rejected:  # the scan that the user reviewed: its fingerprint and its wrong reference
        fm = match_file(r["query"], store, model, cfg, searcher)
        if fm.match is None or fm.fingerprint is None:
            continue
        ref = store.tracks[fm.match.track].path
        rejections.by_reference.setdefault(ref, []).append(decode(encode(fm.fingerprint)))
        seen.append((r, ref))
    again = right = 0
    for r, ref in seen:
        fm = match_file(r["query"], store, model, cfg, searcher, rejections=rejections)
        if fm.match is not None and store.tracks[fm.match.track].path == ref:
            again += 1
        pred = by_name.get(Path(store.tracks[fm.match.track].path).name) if fm.match else None
        right += bool(r["kind"] == "known" and fm.status == "match" and pred is not None and pred.group == r["group"])
    return {"rejected": len(seen), "rejected_reference_again": again, "known_now_right": right,
            "known_rejected": sum(r["kind"] == "known" for r, _ in seen)}


def finetune_study(records: list[dict], store, model, by_name, searcher=None) -> dict:
    """Fine-tune the query adapter on the first half's decisions (tagmatch.train.finetune), then
    scan the second half again with it (the model's calibration kept, as `train
    --from-decisions` keeps it) and score both at the threshold."""
    from dataclasses import replace
    from types import SimpleNamespace

    from tagmatch.train.calibrate import run_queries
    from tagmatch.train.finetune import decision_pairs, finetune, identity_adapter, separation
    from tagmatch.train.queries import Query

    stored = {}  # corpus file -> the store's copy of it (what a scan's match names)
    for t in store.tracks:
        track = by_name.get(Path(t.path).name)
        if track is not None:
            stored[str(track.path)] = t.path
    first, second = halves(records)
    entries = []
    for r in first:
        if r["margin"] is None or r["pred_source"] not in stored:
            continue
        right = r["kind"] == "known" and r["correct"]
        if right and r["status"] != "match":
            continue  # a right best guess below the threshold: nothing a user could accept as it is
        entries.append({"path": r["query"], "status": r["status"],
                        "match": {"path": stored[r["pred_source"]], "offset_s": r["pred_offset_s"]},
                        "decision": {"status": "accepted" if right else "rejected", "choice": 0}})
    pairs = decision_pairs([SimpleNamespace(files=entries)], store, model)
    start = model.query_adapter or identity_adapter(model.dim)
    tuned = finetune(start, pairs["train+"], pairs["train-"])
    held_neg = pairs["held-"] if len(pairs["held-"]) else pairs["train-"]
    queries = [Query(Path(r["query"]), r["condition"], r["kind"], r["source"], r["group"],
                     {"offset_s": r["offset_s"], "duration_s": r["duration_s"]}) for r in second]
    after = run_queries(queries, store, replace(model, query_adapter=tuned), by_name, "fine-tuned", searcher)
    return {"pairs": {k: len(v) for k, v in pairs.items()},
            "separation": [round(separation(model.query_adapter, pairs["held+"], held_neg), 4),
                           round(separation(tuned, pairs["held+"], held_neg), 4)],
            "before": score_status(second), "after": score_status(after)}


def score_status(records: list[dict]) -> dict:
    """As `score`, from the records' own status (a scan at the model's calibration)."""
    known = [r for r in records if r["kind"] == "known"]
    unknown = [r for r in records if r["kind"] == "unknown"]
    return {"n_known": len(known), "right": sum(r["status"] == "match" and r["correct"] for r in known),
            "known_wrong": sum(r["status"] == "match" and not r["correct"] for r in known),
            "n_unknown": len(unknown), "unknown_matched": sum(r["status"] == "match" for r in unknown)}


def print_studies(cal: dict, rej: dict | None, tune: dict | None = None) -> None:
    b, a = cal["before"], cal["after"]
    print(f"\nlearning from decisions (a simulated user decides the first half from the truth: "
          f"{cal['decisions']} decisions, {cal['right']} right)")
    print(f"  calibration: mid {cal['prior']['mid']:.4f} -> {cal['learned']['mid']:.4f}, width "
          f"{cal['prior']['width']:.4g} -> {cal['learned']['width']:.4g}")
    print(f"  second half, before -> after: known right {b['right']}/{b['n_known']} -> {a['right']}/{a['n_known']}, "
          f"known wrong {b['known_wrong']} -> {a['known_wrong']}, unknown matched {b['unknown_matched']}/"
          f"{b['n_unknown']} -> {a['unknown_matched']}/{a['n_unknown']}")
    if tune:
        b, a = tune["before"], tune["after"]
        print(f"  fine-tuned adapter ({tune['pairs']['train+']} accepted and {tune['pairs']['train-']} rejected windows; "
              f"held-out separation {tune['separation'][0]:+.4f} -> {tune['separation'][1]:+.4f}): second half "
              f"rescanned, known right {b['right']}/{b['n_known']} -> {a['right']}/{a['n_known']}, known wrong "
              f"{b['known_wrong']} -> {a['known_wrong']}, unknown matched {b['unknown_matched']} -> {a['unknown_matched']}")
    if rej:
        print(f"  rejections: {rej['rejected']} first-half files rejected and scanned again: the rejected reference "
              f"came back {rej['rejected_reference_again']} times; {rej['known_now_right']} of the "
              f"{rej['known_rejected']} known ones now match the right song")


def main(argv: list[str] | None = None) -> int:
    from tagmatch.model.calibration import Calibration

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path.home() / ".cache" / "tagmatch" / "bench" / "results.json")
    args = p.parse_args(argv)
    if not args.results.exists():
        print(f"no bench results at {args.results}: run `make bench` first")
        return 0
    res = json.loads(args.results.read_text())
    prior = Calibration(**res["config"]["calibration"])
    learning = res.get("learning", {})
    print_studies(calibration_study(res["records"], prior), learning.get("rejections"), learning.get("finetune"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

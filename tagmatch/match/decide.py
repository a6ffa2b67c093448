"""Matching: a query file -> one suggestion with a calibrated confidence and alternatives.

The file is cut into 10 s fragments. Every 0.2 s (0.16 s with a shared-kind model) a window is
embedded and its nearest reference windows are found; each hit votes for (track, offset =
reference time - query time). Within a fragment, votes are counted only when they agree on the
track AND on the offset (0.5 s bins, +-1 bin), so chance neighbours scattered over a library do
not add up. The best few tracks by votes are then scored again along their alignment: every query
window is compared with the track's stored window where the alignment puts it, and what counts
is how far that similarity rises above the window's background (its 10th-best similarity in the
whole store), averaged over all windows and then over fragments. When that leaves the answer
unsure, the best three tracks are also checked against their reference files where the alignment
puts the query (tagmatch.match.verify), which adds to their scores. The raw evidence is the margin
between the best track and its best competitor, which a per-model calibration maps to 0..1.

A file is decoded and matched one fragment at a time, and reading stops once the fragments so far
give a near-certain answer (`MatchConfig.stop_confidence`): a whole song is usually identified
from its first 10 s, without decoding the other three minutes.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagmatch.errors import AudioReadError, SearchLost, TagmatchError
from tagmatch.match.align import aligned_score, strongest
from tagmatch.match.config import MatchConfig, Searcher
from tagmatch.match.query import fragment_bounds, frame_grid, open_query
from tagmatch.match.verify import Evidence, check_reference
from tagmatch.match.votes import Fragment, Hits, rival_margins, search_fragment
from tagmatch.model.modelfile import LoadedModel
from tagmatch.organize.rejections import Rejections
from tagmatch.store.shards import Store


@dataclass
class Candidate:
    track: int
    score: float  # evidence per query window along the alignment (votes with rescore=0), averaged over fragments
    margin: float  # score minus the best competitor's (the raw evidence)
    confidence: float
    offset_s: float  # where the query starts in the reference track
    fragments_agreeing: int
    fragments_total: int
    # correlation of spectral change with the reference file along the alignment, and how many
    # standard deviations it stands above chance (tagmatch.match.verify.Evidence); None: not checked (the
    # answer was sure without it, or the reference could not be read)
    verified: float | None = None
    significance: float | None = None


@dataclass
class FileMatch:
    path: str
    status: str  # "match" | "unknown" | "error"
    error: str | None = None
    match: Candidate | None = None
    alternatives: list[Candidate] = field(default_factory=list)
    stopped_at_s: float | None = None  # where reading stopped, sure of the answer (None: read it all)
    fingerprint: np.ndarray | None = None  # [shape=(n, dim)] int8: the first fragment's query vectors
    passed_over: list[int] = field(default_factory=list)  # tracks left out: rejected for this audio before


def match_file(path: Path | str, store: Store, model: LoadedModel, cfg: MatchConfig = MatchConfig(),
               searcher: Searcher | None = None, prepared: Future | None = None,
               rejections: Rejections | None = None) -> FileMatch:
    """Identify one file, fragment by fragment, stopping once sure (`cfg.stop_confidence`).
    Never raises for bad input: errors come back as status 'error'. `searcher`: what finds the
    neighbours (default: the store itself, exact). `prepared`: a future of `open_query(path, ...)`
    started ahead (a scan decodes the start of the next file meanwhile). `rejections`: the pairs
    the user rejected (tagmatch.organize.rejections); a reference rejected for this audio is left out."""
    path = Path(path)
    fc = model.feature_config
    try:
        query = prepared.result() if prepared is not None else open_query(path, model, cfg)
        hits: list[Hits] = []  # per fragment with audible windows
        try:
            for piece in query.fragments():
                if len(piece.starts):
                    # a tail under 3 s is part of the fragment before (which may have had no audio)
                    start_s = piece.previous_s if piece.joins_previous else piece.start_s
                    vectors = model.embed_query(piece.mel, piece.starts - piece.mel_at)
                    new = search_fragment(start_s, piece.starts, vectors, store, fc, cfg, searcher)
                    new.mel, new.mel_at = piece.mel, piece.mel_at
                    if piece.joins_previous and hits and hits[-1].start_s == start_s:
                        hits[-1] = hits[-1].joined(new)
                    else:
                        hits.append(new)
                if not piece.last and cfg.stop_confidence is not None and hits:
                    early = decide(str(path), hits, store, model, cfg, verify=False, rejections=rejections)
                    if early.match and early.match.confidence >= max(cfg.stop_confidence, cfg.threshold):
                        early.stopped_at_s = round(query.read_until_s, 2)
                        return _fingerprinted(early, hits, model)
        finally:
            query.close()
        if not hits:
            raise TagmatchError("silent: no audible audio")
        return _fingerprinted(decide(str(path), hits, store, model, cfg, verify=True, rejections=rejections),
                              hits, model)
    except AudioReadError as exc:
        return FileMatch(str(path), "error", error=exc.reason)
    except SearchLost:  # not this file's fault: the scan stops
        raise
    except TagmatchError as exc:
        return FileMatch(str(path), "error", error=str(exc))


def _fingerprinted(m: FileMatch, hits: list[Hits], model: LoadedModel) -> FileMatch:
    from tagmatch.store.shards import quantize

    m.fingerprint = quantize(hits[0].vectors, model.dim)
    return m


def match_vectors(name: str, vectors: np.ndarray, starts: np.ndarray, n_frames: int, store: Store,
                  model: LoadedModel, cfg: MatchConfig, searcher: Searcher | None = None) -> FileMatch:
    """Vote with all of a file's embedded query windows (start frames `starts`) -> one FileMatch,
    as `match_file` without stopping early (the benchmarks' tools embed once, score many ways).
    `searcher` finds each window's top-k stored vectors (global numbers into the store): the
    store itself (exact, the default) or an approximate index over it (tagmatch.store.ann)."""
    fc = model.feature_config
    _, per_frag, min_frag = frame_grid(model, cfg)
    hits = []
    for a, b in fragment_bounds(n_frames, per_frag, min_frag):
        sel = (starts >= a) & (starts < b)
        if sel.any():
            hits.append(search_fragment(a * fc.frame_seconds, starts[sel], vectors[sel], store, fc, cfg, searcher))
    return decide(name, hits, store, model, cfg)


def decide(name: str, hits: list[Hits], store: Store, model: LoadedModel, cfg: MatchConfig,
            verify: bool = False, rejections: Rejections | None = None) -> FileMatch:
    """Fragments' hits -> the suggestion: votes pick the best `cfg.rescore` tracks, which are then
    scored along their alignment (a score is a mean over fragments), and with `verify`, checked
    against their reference files when the answer is not sure yet. Tracks the user rejected for
    this audio (`rejections`) are left out before any of it, so the rest are ranked and
    calibrated as if they had never been candidates."""
    fragments = [h.votes(cfg) for h in hits]
    n = len(fragments)
    totals: dict[int, float] = {}
    for f in fragments:
        for t, (s, _) in f.scores.items():
            totals[t] = totals.get(t, 0.0) + s / n
    passed_over = _rejected(totals, hits, store, rejections) if rejections else []
    for t in passed_over:
        del totals[t]
    if not totals:
        return FileMatch(name, "unknown", passed_over=passed_over)
    score = model.calibration.score  # score as the calibration was fitted: "votes", "aligned" or "verified"
    if cfg.rescore and score != "votes":
        by_votes = sorted(totals, key=totals.get, reverse=True)[: cfg.rescore]
        totals = {t: aligned_score(t, hits, fragments, store) for t in by_votes}
    margins = rival_margins(totals, cfg.same_audio_ratio)
    checked: dict[int, Evidence | None] = {}
    if verify and cfg.verify and score == "verified":
        best = max(totals, key=totals.get)
        if model.calibration.confidence(margins[best]) < cfg.verify_below:
            checked = _check_references(totals, margins, hits, fragments, store, model, cfg)
            margins = rival_margins(totals, cfg.same_audio_ratio)
    ranked = sorted(totals, key=totals.get, reverse=True)
    cands = [_candidate(t, totals[t], margins[t], fragments, model, checked.get(t))
             for t in ranked[: 1 + cfg.alternatives]]
    best = cands[0]
    status = "match" if best.confidence >= cfg.threshold else "unknown"
    return FileMatch(name, status, match=best, alternatives=cands[1:], passed_over=passed_over)


def _rejected(totals: dict[int, float], hits: list[Hits], store: Store, rejections: Rejections) -> list[int]:
    """The candidate tracks whose reference the user rejected for this query's audio."""
    vectors = np.concatenate([h.vectors for h in hits])
    return [t for t in totals if rejections.rejected(store.tracks[t].path, vectors)]


def _check_references(totals: dict[int, float], margins: dict[int, float], hits: list[Hits],
                      fragments: list[Fragment], store: Store, model: LoadedModel,
                      cfg: MatchConfig) -> dict[int, Evidence | None]:
    """Check the best `cfg.verify` tracks against their reference files (tagmatch.match.verify) and add
    the evidence to `totals`, in place; returns it per track (None: the reference is unreadable).

    Each check reads where t's strongest fragment aligns, and counts for that fragment's share of
    the query's windows only: a song that quotes a library song for 10 s of its 5 minutes is not
    that song (two such unknown songs on the benchmark, docs/benchmarks.md, "Verification"). A
    track that even a perfect correlation could not lift to the threshold (one fragment of a long
    file) is not read: its margin can rise by no more than its own gain."""
    fc, cal = model.feature_config, model.calibration
    p = min(max(cfg.threshold, 1e-6), 1 - 1e-6)
    needed = cal.mid + cal.width * math.log(p / (1 - p))  # the margin at the threshold
    windows = sum(len(h.q_time) for h in hits)
    most = cfg.verify_weight * (1 - cfg.verify_floor)  # the gain of a perfect correlation
    checked: dict[int, Evidence | None] = {}
    for t in sorted(totals, key=totals.get, reverse=True)[: cfg.verify]:
        i = strongest(t, fragments)
        share = len(hits[i].q_time) / windows
        if hits[i].mel is None or margins[t] + most * share < needed:
            continue
        evidence = checked[t] = check_reference(hits[i].mel, hits[i].mel_at * fc.frame_seconds,
                                                store.tracks[t].path, fragments[i].scores[t][1], fc)
        if evidence is not None:
            gain = max(cfg.verify_weight * (evidence.correlation - cfg.verify_floor),
                       min(most, cfg.significance_weight * (evidence.significance - cfg.significance_floor)))
            totals[t] += max(0.0, gain) * share
    return checked


def _candidate(t: int, score: float, margin: float, fragments: list[Fragment], model: LoadedModel,
               evidence: Evidence | None = None) -> Candidate:
    """Evidence for track `t`: its offset (from its strongest fragment) and how many fragments
    have it as their best track at a consistent offset (allowing drift from speed changes)."""
    with_t = [f for f in fragments if t in f.scores]
    anchor = fragments[strongest(t, fragments)]
    offset = anchor.scores[t][1]
    agreeing = 0
    for f in with_t:
        s, off = f.scores[t]
        drift = 1.0 + 0.04 * abs(f.start_s - anchor.start_s)
        if s >= max(v[0] for v in f.scores.values()) and abs(off - offset) <= drift:
            agreeing += 1
    checked = evidence is not None
    return Candidate(t, score, margin, model.calibration.confidence(margin), round(offset, 2), agreeing,
                     len(fragments), evidence.correlation if checked else None,
                     evidence.significance if checked else None)

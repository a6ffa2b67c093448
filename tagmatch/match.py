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
puts the query (tagmatch.verify), which adds to their scores. The raw evidence is the margin
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
from typing import Iterator, Protocol

import numpy as np

from tagmatch.audio import stream_audio
from tagmatch.errors import AudioReadError, TagmatchError
from tagmatch.features import FeatureConfig, log_mel, window_starts
from tagmatch.index import SILENT_RMS, window_rms
from tagmatch.modelio import LoadedModel
from tagmatch.store import Store
from tagmatch.verify import Evidence, check_reference


class Searcher(Protocol):
    """Top-k stored vectors by inner product: `Store` (exact) or `tagmatch.ann.IVFPQSearch`."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class MatchConfig:
    fragment_s: float = 10.0
    # None: the model's own (LoadedModel.default_query_hop_frames). For the window kind a window
    # every 0.2 s: against a reference grid of 0.5 s (or 0.25 s) the phases cycle through all
    # five 0.1 s (0.05 s) steps, so as many windows per second align as with a 0.1 s hop, at half
    # the CPU (the trade-off study in docs/benchmarks.md measured no loss).
    query_hop_s: float | None = None
    min_duration_s: float = 3.0  # below this a file is reported as too short
    min_fragment_s: float = 3.0  # a tail shorter than this joins the fragment before it
    top_k: int = 10  # reference neighbours per query window (the last one is its background)
    # The best tracks by votes scored again along their alignment (0: the votes decide). Votes only
    # see the hits among a window's top-k; the aligned score also sees a right track's windows that
    # noise pushed out of it, and lets a chance alignment's many weak windows count against it
    # (docs/benchmarks.md, "Scoring study").
    rescore: int = 5
    offset_bin_s: float = 0.5
    threshold: float = 0.5  # on the calibrated confidence
    alternatives: int = 3
    same_audio_ratio: float = 0.8  # a runner-up this close to the best shares its audio
    # Stop reading a file once its fragments so far give this confidence, and at least the
    # threshold (None: read all of it).
    # Checked after whole fragments only: on the benchmark's 783 unknown-song queries the best
    # margin of a first 10 s never passed 0.030, under the 0.058 that 0.9999 means (shipped model
    # with its query adapter and session 13's calibration; docs/benchmarks.md, "Stopping early");
    # right answers' margins have a median of 0.17.
    stop_confidence: float | None = 0.9999
    # Verification (tagmatch.verify): when the best answer is not already this sure, the best
    # `verify` tracks are compared with their reference files where the alignment puts the query.
    # A track's score gains the larger of verify_weight x (correlation - verify_floor) and
    # significance_weight x (significance - significance_floor), never less than 0 and the latter
    # no more than the former can give (unrelated audio correlates at ~0.01-0.05, ~3 standard
    # deviations above its background; docs/benchmarks.md, "Verification").
    # 0: no verification. A model whose calibration was fitted without it is matched without it.
    verify: int = 3
    verify_below: float = 0.99
    verify_weight: float = 0.2
    verify_floor: float = 0.03
    significance_weight: float = 0.012
    significance_floor: float = 5.0


# Where an alignment puts a query window, the reference has a window within ALIGN_TOLERANCE_S (its
# grid is 0.32 s or finer); each fragment's offset is also tried ALIGN_SHIFTS_S away, since a vote's
# offset is a mean over a 0.5 s bin and its neighbours and drifts with speed changes.
ALIGN_TOLERANCE_S = 0.25
ALIGN_SHIFTS_S = (-0.3, 0.0, 0.3)


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
    # standard deviations it stands above chance (tagmatch.verify.Evidence); None: not checked (the
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


@dataclass
class _Fragment:
    start_s: float
    scores: dict[int, tuple[float, float]]  # track -> (score per window, offset_s)


def _frame_grid(model: LoadedModel, cfg: MatchConfig) -> tuple[int, int, int]:
    """(query hop, fragment length, shortest fragment) in log-mel frames."""
    def frames(seconds: float) -> int:
        return int(round(seconds / model.feature_config.frame_seconds))

    hop = model.default_query_hop_frames() if cfg.query_hop_s is None else max(1, frames(cfg.query_hop_s))
    return hop, frames(cfg.fragment_s), frames(cfg.min_fragment_s)


def fragment_bounds(n_frames: int, frames_per_fragment: int, min_frames: int) -> list[tuple[int, int]]:
    """Split [0, n_frames) into fragments; a short tail joins the fragment before it."""
    bounds = [(a, min(a + frames_per_fragment, n_frames)) for a in range(0, n_frames, frames_per_fragment)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_frames:
        bounds[-2] = (bounds[-2][0], bounds[-1][1])
        bounds.pop()
    return bounds


def _vote(track: np.ndarray, ref_time: np.ndarray, sim: np.ndarray, q_time: np.ndarray,
          bin_s: float) -> dict[int, tuple[float, float]]:
    """Offset-consistent votes of one fragment's hits -> {track: (score per window, offset)}.

    track/ref_time/sim [shape=(w, k)], q_time [shape=(w,)]. Each hit votes for its offset bin
    and both neighbours; a window counts at most once per (track, bin), with its best similarity.
    """
    w, k = track.shape
    if w == 0 or k == 0:
        return {}
    offset = ref_time - q_time[:, None]
    b = np.rint(offset / bin_s).astype(np.int64)
    win = np.repeat(np.arange(w), k)
    t, bb, s, off = track.ravel(), b.ravel(), np.maximum(sim.ravel(), 0.0), offset.ravel()
    t3 = np.tile(t, 3)
    b3 = np.concatenate([bb - 1, bb, bb + 1])
    s3, w3, o3 = np.tile(s, 3), np.tile(win, 3), np.tile(off, 3)
    # Best similarity per (window, track, bin): sort by key, then by similarity.
    key = (t3.astype(np.int64) << 40) + ((b3 + (1 << 19)) << 20) + w3
    order = np.lexsort((-s3, key))
    key, s3, t3, b3, o3 = key[order], s3[order], t3[order], b3[order], o3[order]
    first = np.concatenate([[True], key[1:] != key[:-1]])
    key, s3, t3, b3, o3 = key[first], s3[first], t3[first], b3[first], o3[first]
    tb = key >> 20  # (track, bin)
    starts = np.concatenate([[0], np.flatnonzero(tb[1:] != tb[:-1]) + 1])
    mass = np.add.reduceat(s3, starts)
    wsum = np.add.reduceat(s3 * o3, starts)
    out: dict[int, tuple[float, float]] = {}
    for i, st in enumerate(starts):
        tr = int(t3[st])
        score = float(mass[i]) / w
        if tr not in out or score > out[tr][0]:
            out[tr] = (score, float(wsum[i] / max(mass[i], 1e-9)))
    return out


def _margins(scores: dict[int, float], ratio: float) -> dict[int, float]:
    """Each track's score minus its best competitor's. Tracks within `ratio` of a track's score
    are taken to share its audio (remasters, library duplicates) and are not its competitors."""
    ranked = sorted(scores.values(), reverse=True)
    out = {}
    for t, s in scores.items():
        rivals = [r for r in ranked if r < ratio * s]
        out[t] = s - (rivals[0] if rivals else 0.0)
    return out


def match_file(path: Path | str, store: Store, model: LoadedModel, cfg: MatchConfig = MatchConfig(),
               searcher: Searcher | None = None, prepared: Future | None = None) -> FileMatch:
    """Identify one file, fragment by fragment, stopping once sure (`cfg.stop_confidence`).
    Never raises for bad input: errors come back as status 'error'. `searcher`: what finds the
    neighbours (default: the store itself, exact). `prepared`: a future of `open_query(path, ...)`
    started ahead (a scan decodes the start of the next file meanwhile)."""
    path = Path(path)
    fc = model.feature_config
    try:
        query = prepared.result() if prepared is not None else open_query(path, model, cfg)
        hits: list[_Hits] = []  # per fragment with audible windows
        try:
            for piece in query.fragments():
                if len(piece.starts):
                    # a tail under 3 s is part of the fragment before (which may have had no audio)
                    start_s = piece.previous_s if piece.joins_previous else piece.start_s
                    vectors = model.embed_query(piece.mel, piece.starts - piece.mel_at)
                    new = _search(start_s, piece.starts, vectors, store, fc, cfg, searcher)
                    new.mel, new.mel_at = piece.mel, piece.mel_at
                    if piece.joins_previous and hits and hits[-1].start_s == start_s:
                        hits[-1] = hits[-1].joined(new)
                    else:
                        hits.append(new)
                if not piece.last and cfg.stop_confidence is not None and hits:
                    early = _decide(str(path), hits, store, model, cfg, verify=False)
                    if early.match and early.match.confidence >= max(cfg.stop_confidence, cfg.threshold):
                        early.stopped_at_s = round(query.read_until_s, 2)
                        return early
        finally:
            query.close()
        if not hits:
            raise TagmatchError("silent: no audible audio")
        return _decide(str(path), hits, store, model, cfg, verify=True)
    except AudioReadError as exc:
        return FileMatch(str(path), "error", error=exc.reason)
    except TagmatchError as exc:
        return FileMatch(str(path), "error", error=str(exc))


@dataclass
class _Hits:
    """One fragment's windows' nearest stored vectors (kept, so a short tail can join them)."""

    start_s: float
    track: np.ndarray  # [shape=(w, k)]
    ref_time: np.ndarray  # [shape=(w, k)]
    sim: np.ndarray  # [shape=(w, k)]
    q_time: np.ndarray  # [shape=(w,)]
    vectors: np.ndarray  # [shape=(w, dim)] the windows' embeddings
    # the query's log-mel under these windows, from frame `mel_at` of the file (for verification;
    # None where only vectors were given: match_vectors)
    mel: np.ndarray | None = None
    mel_at: int = 0
    _votes: _Fragment | None = None

    def joined(self, tail: "_Hits") -> "_Hits":
        pairs = ((self.track, tail.track), (self.ref_time, tail.ref_time), (self.sim, tail.sim),
                 (self.q_time, tail.q_time), (self.vectors, tail.vectors))
        mel = None
        if self.mel is not None and tail.mel is not None:
            mel = np.concatenate([self.mel[: tail.mel_at - self.mel_at], tail.mel])
        return _Hits(self.start_s, *(np.concatenate(pair) for pair in pairs), mel=mel, mel_at=self.mel_at)

    def votes(self, cfg: MatchConfig) -> _Fragment:
        if self._votes is None:
            self._votes = _Fragment(self.start_s, _vote(self.track, self.ref_time, self.sim, self.q_time,
                                                        cfg.offset_bin_s))
        return self._votes


def _search(start_s: float, starts: np.ndarray, vectors: np.ndarray, store: Store, fc: FeatureConfig,
            cfg: MatchConfig, searcher: Searcher | None) -> _Hits:
    """A fragment's embedded windows (start frames `starts`) -> their top-k stored vectors."""
    idx, sim = (searcher or store).search(vectors, cfg.top_k)
    track, ref_time = store.lookup(idx)
    return _Hits(start_s, track, ref_time, sim, starts * fc.frame_seconds, vectors)


def open_query(path: Path, model: LoadedModel, cfg: MatchConfig) -> "QueryAudio":
    """Start reading a query file: its first fragment is decoded and cut (raises for bad input)."""
    query = QueryAudio(path, model, cfg)
    try:
        query.prepare()
    except BaseException:
        query.close()
        raise
    return query


@dataclass
class QueryPiece:
    """A fragment of a query as it is read: the start frames of its audible windows and the
    log-mel under them (and the model's context after them, where the audio has it)."""

    start_s: float
    mel: np.ndarray  # [shape=(frames, n_mels)], from frame `mel_at` of the file
    mel_at: int
    starts: np.ndarray  # [shape=(w,)], frames from the start of the file
    last: bool  # no window can start after this fragment
    joins_previous: bool = False  # a tail under 3 s: part of the fragment before (fragment_bounds)
    previous_s: float = 0.0  # where that fragment starts


class QueryAudio:
    """A query file read fragment by fragment, decoding only as far as matching goes.

    A fragment is cut as soon as the audio under its windows is decoded (10 s, one window and the
    model's context after it); a tail under 3 s at the end comes as a piece that joins the
    fragment before it, so the fragments are those of `fragment_bounds` and the windows those of
    `query_frames` over the whole decoded file.
    """

    def __init__(self, path: Path, model: LoadedModel, cfg: MatchConfig):
        fc = model.feature_config
        self.path, self.fc, self.cfg = Path(path), fc, cfg
        self._context = model.context_frames
        self._blocks = stream_audio(self.path, fc.sample_rate)
        self._buf = np.zeros(0, np.float32)  # decoded audio from sample self._buf_at on
        self._buf_at = 0
        self._ended = False
        self._next_frame = 0  # where the next fragment starts
        self._first: QueryPiece | None = None  # cut by prepare()
        self._hop, self._per_frag, self._min_frag = _frame_grid(model, cfg)
        self.read_until_s = 0.0  # audio matched so far: the end of the last fragment given out

    def prepare(self) -> None:
        """Decode and cut the first fragment (a prefetching thread calls this)."""
        if self._first is None:
            self._first = self._cut()

    def fragments(self) -> Iterator[QueryPiece]:
        """The pieces in order; one with no audible window comes with none. Raises
        TagmatchError when the file is too short, AudioReadError when it cannot be decoded."""
        self.prepare()
        piece, self._first = self._first, None
        while piece is not None:
            yield piece
            piece = None if piece.last else self._cut()

    def close(self) -> None:
        self._blocks.close()

    def _n_frames(self) -> int:
        n = self._buf_at + len(self._buf)
        return 0 if n < self.fc.n_fft else 1 + (n - self.fc.n_fft) // self.fc.hop_length

    def _decode_to(self, frames: int) -> None:
        parts = [self._buf]
        n = self._buf_at + len(self._buf)
        need = (frames - 1) * self.fc.hop_length + self.fc.n_fft
        while not self._ended and n < need:
            y = next(self._blocks, None)
            if y is None:
                self._ended = True
            else:
                parts.append(y)
                n += len(y)
        self._buf = np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _cut(self) -> QueryPiece:
        fc, a = self.fc, self._next_frame
        # the windows starting before a + per_frag and their context, and one frame more: is there
        # audio after them?
        self._decode_to(a + self._per_frag + fc.window_frames + self._context)
        n = self._n_frames()
        if a == 0 and self._ended:
            duration = (self._buf_at + len(self._buf)) / fc.sample_rate
            if duration < self.cfg.min_duration_s:
                raise TagmatchError(f"too short: {duration:.1f} s (at least {self.cfg.min_duration_s:g} s needed)")
        b = min(a + self._per_frag, n)
        last = self._ended and n - fc.window_frames + 1 <= b  # no window can start after this fragment
        joins = a > 0 and self._ended and n - a < self._min_frag
        first_start = -(-a // self._hop) * self._hop
        starts = np.arange(first_start, min(b, n - fc.window_frames + 1), self._hop)
        mel = np.zeros((0, fc.n_mels), np.float32)
        if len(starts):
            s0 = a * fc.hop_length - self._buf_at
            s1 = (starts[-1] + fc.window_frames + self._context - 1) * fc.hop_length + fc.n_fft - self._buf_at
            y = self._buf[s0:s1]
            loud = window_rms(y, starts - a, fc) > SILENT_RMS
            starts = starts[loud]
            if len(starts):
                mel = log_mel(y, fc)
        drop = b * fc.hop_length - self._buf_at  # the next fragment starts at frame b
        if drop > 0:
            self._buf, self._buf_at = self._buf[drop:].copy(), self._buf_at + drop
        previous_s = max(0, a - self._per_frag) * fc.frame_seconds
        self._next_frame = b
        self.read_until_s = b * fc.frame_seconds
        return QueryPiece(a * fc.frame_seconds, mel, a, starts, last, joins, previous_s)


def query_frames(y: np.ndarray, model: LoadedModel, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray]:
    """A whole decoded query's log-mel and the start frames of its audible windows, every query
    hop (`LoadedModel.embed_query` embeds them; `len(S)` is what `match_vectors` wants as n_frames).

    Returns (S [shape=(frames, n_mels)], starts). Raises TagmatchError when silent.
    """
    fc = model.feature_config
    S = log_mel(y, fc)
    hop = _frame_grid(model, cfg)[0]
    starts = window_starts(len(S), hop, fc)
    loud = window_rms(y, starts, fc) > SILENT_RMS
    if not loud.any():
        raise TagmatchError("silent: no audible audio")
    return S, starts[loud]


def match_vectors(name: str, vectors: np.ndarray, starts: np.ndarray, n_frames: int, store: Store,
                  model: LoadedModel, cfg: MatchConfig, searcher: Searcher | None = None) -> FileMatch:
    """Vote with all of a file's embedded query windows (start frames `starts`) -> one FileMatch,
    as `match_file` without stopping early (the benchmarks' tools embed once, score many ways).
    `searcher` finds each window's top-k stored vectors (global numbers into the store): the
    store itself (exact, the default) or an approximate index over it (tagmatch.ann)."""
    fc = model.feature_config
    _, per_frag, min_frag = _frame_grid(model, cfg)
    hits = []
    for a, b in fragment_bounds(n_frames, per_frag, min_frag):
        sel = (starts >= a) & (starts < b)
        if sel.any():
            hits.append(_search(a * fc.frame_seconds, starts[sel], vectors[sel], store, fc, cfg, searcher))
    return _decide(name, hits, store, model, cfg)


def _decide(name: str, hits: list[_Hits], store: Store, model: LoadedModel, cfg: MatchConfig,
            verify: bool = False) -> FileMatch:
    """Fragments' hits -> the suggestion: votes pick the best `cfg.rescore` tracks, which are then
    scored along their alignment (a score is a mean over fragments), and with `verify`, checked
    against their reference files when the answer is not sure yet."""
    fragments = [h.votes(cfg) for h in hits]
    n = len(fragments)
    totals: dict[int, float] = {}
    for f in fragments:
        for t, (s, _) in f.scores.items():
            totals[t] = totals.get(t, 0.0) + s / n
    if not totals:
        return FileMatch(name, "unknown")
    score = model.calibration.score  # score as the calibration was fitted: "votes", "aligned" or "verified"
    if cfg.rescore and score != "votes":
        by_votes = sorted(totals, key=totals.get, reverse=True)[: cfg.rescore]
        totals = {t: _aligned_score(t, hits, fragments, store) for t in by_votes}
    margins = _margins(totals, cfg.same_audio_ratio)
    checked: dict[int, Evidence | None] = {}
    if verify and cfg.verify and score == "verified":
        best = max(totals, key=totals.get)
        if model.calibration.confidence(margins[best]) < cfg.verify_below:
            checked = _check_references(totals, margins, hits, fragments, store, model, cfg)
            margins = _margins(totals, cfg.same_audio_ratio)
    ranked = sorted(totals, key=totals.get, reverse=True)
    cands = [_candidate(t, totals[t], margins[t], fragments, model, checked.get(t))
             for t in ranked[: 1 + cfg.alternatives]]
    best = cands[0]
    status = "match" if best.confidence >= cfg.threshold else "unknown"
    return FileMatch(name, status, match=best, alternatives=cands[1:])


def _strongest(t: int, fragments: list[_Fragment]) -> int:
    """The index of the fragment where track t's vote is strongest (where its offset is taken)."""
    return max((i for i, f in enumerate(fragments) if t in f.scores), key=lambda i: fragments[i].scores[t][0])


def _aligned_score(t: int, hits: list[_Hits], fragments: list[_Fragment], store: Store) -> float:
    """Track t's evidence along its alignment, per window, averaged over fragments. A fragment where
    t got no vote is aligned at t's offset in its strongest fragment."""
    times, ref = store.track_vectors(t)
    anchor = fragments[_strongest(t, fragments)].scores[t][1]
    total = 0.0
    for h, f in zip(hits, fragments):
        offset = f.scores[t][1] if t in f.scores else anchor
        background = np.maximum(h.sim[:, -1], 0.0) if h.sim.shape[1] else np.zeros(len(h.q_time), np.float32)
        total += max(_along(times, ref, h.vectors, h.q_time + offset + shift, background)
                     for shift in ALIGN_SHIFTS_S)
    return total / len(hits)


def _along(times: np.ndarray, ref: np.ndarray, vectors: np.ndarray, at: np.ndarray, background: np.ndarray) -> float:
    """Mean over query windows of how far each one's similarity to the reference window at time
    `at` (the best within ALIGN_TOLERANCE_S) rises above its `background`; 0 where it does not.
    times/ref: the track's stored windows (ascending times, unit vectors)."""
    lo = np.searchsorted(times, at - ALIGN_TOLERANCE_S)
    hi = np.searchsorted(times, at + ALIGN_TOLERANCE_S, side="right")
    best = np.zeros(len(at), np.float32)  # no reference window there (silence, past the end): no evidence
    for j in range(int((hi - lo).max(initial=0))):
        row = lo + j
        ok = row < hi
        best[ok] = np.maximum(best[ok], np.einsum("ij,ij->i", vectors[ok], ref[row[ok]]))
    return float(np.maximum(best - background, 0.0).mean())


def _check_references(totals: dict[int, float], margins: dict[int, float], hits: list[_Hits],
                      fragments: list[_Fragment], store: Store, model: LoadedModel,
                      cfg: MatchConfig) -> dict[int, Evidence | None]:
    """Check the best `cfg.verify` tracks against their reference files (tagmatch.verify) and add
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
        i = _strongest(t, fragments)
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


def _candidate(t: int, score: float, margin: float, fragments: list[_Fragment], model: LoadedModel,
               evidence: Evidence | None = None) -> Candidate:
    """Evidence for track `t`: its offset (from its strongest fragment) and how many fragments
    have it as their best track at a consistent offset (allowing drift from speed changes)."""
    with_t = [f for f in fragments if t in f.scores]
    anchor = fragments[_strongest(t, fragments)]
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

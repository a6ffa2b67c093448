"""Duplicate recordings: which files hold the same audio (re-encodes, trims, gain changes).

Every file is embedded once on the reference grid, into a store of its own that is updated
incrementally like the library's (so a second run only embeds new or changed files). Then, in two
stages, none of which compares every file with every other:

1. Candidates: a probe window every second of each file is searched against all stored windows;
   a file that gets several probe hits at one consistent time offset is a candidate partner.
2. Verification, per candidate pair only: every window of one file is compared with every window
   of the other; the longest run of windows that match at one offset is the overlapping stretch.

A pair whose overlap covers most of the shorter file is a duplicate (one is a copy or an excerpt
of the other); a shorter shared stretch (an intro, a medley) is a partial overlap. Duplicates are
grouped transitively (union-find, the most similar pairs first), but two groups join only when
their longest files are duplicates themselves; partial overlaps are reported as pairs. Different
recordings of one song do not align over time, so they are neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from tagmatch.errors import TagmatchError
from tagmatch.model.modelfile import LoadedModel
from tagmatch.dupes.keeper import choose_keeper
from tagmatch.progress import OnProgress, Progress
from tagmatch.store.shards import Store, dequantize

APPROX_ABOVE = 2_000_000  # stored vectors (~140 h of audio) above which stage 1 uses an IVF index


@dataclass(frozen=True)
class DupesConfig:
    probe_every_s: float = 1.0  # seconds between probe windows
    top_k: int = 16
    min_similarity: float = 0.6  # a window "matches" at this cosine or above
    offset_bin_s: float = 0.5
    min_probe_votes: int = 3  # aligned probe hits that make a candidate pair
    min_density: float = 0.7  # share of windows inside the overlapping stretch that must match
    max_gap_s: float = 3.0  # a longer stretch without aligned windows ends the overlap
    duplicate_fraction: float = 0.8  # overlap / audible length of the shorter file for "duplicate"
    min_partial_s: float = 8.0  # shorter shared stretches are ignored (chance lines up 5-7 s in orchestral music)


@dataclass(frozen=True)
class Overlap:
    """Audio shared by files a and b: b's time = a's time + offset_s, over overlap_s seconds."""

    a: int
    b: int
    overlap_s: float
    offset_s: float
    kind: str  # "duplicate" | "partial"
    similarity: float = 0.0  # mean cosine of the aligned windows: which pairs group first


@dataclass
class Group:
    kind: str  # "duplicate" | "partial"
    members: list[int]  # track ids of the folder store, keeper first
    overlaps: dict[int, Overlap] = field(default_factory=dict)  # member -> its overlap with the keeper


@dataclass
class LibraryHit:
    track: int  # in the folder store
    library_track: int  # in the reference store
    overlap: Overlap


def model_for_dupes(model: LoadedModel) -> LoadedModel:
    """The model with the reference hop that file-to-file comparison needs. Two copies of a
    recording sit on unrelated window grids: on a shared-kind model's 0.32 s grid their windows
    can be 0.16 s apart, beyond the 50 ms shifts it was trained for (recall of duplicate pairs
    fell from 99.2% to 94.7%, docs/benchmarks.md); at half its stride they are at most 0.08 s
    apart. The window kind keeps its own (0.25 s). Same weights and id."""
    if model.model_config.kind != "shared":
        return model
    half = model.model_config.stride // 2
    return replace(model, feature_config=replace(model.feature_config, ref_hop_frames=half))


def _probe_stride(store: Store, cfg: DupesConfig) -> int:
    """Stored windows between probes."""
    fc = store.feature_config
    return max(1, int(round(cfg.probe_every_s / (fc.ref_hop_frames * fc.frame_seconds))))


# ---- per-track views of a store ------------------------------------------------------------------
class _Tracks:
    """Float vectors and window times per track of a store (vectors of a track are contiguous
    for stores built by `index_library`, but this does not rely on it)."""

    def __init__(self, store: Store):
        self.store = store
        order = np.argsort(store.vec_track, kind="stable")
        bounds = np.searchsorted(store.vec_track[order], np.arange(len(store.tracks) + 1))
        self._rows = [order[bounds[i] : bounds[i + 1]] for i in range(len(store.tracks))]

    def rows(self, t: int) -> np.ndarray:
        return self._rows[t]

    def vectors(self, t: int) -> np.ndarray:
        return self.unit(self._rows[t])

    def unit(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors at `rows` as float32 unit vectors."""
        return dequantize(self.store.vectors[rows], self.store.dim)

    def times(self, t: int) -> np.ndarray:
        return self.store.vec_time[self._rows[t]]

    def extent(self, t: int, window_s: float) -> float:
        """Audible length: from the first loud window to the end of the last one."""
        tt = self.times(t)
        return float(tt.max() - tt.min() + window_s) if len(tt) else 0.0


# ---- stage 1: candidates ---------------------------------------------------------------------------
def _probe_partners(hit_track: np.ndarray, hit_time: np.ndarray, sim: np.ndarray, q_time: np.ndarray,
                    skip: int | None, cfg: DupesConfig) -> list[int]:
    """Tracks that several probe windows hit at one offset (bins of offset_bin_s, +-1)."""
    w, k = hit_track.shape
    ok = sim >= cfg.min_similarity
    if skip is not None:
        ok &= hit_track != skip
    win = np.broadcast_to(np.arange(w)[:, None], (w, k))[ok]
    t = hit_track[ok].astype(np.int64)
    b = np.rint((hit_time - q_time[:, None])[ok] / cfg.offset_bin_s).astype(np.int64)
    if len(t) == 0:
        return []
    t3, b3, w3 = np.tile(t, 3), np.concatenate([b - 1, b, b + 1]), np.tile(win, 3)
    key = np.unique(np.stack([t3, b3, w3], axis=1), axis=0)  # each window once per (track, bin)
    tb, counts = np.unique(key[:, :2], axis=0, return_counts=True)
    return sorted({int(x) for x in tb[counts >= cfg.min_probe_votes, 0]})


def searcher(store: Store, mode: str = "auto"):
    """What stage 1 searches: the store itself (exact), or an IVF index over it ("approximate";
    "auto" picks it above APPROX_ABOVE vectors)."""
    if mode == "auto":
        mode = "approximate" if store.n_vectors > APPROX_ABOVE else "exact"
    if mode == "exact":
        return store
    from tagmatch.store.ann import IVFSearch

    return IVFSearch(store)


def candidate_pairs(store: Store, cfg: DupesConfig, against: Store | None = None,
                    progress: OnProgress | None = None, batch: int = 4096,
                    search: str = "auto") -> set[tuple[int, int]]:
    """(track of `store`, partner) pairs worth verifying. Partners come from `against` when given
    (the reference library), else from `store` itself (then pairs are ordered a < b). Probes of
    several files go to the search together (`batch` rows), so big stores are scanned less often."""
    tracks = _Tracks(store)
    target = searcher(against if against is not None else store, search)
    stride = _probe_stride(store, cfg)
    k = cfg.top_k + (0 if against is not None else stride)  # own neighbours take slots
    pairs: set[tuple[int, int]] = set()
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        rows = np.concatenate([r for _, r in pending])
        idx, sim = target.search(tracks.unit(rows), k)
        lo = 0
        for a, r in pending:
            sl = slice(lo, lo + len(r))
            lo += len(r)
            for b in _probe_partners(target.vec_track[idx[sl]], target.vec_time[idx[sl]], sim[sl],
                                     store.vec_time[r], None if against is not None else a, cfg):
                pairs.add((a, b) if against is not None else (min(a, b), max(a, b)))
        pending.clear()

    n_tracks, queued = len(store.tracks), 0
    for a in range(n_tracks):
        rows = tracks.rows(a)[::stride]
        if len(rows):
            pending.append((a, rows))
            queued += len(rows)
        if pending and (queued >= batch or a == n_tracks - 1):
            flush()
            queued = 0
        if progress:
            progress(Progress("searching", a + 1, n_tracks))
    return pairs


# ---- stage 2: verification -------------------------------------------------------------------------
def align(va: np.ndarray, ta: np.ndarray, vb: np.ndarray, tb: np.ndarray, window_s: float,
          cfg: DupesConfig) -> tuple[float, float, float] | None:
    """The stretch of `a` that `b` also holds: (overlap_s, offset_s with b time = a time + offset,
    mean cosine of its aligned windows), or None. Every pair of windows at min_similarity or above
    votes for its offset (bins of offset_bin_s, +-1); the offset with the most distinct windows of
    `a` wins. Taking all matches, not each window's single best, matters for music that repeats
    itself: a window of a loop matches every repetition about equally, and its best match is as
    often a repetition as the aligned window. The overlap is then the longest run of those windows
    without a gap over max_gap_s, if they fill at least min_density of it."""
    if len(va) == 0 or len(vb) == 0:
        return None
    sim = va @ vb.T
    i, j = np.nonzero(sim >= cfg.min_similarity)
    if len(i) == 0:
        return None
    off = tb[j] - ta[i]
    bins = np.rint(off / cfg.offset_bin_s).astype(np.int64)
    votes = np.unique(np.stack([np.concatenate([bins - 1, bins, bins + 1]), np.tile(i, 3)], axis=1), axis=0)
    values, counts = np.unique(votes[:, 0], return_counts=True)
    best = values[int(np.argmax(counts))]
    near = np.abs(bins - best) <= 1
    sel = np.unique(i[near])  # windows of a, sorted by time (reference_frames order)
    breaks = np.flatnonzero(np.diff(ta[sel]) > cfg.max_gap_s) + 1
    sel = max(np.split(sel, breaks), key=len)
    lo, hi = ta[sel].min(), ta[sel].max()
    inside = np.count_nonzero((ta >= lo) & (ta <= hi))
    if len(sel) / inside < cfg.min_density:
        return None
    in_run = near & (ta[i] >= lo) & (ta[i] <= hi)
    return float(hi - lo + window_s), float(np.median(off[in_run])), float(sim[i[in_run], j[in_run]].mean())


def verify(tracks_a: _Tracks, a: int, tracks_b: _Tracks, b: int, window_s: float,
           cfg: DupesConfig) -> Overlap | None:
    """Measure the overlap of a candidate pair and classify it (None: not enough shared audio)."""
    got = align(tracks_a.vectors(a), tracks_a.times(a), tracks_b.vectors(b), tracks_b.times(b), window_s, cfg)
    if got is None:
        return None
    overlap_s, offset_s, similarity = got
    shorter = min(tracks_a.extent(a, window_s), tracks_b.extent(b, window_s))
    overlap_s = min(overlap_s, shorter)
    if overlap_s >= cfg.duplicate_fraction * shorter:
        kind = "duplicate"
    elif overlap_s >= cfg.min_partial_s:
        kind = "partial"
    else:
        return None
    return Overlap(a, b, round(overlap_s, 2), round(offset_s, 2), kind, round(similarity, 4))


# ---- grouping and keepers ----------------------------------------------------------------------------
def _duplicate_groups(pairs: dict[tuple[int, int], Overlap], length: Callable[[int], float],
                      duplicates: Callable[[int, int], bool]) -> list[list[int]]:
    """Duplicate pairs -> groups (union-find), the most similar pairs first. Two groups join only
    when their longest members are duplicates of each other (`duplicates(a, b)`): an excerpt of a
    passage that two different recordings share is contained in both, and joining through it
    would make copies of them. It goes with the recording it matches best (its own source: the
    copy aligns at a higher cosine than the look-alike passage)."""
    parent: dict[int, int] = {}
    members: dict[int, list[int]] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        members.setdefault(x, [x])
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (a, b), _ in sorted(pairs.items(), key=lambda kv: (-kv[1].similarity, kv[0])):
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        la, lb = max(members[ra], key=length), max(members[rb], key=length)
        if (la, lb) in ((a, b), (b, a)) or duplicates(la, lb):
            keep, gone = min(ra, rb), max(ra, rb)
            parent[gone] = keep
            members[keep] = sorted(members[keep] + members.pop(gone))
    return [m for r, m in sorted(members.items()) if parent[r] == r and len(m) > 1]


def find_duplicates(store: Store, infos: dict[int, dict], window_s: float, cfg: DupesConfig = DupesConfig(),
                    keep: set[str] = frozenset(), progress: OnProgress | None = None,
                    search: str = "auto", protected=lambda path: False) -> list[Group]:
    """Groups of `store`'s tracks that share audio, keeper first (duplicate groups, then partial
    pairs). `infos` maps track id -> file facts (stream_info plus "path" and "tags") for the
    keeper rule; `keep` holds paths the user wants kept; `protected(path)` is true for the
    reference library's files, which are always kept (keeper.choose_keeper)."""
    tracks = _Tracks(store)
    pairs = sorted(candidate_pairs(store, cfg, progress=progress,
                                   search=search))
    measured: dict[tuple[int, int], Overlap | None] = {}  # (a < b) -> their overlap (None: none)
    for n, (a, b) in enumerate(pairs, 1):
        measured[(a, b)] = verify(tracks, a, tracks, b, window_s, cfg)
        if progress:
            progress(Progress("verifying", n, len(pairs)))
    found = {p: ov for p, ov in measured.items() if ov is not None}

    def measure(a: int, b: int) -> Overlap | None:
        """A pair's overlap, measured once (pairs grouped through a third file were not candidates)."""
        key = (min(a, b), max(a, b))
        if key not in measured:
            measured[key] = verify(tracks, key[0], tracks, key[1], window_s, cfg)
        return measured[key]

    def from_keeper(k: int, m: int) -> Overlap | None:
        ov = measure(k, m)
        if ov is None or ov.a == k:
            return ov
        return Overlap(k, m, ov.overlap_s, round(-ov.offset_s, 2), ov.kind, ov.similarity)

    def duplicates(a: int, b: int) -> bool:
        ov = measure(a, b)
        return ov is not None and ov.kind == "duplicate"

    groups, group_of = [], {}
    dup_pairs = {p: ov for p, ov in found.items() if ov.kind == "duplicate"}
    for members in _duplicate_groups(dup_pairs, lambda t: tracks.extent(t, window_s), duplicates):
        k = choose_keeper(members, infos, keep, protected)
        rest = sorted(m for m in members if m != k)
        groups.append(Group("duplicate", [k] + rest, {m: from_keeper(k, m) for m in rest}))
        group_of.update({m: len(groups) for m in members})
    for (a, b), ov in sorted(found.items()):
        if ov.kind == "partial" and (a not in group_of or group_of[a] != group_of.get(b)):
            k = choose_keeper([a, b], infos, keep, protected)
            m = b if k == a else a
            groups.append(Group("partial", [k, m], {m: from_keeper(k, m)}))
    return groups


def restrict(store: Store, ids: list[int]) -> tuple[Store, list[int]]:
    """A copy of `store` with only tracks `ids`, renumbered 0..n-1; also returns the old ids."""
    keep = sorted(set(ids))
    sub = Store(feature_config=store.feature_config, model_id=store.model_id, dim=store.dim,
                vectors=store.vectors, vec_track=store.vec_track, vec_time=store.vec_time, tracks=list(store.tracks))
    sub.remove_tracks(set(range(len(store.tracks))) - set(keep))
    return sub, keep


def against_library(store: Store, library: Store, window_s: float,
                    cfg: DupesConfig = DupesConfig()) -> list[LibraryHit]:
    """Files of `store` whose audio is also in the reference `library` (one hit per file: the
    longest overlap). Both stores must come from the same model."""
    if store.model_id != library.model_id:
        raise TagmatchError("the reference store was built with another model; re-index it")
    mine, theirs = _Tracks(store), _Tracks(library)
    best: dict[int, LibraryHit] = {}
    for a, b in sorted(candidate_pairs(store, cfg, against=library)):
        ov = verify(mine, a, theirs, b, window_s, cfg)
        if ov is not None and (a not in best or ov.overlap_s > best[a].overlap.overlap_s):
            best[a] = LibraryHit(a, b, ov)
    return [best[a] for a in sorted(best)]

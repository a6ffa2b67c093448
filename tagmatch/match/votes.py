"""Votes: each query window's nearest stored windows vote for (track, offset = reference time -
query time); within a fragment only votes that agree on the track and on the offset add up, so
chance neighbours scattered over a library do not."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagmatch.audio.features import FeatureConfig
from tagmatch.match.config import MatchConfig, Searcher
from tagmatch.store.shards import Store


@dataclass
class Fragment:
    start_s: float
    scores: dict[int, tuple[float, float]]  # track -> (score per window, offset_s)


def vote(track: np.ndarray, ref_time: np.ndarray, sim: np.ndarray, q_time: np.ndarray,
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


def rival_margins(scores: dict[int, float], ratio: float) -> dict[int, float]:
    """Each track's score minus its best competitor's. Tracks within `ratio` of a track's score
    are taken to share its audio (remasters, library duplicates) and are not its competitors."""
    ranked = sorted(scores.values(), reverse=True)
    out = {}
    for t, s in scores.items():
        rivals = [r for r in ranked if r < ratio * s]
        out[t] = s - (rivals[0] if rivals else 0.0)
    return out


@dataclass
class Hits:
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
    _votes: Fragment | None = None

    def joined(self, tail: "Hits") -> "Hits":
        pairs = ((self.track, tail.track), (self.ref_time, tail.ref_time), (self.sim, tail.sim),
                 (self.q_time, tail.q_time), (self.vectors, tail.vectors))
        mel = None
        if self.mel is not None and tail.mel is not None:
            mel = np.concatenate([self.mel[: tail.mel_at - self.mel_at], tail.mel])
        return Hits(self.start_s, *(np.concatenate(pair) for pair in pairs), mel=mel, mel_at=self.mel_at)

    def votes(self, cfg: MatchConfig) -> Fragment:
        if self._votes is None:
            self._votes = Fragment(self.start_s, vote(self.track, self.ref_time, self.sim, self.q_time,
                                                        cfg.offset_bin_s))
        return self._votes


def search_fragment(start_s: float, starts: np.ndarray, vectors: np.ndarray, store: Store, fc: FeatureConfig,
            cfg: MatchConfig, searcher: Searcher | None) -> Hits:
    """A fragment's embedded windows (start frames `starts`) -> their top-k stored vectors."""
    idx, sim = (searcher or store).search(vectors, cfg.top_k)
    track, ref_time = store.lookup(idx)
    return Hits(start_s, track, ref_time, sim, starts * fc.frame_seconds, vectors)

"""Scoring a track along its alignment: every query window is compared with the track's stored
window where the votes' offset puts it, and what counts is how far that similarity rises above
the window's background (its k-th best similarity in the whole store). Windows whose top hits
noise pushed the right track out of still count, and a chance alignment's weak windows count
against it."""

from __future__ import annotations

import numpy as np

from tagmatch.match.votes import Fragment, Hits
from tagmatch.store.shards import Store


# Where an alignment puts a query window, the reference has a window within ALIGN_TOLERANCE_S (its
# grid is 0.32 s or finer); each fragment's offset is also tried ALIGN_SHIFTS_S away, since a vote's
# offset is a mean over a 0.5 s bin and its neighbours and drifts with speed changes.
ALIGN_TOLERANCE_S = 0.25


ALIGN_SHIFTS_S = (-0.3, 0.0, 0.3)


def strongest(t: int, fragments: list[Fragment]) -> int:
    """The index of the fragment where track t's vote is strongest (where its offset is taken)."""
    return max((i for i, f in enumerate(fragments) if t in f.scores), key=lambda i: fragments[i].scores[t][0])


def aligned_score(t: int, hits: list[Hits], fragments: list[Fragment], store: Store) -> float:
    """Track t's evidence along its alignment, per window, averaged over fragments. A fragment where
    t got no vote is aligned at t's offset in its strongest fragment."""
    times, ref = store.track_vectors(t)
    anchor = fragments[strongest(t, fragments)].scores[t][1]
    total = 0.0
    for h, f in zip(hits, fragments):
        offset = f.scores[t][1] if t in f.scores else anchor
        background = np.maximum(h.sim[:, -1], 0.0) if h.sim.shape[1] else np.zeros(len(h.q_time), np.float32)
        total += max(along(times, ref, h.vectors, h.q_time + offset + shift, background)
                     for shift in ALIGN_SHIFTS_S)
    return total / len(hits)


def along(times: np.ndarray, ref: np.ndarray, vectors: np.ndarray, at: np.ndarray, background: np.ndarray) -> float:
    """Mean over query windows of how far each one's similarity to the reference window at time
    `at` (the best within ALIGN_TOLERANCE_S) rises above its `background`; 0 where it does not.
    times/ref: the track's stored windows (ascending times, unit vectors)."""
    return float(np.maximum(aligned_similarity(times, ref, vectors, at) - background, 0.0).mean())


def aligned_similarity(times: np.ndarray, ref: np.ndarray, vectors: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Each query window's similarity to the reference's stored window at time `at`: the best
    within ALIGN_TOLERANCE_S, 0 where there is none (silence, past the end)."""
    lo = np.searchsorted(times, at - ALIGN_TOLERANCE_S)
    hi = np.searchsorted(times, at + ALIGN_TOLERANCE_S, side="right")
    best = np.zeros(len(at), np.float32)
    for j in range(int((hi - lo).max(initial=0))):
        row = lo + j
        ok = row < hi
        best[ok] = np.maximum(best[ok], np.einsum("ij,ij->i", vectors[ok], ref[row[ok]]))
    return best

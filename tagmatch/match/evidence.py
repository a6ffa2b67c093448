"""The evidence behind a match, as something to look at: the query's log-mel over one fragment,
the reference's over the span the alignment puts beside it, and, window by window, how similar
the query is to the reference there against its background (its k-th best similarity in the whole
store, as the matcher's aligned score counts it: tagmatch.match.align).

Bounded work: FRAGMENT_S of each file is read (the reference with a seek), and the windows are
embedded and searched once. The Review screen's evidence pane and `tagmatch explain` draw it
(tagmatch.match.picture).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagmatch.audio.decode import read_segment
from tagmatch.audio.features import SILENT_RMS, log_mel, window_rms, window_starts
from tagmatch.errors import AudioReadError, TagmatchError
from tagmatch.match.align import aligned_similarity
from tagmatch.match.config import MatchConfig
from tagmatch.match.query import frame_grid
from tagmatch.model.modelfile import LoadedModel
from tagmatch.store.shards import Store

FRAGMENT_S = 10.0


@dataclass(frozen=True)
class Picture:
    """One fragment's evidence. Times are the query's; the reference is at query time + offset_s."""

    query_mel: np.ndarray  # [shape=(frames, n_mels)]
    reference_mel: np.ndarray | None  # same frames; NaN where the reference has none; None: unreadable
    frame_s: float
    start_s: float  # query time of frame 0
    offset_s: float
    window_s: np.ndarray  # [shape=(w,)] query time of each audible window's start
    similarity: np.ndarray  # [shape=(w,)] with the reference's stored window there (best within tolerance)
    background: np.ndarray  # [shape=(w,)] the window's k-th best similarity in the store
    note: str = ""  # what could not be shown, in one line

    @property
    def agreeing(self) -> float:
        """The share of windows whose similarity rises above their background."""
        return float((self.similarity > self.background).mean()) if len(self.similarity) else 0.0


def picture(query: Path | str, candidate: dict, store: Store | None, model: LoadedModel, searcher=None,
            start_s: float = 0.0, cfg: MatchConfig = MatchConfig()) -> Picture:
    """The evidence that `query` holds `candidate` (a scan entry's match: its reference "path"
    and "offset_s"), over FRAGMENT_S from `start_s`. An unreadable query raises TagmatchError (one
    line); an unreadable reference, or one the store does not hold, gives a Picture with a note."""
    fc = model.feature_config
    offset = float(candidate.get("offset_s") or 0.0)
    y = read_segment(query, fc.sample_rate, start_s, FRAGMENT_S)
    S = log_mel(y, fc)
    if len(S) == 0:
        raise TagmatchError(f"{query}: no audio from {start_s:.1f} s")
    notes = []
    reference = _reference_mel(Path(candidate["path"]), start_s + offset, len(S), fc)
    if reference is None:
        notes.append(f"the reference {candidate['path']} cannot be read (moved or deleted?): not drawn")
    hop = frame_grid(model, cfg)[0]
    starts = window_starts(len(S), hop, fc)
    starts = starts[window_rms(y, starts, fc) > SILENT_RMS]
    window_s = start_s + starts * fc.frame_seconds
    similarity = background = np.zeros(len(starts), np.float32)
    track = store.track_by_path().get(candidate["path"]) if store is not None else None
    if len(starts) and track is not None:
        vectors = model.embed_query(S, starts)
        _, sims = (searcher or store).search(vectors, cfg.top_k)
        background = np.maximum(sims[:, -1], 0.0) if sims.shape[1] else background
        similarity = aligned_similarity(*store.track_vectors(track), vectors, window_s + offset)
    elif store is not None:
        notes.append("the store no longer holds that reference: no similarity")
    return Picture(S, reference, fc.frame_seconds, start_s, offset, window_s, similarity, background, "; ".join(notes))


def _reference_mel(path: Path, at_s: float, frames: int, fc) -> np.ndarray | None:
    """The reference's log-mel over `frames` frames from its time `at_s` (NaN before its start or
    after its end); None when it cannot be read."""
    out = np.full((frames, fc.n_mels), np.nan, np.float32)
    skip = max(0, int(round(-at_s / fc.frame_seconds)))  # frames before the reference starts
    if skip >= frames:
        return out
    try:
        y = read_segment(path, fc.sample_rate, max(0.0, at_s), (frames - skip) * fc.frame_seconds + fc.n_fft / fc.sample_rate)
    except AudioReadError:
        return None
    R = log_mel(y, fc)[: frames - skip]
    out[skip : skip + len(R)] = R
    return out

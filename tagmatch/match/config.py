"""What the matcher is tuned by: `MatchConfig`, and the `Searcher` that finds neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Searcher(Protocol):
    """Top-k stored vectors by inner product: `Store` (exact) or `tagmatch.store.ann.IVFPQSearch`."""

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
    # with its query adapter and its five-set calibration; docs/benchmarks.md, "Stopping early");
    # right answers' margins have a median of 0.17.
    stop_confidence: float | None = 0.9999
    # Verification (tagmatch.match.verify): when the best answer is not already this sure, the best
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

"""Verification: does the query really hold its candidate's recording? Asked of the reference file.

Why: under heavy noise (0 dB + reverb) the right song's evidence in the embeddings can fall among
the unknown songs' best chance alignments, which set the threshold. But the store remembers where
each reference file is, and the alignment says where in it the query should be. Reading those
seconds of the reference and comparing them with the query's own spectrogram is a second, independent
piece of evidence: the same recording under noise still changes where the reference changes (notes
start, chords move), while another song, however alike, does not.

The comparison is a normalised correlation of spectral change: each log-mel band minus its mean,
each frame minus its mean over the bands (gain and EQ drop out), then the difference from one frame
to the next (stationary noise and slow reverb tails mostly drop out), searched over small lags
around the alignment. Unrelated audio correlates at ~0.01-0.05; the right recording under 0 dB
noise and reverb at ~0.1-0.5 (docs/benchmarks.md, "Verification"). How far that peak stands above
the same two signals' correlation off the alignment (its significance) is the second measure: the
height alone cannot tell a peak that rises out of flat noise from one among many a beat apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft

from tagmatch.audio.decode import read_segment
from tagmatch.errors import AudioReadError
from tagmatch.audio.features import FeatureConfig, log_mel

MAX_LAG_S = 0.6  # the alignment's offset comes from 0.5 s vote bins and +-0.3 s shifts


def spectral_change(S: np.ndarray) -> np.ndarray:
    """Log-mel [shape=(frames, n_mels)] -> its frame-to-frame change, per band and per frame centred."""
    S = S - S.mean(axis=0, keepdims=True)
    S = S - S.mean(axis=1, keepdims=True)
    return np.diff(S, axis=0, prepend=S[:1]).astype(np.float32)


@dataclass(frozen=True)
class Evidence:
    """What a reference file says about a candidate."""

    correlation: float  # the best normalised correlation within +-MAX_LAG_S of the alignment
    # how many standard deviations that stands above the same two signals' correlation from 0.6 s
    # to half the query's length off the alignment: a song whose change is strongly periodic
    # correlates with itself a beat off, another barely anywhere, and the height does not know which
    significance: float


def compare(query: np.ndarray, reference: np.ndarray) -> Evidence:
    """Correlate `query` [shape=(n, bands)] with every `n` consecutive frames of the longer
    `reference` [shape=(m, bands)] (the valid lags: the peak), and, for the background, at the lags
    that wrap around the end of the reference (the query against the reference from 0.6 s to half
    the query's length off the alignment)."""
    n, m = len(query), len(reference)
    if n < 2 or m < n:
        return Evidence(0.0, 0.0)
    # every circular lag's dot product at once: the bands' correlations summed in the frequency
    # domain (scipy.fft, as features.py; scipy.signal.correlate does the same but costs ~1.8 s to import)
    spectrum = (scipy.fft.rfft(reference, m, axis=0) * np.conj(scipy.fft.rfft(query, m, axis=0))).sum(axis=1)
    dots = scipy.fft.irfft(spectrum, m)
    energy = (reference.astype(np.float64) ** 2).sum(axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(np.concatenate([energy, energy[: n - 1]]))])
    norms = np.sqrt(np.maximum(cumulative[n : n + m] - cumulative[:m], 0.0)) * np.linalg.norm(query)
    corr = dots / np.maximum(norms, 1e-9)
    peak, elsewhere = float(corr[: m - n + 1].max()), corr[m - n + 1 :]
    significance = (peak - elsewhere.mean()) / max(float(elsewhere.std()), 1e-9) if len(elsewhere) > 1 else 0.0
    return Evidence(peak, float(significance))


def check_reference(query_mel: np.ndarray, query_start_s: float, reference: Path | str,
                    offset_s: float, fc: FeatureConfig) -> Evidence | None:
    """How well the query's log-mel (frames from `query_start_s` of the query) matches the reference
    file where the alignment puts it (reference time = query time + `offset_s`), within +-MAX_LAG_S.
    None when the reference cannot be read (moved, deleted, damaged): no evidence either way."""
    if len(query_mel) < 2:
        return None
    pad = int(round(MAX_LAG_S / fc.frame_seconds))
    start_frame = int(round((query_start_s + offset_s) / fc.frame_seconds)) - pad
    frames = len(query_mel) + 2 * pad
    try:
        y = read_segment(reference, fc.sample_rate, max(0, start_frame) * fc.frame_seconds,
                         ((frames - 1) * fc.hop_length + fc.n_fft) / fc.sample_rate)
    except AudioReadError:
        return None
    R = log_mel(y, fc)
    # frames before the reference's start or after its end: its mean (no change there)
    padded = np.empty((frames, fc.n_mels), np.float32)
    padded[:] = R.mean(axis=0) if len(R) else 0.0
    at = max(0, -start_frame)
    R = R[: frames - at]
    padded[at : at + len(R)] = R
    return compare(spectral_change(query_mel), spectral_change(padded))

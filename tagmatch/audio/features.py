"""Front end: waveform -> log-mel spectrogram -> fixed-size windows for the encoder.

All parameters live in one frozen `FeatureConfig` that is saved with every model and store, so a
store built with other features is refused instead of silently giving wrong matches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end. Defaults: 8 kHz, 10 ms hop, 64 mels over 300-4000 Hz, ~1 s windows.

    The band 300-4000 Hz survives phone lines, low-bitrate codecs and most room noise;
    8 kHz makes decoding, resampling and the STFT cheap.
    """

    sample_rate: int = 8000
    n_fft: int = 512
    hop_length: int = 80
    n_mels: int = 64
    fmin: float = 300.0
    fmax: float = 4000.0
    window_frames: int = 96  # ~0.96 s; divisible by 2**5 for five stride-2 convolutions
    # Reference windows every 0.5 s for a new window-kind model (the previous default used 0.25 s,
    # set with tools/fit_projection.py); a shared-kind model is saved with its stride (0.32 s).
    # The query hop is a MatchConfig choice.
    ref_hop_frames: int = 50

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        d = {k: v for k, v in d.items() if k != "query_hop_frames"}  # moved to MatchConfig
        return cls(**d)

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    @property
    def window_samples(self) -> int:
        """Samples of audio that make one window of `window_frames` STFT frames."""
        return self.n_fft + (self.window_frames - 1) * self.hop_length


@lru_cache(maxsize=8)
def mel_basis(cfg: FeatureConfig) -> np.ndarray:
    """Mel filterbank [shape=(n_fft // 2 + 1, n_mels)], float32: librosa's default (Slaney's mel
    scale and area normalisation), written out here because importing librosa costs every
    process ~1 s (each index worker and each scan paid it); tests/test_features.py checks it
    against `librosa.filters.mel`."""
    fft_hz = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    ramps = edges[:, None] - fft_hz[None, :]
    widths = np.diff(edges)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)  # rounded as librosa does
    weights = triangles * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return np.ascontiguousarray(weights.T, dtype=np.float32)


# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_HZ_PER_MEL, _BREAK_HZ, _LOG_STEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
_BREAK_MEL = _BREAK_HZ / _HZ_PER_MEL


def _hz_to_mel(hz: float) -> float:
    return hz / _HZ_PER_MEL if hz < _BREAK_HZ else _BREAK_MEL + np.log(hz / _BREAK_HZ) / _LOG_STEP


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel < _BREAK_MEL, mel * _HZ_PER_MEL, _BREAK_HZ * np.exp(_LOG_STEP * (mel - _BREAK_MEL)))


@lru_cache(maxsize=8)
def stft_window(cfg: FeatureConfig) -> np.ndarray:
    return np.hanning(cfg.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann


LOG_EPS = 1e-6


MEL_BLOCK_FRAMES = 512  # frames per STFT block: its temporaries (~2 MB) stay in cache, 2x faster than whole


def log_mel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel spectrogram of a mono signal.

    y : np.ndarray [shape=(n,)] at cfg.sample_rate.
    Returns S : np.ndarray [shape=(t, n_mels)], float32, t = 1 + (n - n_fft) // hop (0 if short).
    No centring/padding: frame i starts at sample i * hop_length, so times are exact.
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    if len(y) < cfg.n_fft:
        return np.zeros((0, cfg.n_mels), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(y, cfg.n_fft)[:: cfg.hop_length]
    window, basis = stft_window(cfg), mel_basis(cfg)
    out = np.empty((len(frames), cfg.n_mels), np.float32)
    for i in range(0, len(frames), MEL_BLOCK_FRAMES):
        spec = scipy.fft.rfft(frames[i : i + MEL_BLOCK_FRAMES] * window, axis=1)  # float32: ~3x numpy's
        parts = spec.view(np.float32)  # (re, im) pairs; squared in place, then summed: |X|^2
        parts *= parts
        np.matmul(parts[:, 0::2] + parts[:, 1::2], basis, out=out[i : i + MEL_BLOCK_FRAMES])
    out += LOG_EPS
    return np.log(out, out=out)


def window_starts(n_frames: int, hop_frames: int, cfg: FeatureConfig) -> np.ndarray:
    """Start frames of the windows that fit in `n_frames` frames, every `hop_frames`."""
    if n_frames < cfg.window_frames:
        return np.zeros(0, np.int64)
    return np.arange(0, n_frames - cfg.window_frames + 1, hop_frames)


def cut_windows(S: np.ndarray, starts: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Windows of a log-mel [shape=(len(starts), window_frames, n_mels)], float32 (a copy)."""
    if len(starts) == 0:
        return np.zeros((0, cfg.window_frames, cfg.n_mels), np.float32)
    view = np.lib.stride_tricks.sliding_window_view(S, cfg.window_frames, axis=0)
    return np.ascontiguousarray(view[starts].transpose(0, 2, 1))


SILENT_RMS = 1e-4  # about -80 dBFS: a window quieter than this is silence, neither stored nor searched


def window_rms(y: np.ndarray, starts: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """RMS of the audio under each window. Windows start on whole hops, so it comes from a
    cumulative sum of each hop's energy, plus the few samples past a window's last whole hop:
    a sixth of the cost of summing every sample's square (that was 7% of indexing a track)."""
    hop = cfg.hop_length
    a = np.asarray(starts, np.int64) * hop
    if len(a) == 0:
        return np.zeros(0)
    b = np.minimum(a + cfg.window_samples, len(y))
    whole = len(y) // hop
    hops = y[: whole * hop].reshape(whole, hop)
    c = np.concatenate([[0.0], np.cumsum(np.einsum("ij,ij->i", hops, hops), dtype=np.float64)])
    end = b // hop  # the window's whole hops: a // hop .. end
    past = end[:, None] * hop + np.arange(hop)  # and the samples after them, up to b
    rest = np.where(past < b[:, None], y[np.minimum(past, len(y) - 1)], 0).astype(np.float64)
    return np.sqrt((c[end] - c[a // hop] + (rest**2).sum(axis=1)) / np.maximum(b - a, 1))

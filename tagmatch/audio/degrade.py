"""Real-world damage, for making test queries out of clean music: noise at a signal-to-noise
ratio, a room's reverb, a phone's band, speed and gain changes (numpy/scipy/soxr), and real lossy
encoders (LAME through libsndfile for MP3, FFmpeg through PyAV for AAC and Opus). Training's own
degradations run inside the jitted step instead (`tagmatch.audio.augment`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tagmatch.fsutil import atomic_path



WRITE_CHUNK = 1 << 16  # frames per encoder write (one huge libsndfile write can crash, e.g. Ogg)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def avoid_clipping(y: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale the whole signal down if it would clip in a fixed-point encoder (keeps every ratio)."""
    m = float(np.max(np.abs(y))) if len(y) else 0.0
    y = y * (peak / m) if m > peak else y
    return np.asarray(y, np.float32)


def coloured_noise(rng: np.random.Generator, n: int, sr: int, exponent: float) -> np.ndarray:
    """n samples of noise whose power falls as 1 / f**exponent (0 white, 1 pink, 2 brown) above
    20 Hz, at an RMS of 0.1."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / sr), 20.0)
    x = np.fft.irfft(spec / f ** (exponent / 2), n)
    return (x / (x.std() + 1e-9) * 0.1).astype(np.float32)


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x + noise scaled so that power(x) / power(noise) is `snr_db` over the whole clip."""
    ps, pn = power(x), power(noise)
    if ps <= 0.0 or pn <= 0.0:
        return np.asarray(x, np.float32)
    return avoid_clipping(x + noise * math.sqrt(ps / pn * 10.0 ** (-snr_db / 10.0)))


def change_speed(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play `factor` times faster, tempo and pitch together (a tape or turntable running fast):
    resample as if the audio had been recorded at sr * factor, and keep the sample rate."""
    return np.asarray(soxr.resample(x, sr * factor, sr, quality="HQ"), np.float32)


def band_pass(x: np.ndarray, sr: int, lo: float = 300.0, hi: float = 3400.0, order: int = 4) -> np.ndarray:
    """Telephone band (Butterworth, 24 dB/octave each side)."""
    from scipy.signal import butter, sosfilt

    sos = butter(order, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return np.asarray(sosfilt(sos, x), np.float32)


def gain_db(x: np.ndarray, db: float) -> np.ndarray:
    return np.asarray(x * 10.0 ** (db / 20.0), np.float32)


def room_reverb(x: np.ndarray, sr: int, rng: np.random.Generator,
                rt60_s: tuple[float, float] = (0.4, 0.8)) -> tuple[np.ndarray, float]:
    """Convolve with a synthetic room: direct sound + an exponentially decaying noise tail whose
    energy is 0-6 dB below the direct sound. Returns (same length as x, the RT60 drawn)."""
    from scipy.signal import fftconvolve

    rt60 = float(rng.uniform(*rt60_s))
    t = np.arange(int(rt60 * sr)) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at t = rt60
    tail[0] = 0.0
    ir = tail / (np.linalg.norm(tail) + 1e-12) * rng.uniform(0.5, 1.0)
    ir[0] = 1.0
    return avoid_clipping(fftconvolve(x, ir)[: len(x)]), rt60


def mp3_compression_level(sr: int, kbps: float) -> float:
    """libsndfile maps its compression level c linearly onto LAME's CBR range of the MPEG
    version that `sr` implies (measured: 44.1 kHz c=0.6667 -> 128 kbps, c=0.99 -> 32 kbps);
    c = 1.0 is refused, hence the clamp."""
    lo, hi = (32, 320) if sr >= 32000 else (8, 160) if sr >= 16000 else (8, 64)
    return float(np.clip(1.0 - (kbps - lo) / (hi - lo), 0.0, 0.999))


def write_mp3(path: Path, y: np.ndarray, sr: int, kbps: float) -> None:
    """Constant-bitrate MP3 through libsndfile's LAME encoder, written in chunks."""
    channels = 1 if y.ndim == 1 else y.shape[1]
    with atomic_path(path) as tmp:
        with sf.SoundFile(tmp, "w", sr, channels, format="MP3", subtype="MPEG_LAYER_III",
                          compression_level=mp3_compression_level(sr, kbps), bitrate_mode="CONSTANT") as f:
            for i in range(0, len(y), WRITE_CHUNK):
                f.write(y[i : i + WRITE_CHUNK])


_AV_CONTAINERS = {".m4a": "ipod", ".opus": "ogg"}


_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def write_av(path: Path, y: np.ndarray, sr: int, codec: str, kbps: float) -> None:
    """Mono AAC (.m4a) or Opus (.opus) through PyAV's bundled FFmpeg."""
    import av

    if codec == "libopus" and sr not in _OPUS_RATES:
        y, sr = np.asarray(soxr.resample(y, sr, 48000, quality="HQ"), np.float32), 48000
    y = np.ascontiguousarray(y if y.ndim == 1 else y.mean(axis=1), np.float32)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=_AV_CONTAINERS[path.suffix]) as container:
            stream = container.add_stream(codec, rate=sr)
            stream.bit_rate = int(kbps * 1000)
            stream.layout = "mono"
            for i in range(0, len(y), 4096):
                frame = av.AudioFrame.from_ndarray(y[None, i : i + 4096], format="flt", layout="mono")
                frame.sample_rate = sr
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)

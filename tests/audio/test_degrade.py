"""Real-world damage and real encoders for query sets (no corpus, no model): levels, spectra,
determinism and bit rates on synthetic signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import music_like
from tagmatch.audio import degrade


SR = 44100


def _snr_db(y: np.ndarray, x: np.ndarray) -> float:
    """SNR of `y` = a*x + noise, with a found by projection (mixing may rescale to avoid clipping)."""
    a = float(np.dot(y, x) / np.dot(x, x))
    return 10 * math.log10(degrade.power(a * x) / degrade.power(y - a * x))


def _band_power(y: np.ndarray, sr: int, f: float) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    return float(spec[np.abs(freqs - f) < 5].sum())


@pytest.mark.parametrize("snr", [15.0, 10.0, 0.0, -5.0])
def test_mix_at_snr_hits_the_requested_snr(snr):
    x = music_like()
    noise = np.random.default_rng(0).standard_normal(len(x)).astype(np.float32) * 0.3
    y = degrade.mix_at_snr(x, noise, snr)
    assert y.dtype == np.float32 and len(y) == len(x)
    assert abs(_snr_db(y, x) - snr) < 0.5


def test_mix_at_snr_avoids_clipping_without_changing_the_snr():
    x = music_like(amp=0.45)
    noise = np.random.default_rng(1).standard_normal(len(x)).astype(np.float32)
    y = degrade.mix_at_snr(x, noise, 0.0)
    assert np.max(np.abs(y)) <= 0.99 + 1e-6
    assert abs(_snr_db(y, x) - 0.0) < 0.5


@pytest.mark.parametrize("factor", [1.03, 0.97])
def test_speed_change_scales_length_and_pitch_together(factor):
    t = np.arange(4 * SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    y = degrade.change_speed(x, SR, factor)
    assert abs(len(y) / len(x) - 1 / factor) < 1e-3
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak = np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spec)]
    assert abs(peak - 1000.0 * factor) < 2.0


def test_band_pass_removes_energy_below_300_hz():
    t = np.arange(4 * SR) / SR
    x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (100.0, 200.0, 1000.0)).astype(np.float32)
    y = degrade.band_pass(x, SR)[SR:]  # skip the filter's start-up transient
    x = x[SR:]
    def drop(f):
        return 10 * math.log10(_band_power(y, SR, f) / _band_power(x, SR, f))
    assert drop(100.0) < -30
    assert drop(200.0) < -12
    assert abs(drop(1000.0)) < 1.0


def test_quiet_is_20_db_down():
    x = music_like()
    assert abs(10 * math.log10(degrade.power(degrade.gain_db(x, -20.0)) / degrade.power(x)) + 20.0) < 0.01


def test_room_reverb_is_seeded_and_keeps_length():
    x = music_like(2.0)
    y1, rt1 = degrade.room_reverb(x, SR, np.random.default_rng(5))
    y2, rt2 = degrade.room_reverb(x, SR, np.random.default_rng(5))
    assert np.array_equal(y1, y2) and rt1 == rt2 and 0.4 <= rt1 <= 0.8
    assert len(y1) == len(x) and np.max(np.abs(y1)) <= 0.99 + 1e-6
    assert degrade.power(y1 - x) > 0.01 * degrade.power(x)  # a real tail, not a copy


def test_mp3_compression_level_matches_libsndfile_bitrates():
    assert degrade.mp3_compression_level(44100, 128) == pytest.approx(2 / 3)
    assert degrade.mp3_compression_level(44100, 32) == 0.999  # 1.0 is refused by libsndfile
    assert degrade.mp3_compression_level(8000, 32) == pytest.approx(1 - 24 / 56)  # MPEG-2.5: 8-64 kbps


@pytest.mark.parametrize("sr,encode,ext,kbps", [
    (SR, lambda p, y, sr: degrade.write_mp3(p, y, sr, kbps=128), ".mp3", 128),
    (SR, lambda p, y, sr: degrade.write_mp3(p, y, sr, kbps=32), ".mp3", 32),
    (8000, lambda p, y, sr: degrade.write_mp3(p, y, sr, kbps=32), ".mp3", 32),
    (SR, lambda p, y, sr: degrade.write_av(p, y, sr, codec="aac", kbps=128), ".m4a", 128),
    (8000, lambda p, y, sr: degrade.write_av(p, y, sr, codec="aac", kbps=32), ".m4a", 32),
    (SR, lambda p, y, sr: degrade.write_av(p, y, sr, codec="libopus", kbps=48), ".opus", 48),
])
def test_encoders_write_decodable_files_at_about_the_bitrate(tmp_path, sr, encode, ext, kbps):
    from tagmatch.audio.decode import load_audio

    path = tmp_path / f"q{ext}"
    y = music_like(3.0, sr) + 0.01 * np.random.default_rng(2).standard_normal(3 * sr).astype(np.float32)
    encode(path, y, sr)
    decoded = load_audio(path, 8000)
    assert abs(len(decoded) / 8000 - 3.0) < 0.35
    rate = path.stat().st_size * 8 / 3.0 / 1000
    assert 0.5 * kbps < rate < 1.6 * kbps
    assert not list(tmp_path.glob(".*tmp"))  # written atomically

import numpy as np
import pytest

from tagmatch.audio.features import FeatureConfig, cut_windows, log_mel, mel_basis, window_starts


def test_log_mel_shape_and_frame_times():
    cfg = FeatureConfig()
    y = np.random.default_rng(0).standard_normal(cfg.sample_rate * 3).astype(np.float32)
    S = log_mel(y, cfg)
    assert S.dtype == np.float32
    assert S.shape == (1 + (len(y) - cfg.n_fft) // cfg.hop_length, cfg.n_mels)
    assert np.isfinite(S).all()


def test_log_mel_of_a_tone_peaks_in_the_right_band():
    cfg = FeatureConfig()
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    S = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32), cfg)
    peak_band = S.mean(axis=0).argmax()
    weights = mel_basis(cfg)[:, peak_band]
    freqs = np.fft.rfftfreq(cfg.n_fft, 1 / cfg.sample_rate)
    assert abs(freqs[weights.argmax()] - 1000) < 60


def test_short_signal_gives_no_frames_and_no_windows():
    cfg = FeatureConfig()
    S = log_mel(np.zeros(100, np.float32), cfg)
    assert S.shape == (0, cfg.n_mels)
    assert len(window_starts(len(S), 10, cfg)) == 0


def test_windows_are_cut_at_the_hop():
    cfg = FeatureConfig()
    S = np.arange(300 * cfg.n_mels, dtype=np.float32).reshape(300, cfg.n_mels)
    starts = window_starts(len(S), cfg.ref_hop_frames, cfg)
    assert list(starts) == list(range(0, 300 - cfg.window_frames + 1, cfg.ref_hop_frames))
    w = cut_windows(S, starts, cfg)
    assert w.shape == (len(starts), cfg.window_frames, cfg.n_mels)
    np.testing.assert_array_equal(w[1], S[starts[1] : starts[1] + cfg.window_frames])


def test_config_round_trip_and_window_samples():
    cfg = FeatureConfig()
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert len(log_mel(np.zeros(cfg.window_samples, np.float32), cfg)) == cfg.window_frames


def test_jax_front_end_matches_numpy():
    """Training (JAX) and use (numpy) must compute the same features."""
    from tagmatch.audio.augment import log_mel_jax

    cfg = FeatureConfig()
    y = np.random.default_rng(1).standard_normal(cfg.window_samples).astype(np.float32) * 0.1
    np.testing.assert_allclose(np.asarray(log_mel_jax(y, cfg)), log_mel(y, cfg), rtol=1e-3, atol=1e-3)


def test_log_mel_in_blocks_equals_the_whole_signal_at_once():
    """log_mel works through the STFT a block of frames at a time (features.MEL_BLOCK_FRAMES);
    the result must be that of the plain whole-signal formula, block seams included."""
    import scipy.fft

    from tagmatch.audio.features import LOG_EPS, MEL_BLOCK_FRAMES, stft_window

    cfg = FeatureConfig()
    y = np.random.default_rng(2).standard_normal(cfg.hop_length * (2 * MEL_BLOCK_FRAMES + 77) + cfg.n_fft)
    y = y.astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(y, cfg.n_fft)[:: cfg.hop_length]
    power = np.abs(scipy.fft.rfft(frames * stft_window(cfg), axis=1)) ** 2
    expected = np.log(power @ mel_basis(cfg) + LOG_EPS)
    S = log_mel(y, cfg)
    assert S.shape == expected.shape == (2 * MEL_BLOCK_FRAMES + 78, cfg.n_mels)
    np.testing.assert_allclose(S, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg", [FeatureConfig(), FeatureConfig(fmin=100.0, fmax=900.0, n_mels=8),
                                 FeatureConfig(sample_rate=16000, n_fft=1024, n_mels=40, fmin=0.0, fmax=8000.0)])
def test_mel_basis_is_librosas(cfg):
    """Our filterbank (written out to spare each process librosa's import) is librosa's, bit for bit:
    models trained with librosa's give the same features."""
    import librosa

    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    assert np.array_equal(mel_basis(cfg), ref.T)


@pytest.mark.parametrize("n", [80, 8111, 8112, 8113, 20_000, 123_457])
def test_window_rms_is_the_rms_of_each_windows_samples(n):
    """From hop energies plus a tail: the same as the definition, also for windows cut short by
    the end of the audio."""
    from tagmatch.audio.features import window_rms

    cfg = FeatureConfig()
    rng = np.random.default_rng(n)
    y = (rng.standard_normal(n) * rng.uniform(0, 1, n) ** 3).astype(np.float32)
    starts = np.arange(0, n // cfg.hop_length, 3)
    want = [np.sqrt(np.mean(y[s * cfg.hop_length : s * cfg.hop_length + cfg.window_samples].astype(np.float64) ** 2))
            for s in starts]
    np.testing.assert_allclose(window_rms(y, starts, cfg), want, rtol=1e-5)
    assert window_rms(y, starts[:0], cfg).shape == (0,)

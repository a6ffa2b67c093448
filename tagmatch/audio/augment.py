"""Training-time degradations, in JAX so they run inside the jitted training step.

A training example is a raw waveform crop around one window. `degrade` turns it into the
log-mel window that a messy copy would give: time shift, speed change (tempo and pitch
together), room reverb, real background noise at a random SNR, gain, EQ / band limiting and
codec-like spectral damage. `log_mel_jax` is the same front end as `features.log_mel`
(a test checks they agree), so the encoder sees one feature definition in training and use.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from tagmatch.audio.features import LOG_EPS, FeatureConfig, mel_basis, stft_window


@dataclass(frozen=True)
class AugmentConfig:
    max_shift_s: float = 0.05  # a fifth of the query windows (every 0.2 s) sit this close to a reference window
    speed_p: float = 0.5
    max_speed: float = 0.035  # +-3.5 %
    reverb_p: float = 0.7
    rt60_s: tuple[float, float] = (0.1, 0.9)
    noise_p: float = 0.9
    snr_db: tuple[float, float] = (-3.0, 20.0)
    gain_db: tuple[float, float] = (-30.0, 6.0)
    eq_p: float = 0.6
    eq_db: float = 10.0
    bandlimit_p: float = 0.3
    codec_p: float = 0.3
    preroll_s: float = 0.5  # audio before the window, so reverb tails come from real music

    def crop_samples(self, feat: FeatureConfig, context_frames: int = 0) -> int:
        """Length of the raw crop that `degrade` needs for one window (and `context_frames`)."""
        body = int(view_samples(feat, context_frames) * (1 + self.max_speed)) + 2 * self.shift_samples(feat)
        return self.preroll_samples(feat) + body + 16

    def shift_samples(self, feat: FeatureConfig) -> int:
        return int(self.max_shift_s * feat.sample_rate)

    def preroll_samples(self, feat: FeatureConfig) -> int:
        return int(self.preroll_s * feat.sample_rate)


def view_samples(feat: FeatureConfig, context_frames: int = 0) -> int:
    """Samples of audio under one training view: a window and the frames of context after it."""
    return feat.window_samples + context_frames * feat.hop_length


def log_mel_jax(y: jax.Array, feat: FeatureConfig, power_gain: jax.Array | None = None) -> jax.Array:
    """y [shape=(..., n_fft + (frames - 1) * hop_length)] -> [shape=(..., frames, n_mels)].

    `power_gain` [shape=(..., n_fft//2+1)] multiplies the power spectrum (EQ, band limits).
    """
    n_frames = (y.shape[-1] - feat.n_fft) // feat.hop_length + 1
    idx = np.arange(n_frames)[:, None] * feat.hop_length + np.arange(feat.n_fft)[None]
    frames = y[..., idx] * stft_window(feat)
    spec = jnp.fft.rfft(frames, axis=-1)
    power = spec.real**2 + spec.imag**2
    if power_gain is not None:
        power = power * power_gain[..., None, :]
    return jnp.log(power @ mel_basis(feat) + LOG_EPS)


def _resample_window(crop, start, speed, n_out):
    """Read `n_out` samples from `crop` starting at `start`, stepping `speed` (linear interp)."""
    pos = start + jnp.arange(n_out) * speed
    i0 = jnp.floor(pos).astype(jnp.int32)
    frac = pos - i0
    return crop[i0] * (1 - frac) + crop[i0 + 1] * frac


def _reverb(key, x, feat: FeatureConfig, cfg: AugmentConfig):
    """Convolve with a synthetic room response: direct sound + exponentially decaying noise."""
    k1, k2, k3 = jax.random.split(key, 3)
    n_ir = int(cfg.rt60_s[1] * feat.sample_rate)
    rt60 = jax.random.uniform(k1, (), minval=cfg.rt60_s[0], maxval=cfg.rt60_s[1])
    t = jnp.arange(n_ir) / feat.sample_rate
    tail = jax.random.normal(k2, (n_ir,)) * jnp.exp(-6.9 * t / rt60)
    wet = jax.random.uniform(k3, (), minval=0.3, maxval=1.0)
    ir = tail / (jnp.linalg.norm(tail) + 1e-9) * wet
    ir = ir.at[0].set(1.0)
    n = x.shape[-1] + n_ir
    nfft = 1 << (n - 1).bit_length()
    y = jnp.fft.irfft(jnp.fft.rfft(x, nfft) * jnp.fft.rfft(ir, nfft), nfft)[: x.shape[-1]]
    return y


def _smooth_eq(key, n_bins: int, db: float):
    """A random smooth gain curve over frequency (8 control points, linear in dB)."""
    pts = jax.random.uniform(key, (8,), minval=-db, maxval=db)
    curve = jnp.interp(jnp.linspace(0, 7, n_bins), jnp.arange(8.0), pts)
    return 10.0 ** (curve / 10.0)


def _band_limit(key, feat: FeatureConfig):
    """Phone/radio-like band: high-pass 300-700 Hz, low-pass 2.5-4 kHz."""
    k1, k2 = jax.random.split(key)
    freqs = jnp.fft.rfftfreq(feat.n_fft, 1.0 / feat.sample_rate)
    lo = jax.random.uniform(k1, (), minval=300.0, maxval=700.0)
    hi = jax.random.uniform(k2, (), minval=2500.0, maxval=4000.0)
    return jax.nn.sigmoid((freqs - lo) / 40.0) * jax.nn.sigmoid((hi - freqs) / 80.0)


def degrade(key, crop, noise, feat: FeatureConfig, cfg: AugmentConfig, strength: float = 1.0,
            context_frames: int = 0):
    """One raw crop [shape=(crop_samples,)] -> one degraded log-mel window
    [shape=(window_frames + context_frames, n_mels)].

    `noise` is a background crop of the same length (real ambience when available).
    `strength` scales every probability (0 = shift only: the clean reference view).
    """
    keys = jax.random.split(key, 12)
    pre, shift = cfg.preroll_samples(feat), cfg.shift_samples(feat)
    n_out = view_samples(feat, context_frames)

    def coin(k, p):
        return jax.random.uniform(k) < p * strength

    speed = jnp.where(coin(keys[0], cfg.speed_p),
                      1.0 + jax.random.uniform(keys[1], (), minval=-cfg.max_speed, maxval=cfg.max_speed),
                      1.0)
    # The clean view sits at the crop's centre; the degraded one is shifted by up to +-max_shift.
    offset = shift + (jax.random.uniform(keys[2], (), minval=-shift, maxval=shift) if strength else 0.0)
    # Reverb acts on the pre-roll too, so the window starts inside a real reverberant tail.
    x = jnp.where(coin(keys[3], cfg.reverb_p), _reverb(keys[4], crop, feat, cfg), crop)
    # Speed change scales time around the window's start (both views share the start).
    y = _resample_window(x, pre + offset, speed, n_out)
    nz = _resample_window(noise, pre + offset, 1.0, n_out)
    snr = jax.random.uniform(keys[5], (), minval=cfg.snr_db[0], maxval=cfg.snr_db[1])
    p_sig = jnp.mean(y**2) + 1e-8
    p_noise = jnp.mean(nz**2) + 1e-8
    nz = nz * jnp.sqrt(p_sig / p_noise * 10.0 ** (-snr / 10.0))
    y = jnp.where(coin(keys[6], cfg.noise_p), y + nz, y)
    gain_db = jax.random.uniform(keys[7], (), minval=cfg.gain_db[0], maxval=cfg.gain_db[1])
    y = y * 10.0 ** (gain_db / 20.0)
    n_bins = feat.n_fft // 2 + 1
    g = jnp.ones(n_bins)
    g = jnp.where(coin(keys[8], cfg.eq_p), g * _smooth_eq(keys[9], n_bins, cfg.eq_db), g)
    g = jnp.where(coin(keys[10], cfg.bandlimit_p), g * _band_limit(keys[11], feat), g)
    S = log_mel_jax(y, feat, g)
    return jnp.where(coin(jax.random.fold_in(key, 99), cfg.codec_p),
                     _codec_damage(jax.random.fold_in(key, 7), S), S)


def _codec_damage(key, S):
    """Crude lossy-codec look in the log-mel domain: quiet bins drop to a floor, noisy levels."""
    k1, k2 = jax.random.split(key)
    peak = S.max(axis=-1, keepdims=True)
    depth = jax.random.uniform(k1, (), minval=4.0, maxval=9.0)  # nats below the frame's peak
    floor = peak - depth
    S = jnp.maximum(S, floor)
    return S + 0.3 * jax.random.normal(k2, S.shape)

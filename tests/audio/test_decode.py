"""Decoding: every format comes out as the same mono 8 kHz signal, at the right level."""

import numpy as np
import pytest
import soundfile as sf

from tagmatch.audio.decode import load_audio, stream_audio
from helpers import FORMATS, make_tone  # one tone writer for every format

SR = 8000


def _tone_level(y: np.ndarray) -> float:
    """Amplitude of the 440 Hz tone (skipping codec start-up)."""
    body = y[SR // 4 : -SR // 4]
    t = np.arange(len(body)) / SR
    return 2 * abs(np.mean(body * np.exp(-2j * np.pi * 440 * t)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_to_the_tone_at_its_level(tmp_path, fmt):
    y = load_audio(make_tone(tmp_path / f"tone.{fmt}"), SR)
    assert y.dtype == np.float32 and abs(len(y) / SR - 3.0) < 0.1
    assert _tone_level(y) == pytest.approx(0.3, rel=0.1)  # the tone was written at 0.3


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "FLOAT"])
def test_stereo_pcm_of_any_sample_type_mixes_to_mono(tmp_path, subtype):
    t = np.arange(44100 * 2) / 44100
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "s.wav"
    sf.write(str(path), np.stack([left, 0.5 * left], axis=1), 44100, subtype=subtype)
    y = load_audio(path, SR)
    assert _tone_level(y) == pytest.approx(0.3, rel=0.05)  # mean of 0.4 and 0.2


@pytest.mark.parametrize("fmt", ["flac", "ogg"])
def test_long_stereo_files_decoded_by_ffmpeg_keep_their_length_level_and_peaks(tmp_path, fmt):
    """Ogg and FLAC go through PyAV, whose frames are gathered in blocks (audio._BLOCK_SAMPLES):
    a file of several chunks comes out whole. Peaks above full scale (lossy codecs make them)
    must not wrap around to the opposite sign, as libsndfile's int16 reading did."""
    rate, seconds = 44100, 8  # 352,800 samples: more than one chunk
    t = np.arange(rate * seconds) / rate
    level = 1.2 if fmt == "ogg" else 0.4  # FLAC holds integers: no room above full scale
    left = level * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / f"long.{fmt}"
    sf.write(str(path), np.stack([left, left], axis=1), rate, format=fmt.upper(),
             subtype="VORBIS" if fmt == "ogg" else "PCM_16")
    y = load_audio(path, SR)
    assert abs(len(y) - seconds * SR) <= SR // 100
    assert _tone_level(y) == pytest.approx(level, rel=0.05)
    assert np.abs(y).max() == pytest.approx(level, rel=0.05)


def test_streamed_blocks_join_to_exactly_the_one_shot_decode(tmp_path):
    """A scan decodes progressively (so it can stop once sure). The blocks, resampled one at a
    time by soxr's stream, must join to exactly what decoding and resampling the whole file give:
    a per-block resampler would click and drift at every block edge."""
    import soxr

    rate, seconds = 44100, 15  # 661,500 samples: three blocks of audio._BLOCK_SAMPLES
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((rate * seconds, 2))).clip(-1, 1)
    path = tmp_path / "long.wav"
    sf.write(str(path), x, rate, subtype="PCM_16")
    blocks = list(stream_audio(path, SR))
    assert len(blocks) >= 3
    pcm = sf.read(str(path), dtype="int16")[0].astype(np.float32) * np.float32(1 / 32768)
    whole = soxr.resample((pcm[:, 0] + pcm[:, 1]) * np.float32(0.5), rate, SR, quality="HQ")
    joined = np.concatenate(blocks)
    assert len(joined) == len(whole) and np.array_equal(joined, whole)
    assert np.array_equal(load_audio(path, SR), whole)


def test_a_stream_can_stop_after_its_first_block(tmp_path):
    rate = 48000
    t = np.arange(rate * 20) / rate
    path = tmp_path / "long.ogg"
    sf.write(str(path), np.sin(2 * np.pi * 440 * t) * 0.3, rate, format="OGG", subtype="VORBIS")
    stream = stream_audio(path, SR)
    first = next(stream)
    stream.close()  # what a confident scan does: the rest is never decoded
    assert 0 < len(first) < 10 * SR
    assert len(load_audio(path, SR)) == pytest.approx(20 * SR, abs=SR // 100)


def test_ffmpeg_goes_on_where_libsndfile_gives_up(tmp_path, monkeypatch):
    """libsndfile reads WAV/MP3 first; should it fail part-way, FFmpeg continues from the same
    sample instead of the file becoming an error (before streaming, FFmpeg re-read it whole)."""
    import tagmatch.audio.decode as audio_mod

    rate = 44100
    t = np.arange(rate * 15) / rate
    path = tmp_path / "long.wav"
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16")
    whole = load_audio(path, SR)
    real = audio_mod._blocks_soundfile

    def fails_after_one_block(p):
        blocks = real(p)
        yield next(blocks)
        raise RuntimeError("libsndfile: unexpected end of data")

    monkeypatch.setattr(audio_mod, "_blocks_soundfile", fails_after_one_block)
    resumed = load_audio(path, SR)
    assert len(resumed) == len(whole)
    np.testing.assert_allclose(resumed, whole, atol=1e-4)

"""Fast tests of tools/bench.py (no corpus, no model): degradations, encoders, query caching,
the accuracy summary and the calibration fit."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("tagmatch_bench", ROOT / "tools" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()
SR = 44100


def _music(seconds: float = 4.0, sr: int = SR, amp: float = 0.1) -> np.ndarray:
    """A few harmonics with a slow tremolo: music-like enough for level and spectrum tests."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((440.0, 660.0, 990.0, 1500.0), 1))
    return (amp * y * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


def _snr_db(y: np.ndarray, x: np.ndarray) -> float:
    """SNR of `y` = a*x + noise, with a found by projection (mixing may rescale to avoid clipping)."""
    a = float(np.dot(y, x) / np.dot(x, x))
    return 10 * math.log10(bench.power(a * x) / bench.power(y - a * x))


def _band_power(y: np.ndarray, sr: int, f: float) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    return float(spec[np.abs(freqs - f) < 5].sum())


@pytest.mark.parametrize("snr", [15.0, 10.0, 0.0, -5.0])
def test_mix_at_snr_hits_the_requested_snr(snr):
    x = _music()
    noise = np.random.default_rng(0).standard_normal(len(x)).astype(np.float32) * 0.3
    y = bench.mix_at_snr(x, noise, snr)
    assert y.dtype == np.float32 and len(y) == len(x)
    assert abs(_snr_db(y, x) - snr) < 0.5


def test_mix_at_snr_avoids_clipping_without_changing_the_snr():
    x = _music(amp=0.45)
    noise = np.random.default_rng(1).standard_normal(len(x)).astype(np.float32)
    y = bench.mix_at_snr(x, noise, 0.0)
    assert np.max(np.abs(y)) <= 0.99 + 1e-6
    assert abs(_snr_db(y, x) - 0.0) < 0.5


@pytest.mark.parametrize("factor", [1.03, 0.97])
def test_speed_change_scales_length_and_pitch_together(factor):
    t = np.arange(4 * SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    y = bench.change_speed(x, SR, factor)
    assert abs(len(y) / len(x) - 1 / factor) < 1e-3
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak = np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spec)]
    assert abs(peak - 1000.0 * factor) < 2.0


def test_band_pass_removes_energy_below_300_hz():
    t = np.arange(4 * SR) / SR
    x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (100.0, 200.0, 1000.0)).astype(np.float32)
    y = bench.band_pass(x, SR)[SR:]  # skip the filter's start-up transient
    x = x[SR:]
    def drop(f):
        return 10 * math.log10(_band_power(y, SR, f) / _band_power(x, SR, f))
    assert drop(100.0) < -30
    assert drop(200.0) < -12
    assert abs(drop(1000.0)) < 1.0


def test_quiet_is_20_db_down():
    x = _music()
    assert abs(10 * math.log10(bench.power(bench.gain_db(x, -20.0)) / bench.power(x)) + 20.0) < 0.01


def test_room_reverb_is_seeded_and_keeps_length():
    x = _music(2.0)
    y1, rt1 = bench.room_reverb(x, SR, np.random.default_rng(5))
    y2, rt2 = bench.room_reverb(x, SR, np.random.default_rng(5))
    assert np.array_equal(y1, y2) and rt1 == rt2 and 0.4 <= rt1 <= 0.8
    assert len(y1) == len(x) and np.max(np.abs(y1)) <= 0.99 + 1e-6
    assert bench.power(y1 - x) > 0.01 * bench.power(x)  # a real tail, not a copy


def test_mp3_compression_level_matches_libsndfile_bitrates():
    assert bench.mp3_compression_level(44100, 128) == pytest.approx(2 / 3)
    assert bench.mp3_compression_level(44100, 32) == 0.999  # 1.0 is refused by libsndfile
    assert bench.mp3_compression_level(8000, 32) == pytest.approx(1 - 24 / 56)  # MPEG-2.5: 8-64 kbps


@pytest.mark.parametrize("sr,encode,ext,kbps", [
    (SR, lambda p, y, sr: bench.write_mp3(p, y, sr, kbps=128), ".mp3", 128),
    (SR, lambda p, y, sr: bench.write_mp3(p, y, sr, kbps=32), ".mp3", 32),
    (8000, lambda p, y, sr: bench.write_mp3(p, y, sr, kbps=32), ".mp3", 32),
    (SR, lambda p, y, sr: bench.write_av(p, y, sr, codec="aac", kbps=128), ".m4a", 128),
    (8000, lambda p, y, sr: bench.write_av(p, y, sr, codec="aac", kbps=32), ".m4a", 32),
    (SR, lambda p, y, sr: bench.write_av(p, y, sr, codec="libopus", kbps=48), ".opus", 48),
])
def test_encoders_write_decodable_files_at_about_the_bitrate(tmp_path, sr, encode, ext, kbps):
    from tagmatch.audio.decode import load_audio

    path = tmp_path / f"q{ext}"
    y = _music(3.0, sr) + 0.01 * np.random.default_rng(2).standard_normal(3 * sr).astype(np.float32)
    encode(path, y, sr)
    decoded = load_audio(path, 8000)
    assert abs(len(decoded) / 8000 - 3.0) < 0.35
    rate = path.stat().st_size * 8 / 3.0 / 1000
    assert 0.5 * kbps < rate < 1.6 * kbps
    assert not list(tmp_path.glob(".*tmp"))  # written atomically


def _tiny_corpus(tmp_path: Path):
    from tagmatch.train.devcorpus import DevCorpus, Track

    root = tmp_path / "corpus"
    root.mkdir()
    tracks = []
    for i, seconds in enumerate((30.0, 8.0)):  # the second is shorter than every excerpt
        p = root / f"song{i}.wav"
        sf.write(p, np.stack([_music(seconds) * (i + 1)] * 2, axis=1), SR)
        tracks.append(Track(p, "artist", f"song {i}", "album", f"song{i}.wav"))
    noise = root / "noise.wav"
    sf.write(noise, np.random.default_rng(3).standard_normal(2 * 22050).astype(np.float32) * 0.1, 22050)
    return DevCorpus(root, known=tracks[:1], unknown=tracks[1:], train_noise=[], bench_noise=[noise])


def test_make_queries_is_deterministic_and_cached(tmp_path):
    corpus = _tiny_corpus(tmp_path)
    conds = bench.select_conditions("noise10_20s,phone_12s,speed_plus3_15s,noise0_reverb_12s")
    qs = bench.make_queries(corpus, conds, seed=1, limit=None, whole_limit=30, cache=tmp_path / "c1")
    assert len(qs) == 8 and {q.kind for q in qs} == {"known", "unknown"}
    by = {(q.condition, q.kind): q for q in qs}
    assert by[("noise10_20s", "known")].meta["duration_s"] == pytest.approx(20.0, abs=0.01)
    assert by[("noise10_20s", "unknown")].meta["duration_s"] == pytest.approx(8.0, abs=0.01)  # whole short track
    assert by[("speed_plus3_15s", "known")].meta["duration_s"] == pytest.approx(15.0, abs=0.01)
    assert by[("phone_12s", "known")].meta["kbps"] < 64
    assert all(q.path.exists() and q.path.with_name(q.path.name + ".json").exists() for q in qs)
    # Same seed elsewhere: identical choices; the second call in place is served from the cache.
    again = bench.make_queries(corpus, conds, seed=1, limit=None, whole_limit=30, cache=tmp_path / "c2")
    assert [q.meta["offset_s"] for q in again] == [q.meta["offset_s"] for q in qs]
    mtimes = [q.path.stat().st_mtime_ns for q in qs]
    bench.make_queries(corpus, conds, seed=1, limit=None, whole_limit=30, cache=tmp_path / "c1")
    assert [q.path.stat().st_mtime_ns for q in qs] == mtimes
    other = bench.make_queries(corpus, conds[:1], seed=2, limit=None, whole_limit=30, cache=tmp_path / "c1")
    assert other[0].meta["offset_s"] != by[("noise10_20s", "known")].meta["offset_s"]


def test_unknown_condition_names_are_refused():
    with pytest.raises(SystemExit):
        bench.select_conditions("noise10_20s,nope")


def _rec(condition, kind, group, pred_group, status, margin, confidence=None):
    return {"condition": condition, "kind": kind, "group": group, "pred_group": pred_group,
            "correct": pred_group is not None and pred_group == group, "status": status,
            "margin": margin, "confidence": confidence if confidence is not None else (None if margin is None else 0.9 if status == "match" else 0.1),
            "wall_ms": 100.0, "cpu_ms": 150.0, "duration_s": 10.0}


def test_summary_counts_remasters_as_the_right_song():
    records = [
        _rec("a", "known", "song1", "song1", "match", 0.4),
        # a query of the remaster whose best candidate is the original: same group, correct
        _rec("a", "known", "menu", "menu", "match", 0.3),
        _rec("a", "known", "song2", "song3", "match", 0.3),  # wrong song above threshold
        _rec("a", "known", "song4", "song4", "unknown", 0.05),  # right guess, below threshold
        _rec("a", "unknown", "u1", "song1", "match", 0.3),  # a false match
        _rec("a", "unknown", "u2", "song2", "unknown", 0.02),
        _rec("b", "known", "song1", None, "error", None),
        _rec("b", "unknown", "u1", "song3", "unknown", 0.01),
    ]
    s = bench.summarise(records)
    assert list(s) == ["a", "b", "overall"]
    a = s["a"]
    assert a["n_known"] == 4 and a["acc_threshold"] == 0.5 and a["acc_top1"] == 0.75
    assert a["known_wrong_matches"] == 1 and a["n_unknown"] == 2 and a["false_matches"] == 1
    assert a["false_match_rate"] == 0.5
    assert s["b"]["errors"] == 1 and s["b"]["acc_top1"] == 0.0
    o = s["overall"]
    assert o["n_known"] == 5 and o["acc_threshold"] == pytest.approx(2 / 5) and o["false_match_rate"] == pytest.approx(1 / 3)

    from tagmatch.model.calibration import Calibration

    curve = bench.tradeoff(records, Calibration(mid=0.15, width=0.03))
    accs = [r["known_acc"] for r in curve]
    fms = [r["false_match_rate"] for r in curve]
    assert accs == sorted(accs) and fms == sorted(fms)  # loosening never loses a hit or a false match
    assert curve[-1]["known_acc"] == o["acc_top1"]


def test_calibration_mid_sits_above_the_unknowns_and_width_is_sane():
    rng = np.random.default_rng(0)
    unknown = np.abs(rng.normal(0.04, 0.03, 400))
    right = rng.normal(0.35, 0.1, 900).clip(0.0)
    wrong = np.abs(rng.normal(0.05, 0.03, 40))
    margin = np.concatenate([unknown, right, wrong, [-np.inf] * 5])  # 5 known queries that errored
    label = np.concatenate([np.zeros(400), np.ones(900), np.zeros(45)]).astype(bool)
    is_unknown = np.concatenate([np.ones(400), np.zeros(945)]).astype(bool)
    cal, facts = bench.fit_calibration(margin, label, is_unknown)
    assert cal.mid > np.percentile(unknown, 99.5)
    assert np.mean(unknown >= cal.mid) < 0.005
    assert facts["allowed_false_matches"] == 1  # 2/400 would be 0.5%: not tolerated
    assert cal.mid < np.median(right)
    assert 0.01 <= cal.width < 0.1
    assert facts["free_logistic"]["mid"] < cal.mid  # the threshold is more careful than the fit
    assert cal.confidence(float(np.median(right))) > 0.9
    assert facts["false_match_rate_at_mid"] < 0.005


def test_calibration_with_few_unknowns_sits_above_all_of_them_and_floors_the_width():
    rng = np.random.default_rng(1)
    unknown = rng.uniform(0.0, 0.01, 150)  # 0.5% of 150 is under one query
    right = rng.uniform(0.03, 0.06, 300)  # separable: a free fit would shrink the width to 0
    margin = np.concatenate([unknown, right])
    label = np.concatenate([np.zeros(150), np.ones(300)]).astype(bool)
    cal, facts = bench.fit_calibration(margin, label, np.arange(450) < 150)
    assert facts["allowed_false_matches"] == 0 and unknown.max() < cal.mid <= unknown.max() + 0.0001
    assert cal.width == pytest.approx(0.002)


def test_calibration_data_labels():
    records = [_rec("a", "known", "g", "g", "match", 0.3), _rec("a", "known", "g", "h", "match", 0.2),
               _rec("a", "unknown", "u", "g", "unknown", 0.1), _rec("a", "known", "g", None, "error", None)]
    m, label, unknown = bench.calibration_data(records)
    assert list(label) == [True, False, False, False] and list(unknown) == [False, False, True, False]
    assert m[3] == -np.inf


def test_main_without_corpus_says_how_to_get_it(tmp_path, capsys):
    assert bench.main(["--corpus", str(tmp_path / "missing"), "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "fetch-dev-corpus" in out and out.count("\n") == 1
    assert not (tmp_path / "cache").exists()


def test_results_are_json_serialisable():
    records = [_rec("a", "known", "g", "g", "match", 0.3)]
    json.dumps({"summary": bench.summarise(records), "speed": bench.speed_summary(records)})

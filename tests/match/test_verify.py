"""Verification against the reference files (tagmatch.match.verify) and the segment reader under it."""

from dataclasses import replace

import numpy as np
import pytest

from tagmatch.audio.decode import load_audio, read_segment
from tagmatch.audio.features import FeatureConfig, log_mel
from tagmatch.match.config import MatchConfig
from tagmatch.match.decide import match_file
from tagmatch.match.scan import candidate_json
from tagmatch.match.verify import check_reference, compare

FC = FeatureConfig()


def _library_files(fixture_dir):
    return sorted(p for p in (fixture_dir / "library").rglob("*") if p.is_file())


def test_a_segment_is_the_same_samples_as_the_whole_file_decoded_in_every_format(fixture_dir):
    files = _library_files(fixture_dir) + sorted((fixture_dir / "messy").glob("*.m4a"))[:1]
    assert {p.suffix.lower() for p in files} >= {".flac", ".mp3", ".ogg", ".wav", ".m4a"}
    for path in files:
        y = load_audio(path, FC.sample_rate)
        start = 0.37 * len(y) / FC.sample_rate
        seg = read_segment(path, FC.sample_rate, start, 3.0)
        assert abs(len(seg) - 3 * FC.sample_rate) <= 2, path
        a, n = int(round(start * FC.sample_rate)), 2 * FC.sample_rate
        # where in the whole decode the segment's samples lie: within 1 ms of where they should
        lags = np.arange(-400, 401)
        dots = [np.dot(seg[400 : 400 + n], y[a + 400 + lag : a + 400 + lag + n]) for lag in lags]
        assert abs(lags[int(np.argmax(dots))]) <= 8, path
    tail = read_segment(files[0], FC.sample_rate, 1e6, 3.0)  # past the end: nothing, not an error
    assert len(tail) == 0


def test_the_right_recording_under_0_db_noise_correlates_and_another_song_does_not(fixture_dir):
    songs = [p for p in _library_files(fixture_dir) if p.suffix in (".flac", ".wav")][:3]
    right, other = songs[0], songs[1]
    y = load_audio(right, FC.sample_rate)
    start = 8.0
    clip = y[int(start * FC.sample_rate) : int((start + 10) * FC.sample_rate)]
    noise = load_audio(songs[2], FC.sample_rate)[: len(clip)]  # another song as the background: 0 dB
    noise = noise * np.sqrt(np.mean(clip**2) / (np.mean(noise**2) + 1e-12))
    query = log_mel((clip + noise) * 0.3, FC)
    at_right = check_reference(query, 0.0, right, start + 0.2, FC)  # offset a little off, as votes are
    at_other = check_reference(query, 0.0, other, start, FC)
    elsewhere = check_reference(query, 0.0, right, start + 5.0, FC)  # the right file at the wrong place
    assert at_right.correlation > 0.15 and at_right.significance > 8
    for wrong in (at_other, elsewhere):
        assert wrong.correlation < 0.05 and wrong.significance < 4.5
    assert check_reference(query, 0.0, fixture_dir / "no-such-file.flac", start, FC) is None


def test_a_match_that_is_not_sure_is_checked_against_its_reference_file(fixture_dir, manifest, library_store, model,
                                                                        tmp_path):
    store, _ = library_store
    entry = next(e for e in manifest["messy"] if e["expect"] == "match" and e["path"].endswith(".mp3"))
    path = fixture_dir / entry["path"]
    verified_model = replace(model, calibration=replace(model.calibration, score="verified"))
    always = MatchConfig(verify_below=1.01, stop_confidence=None)  # check even a sure answer
    checked = match_file(path, store, verified_model, always)
    assert checked.status == "match" and checked.match.verified > 0.3 and checked.match.significance > 8
    as_json = candidate_json(checked.match, store)
    assert as_json["verified"] == pytest.approx(checked.match.verified, abs=1e-4)
    assert as_json["significance"] == pytest.approx(checked.match.significance, abs=0.01)
    # the evidence only adds: the same answer, at least as sure
    plain = match_file(path, store, verified_model, replace(always, verify=0))
    assert plain.match.track == checked.match.track and plain.match.verified is plain.match.significance is None
    assert checked.match.score > plain.match.score
    # both measures count: without the significance the gain is the correlation's alone, smaller here
    by_height = match_file(path, store, verified_model, replace(always, significance_weight=0.0))
    assert plain.match.score < by_height.match.score < checked.match.score
    # a sure answer is not checked by default; a model calibrated without the check is never checked
    assert match_file(path, store, verified_model, MatchConfig()).match.verified is None
    aligned_model = replace(model, calibration=replace(model.calibration, score="aligned"))
    assert match_file(path, store, aligned_model, always).match.verified is None


def test_a_reference_file_that_is_gone_gives_no_evidence_and_no_error(fixture_dir, manifest, library_store, model,
                                                                      tmp_path):
    store, _ = library_store
    entry = next(e for e in manifest["messy"] if e["expect"] == "match" and e["path"].endswith(".mp3"))
    t = next(i for i, tr in enumerate(store.tracks) if tr.path == str(fixture_dir / entry["reference"]))
    original = store.tracks
    store.tracks = [replace(tr, path=str(tmp_path / "gone.flac")) if i == t else tr for i, tr in enumerate(original)]
    try:
        verified_model = replace(model, calibration=replace(model.calibration, score="verified"))
        m = match_file(fixture_dir / entry["path"], store, verified_model,
                       MatchConfig(verify_below=1.01, stop_confidence=None))
    finally:
        store.tracks = original
    assert m.status == "match" and m.match.track == t and m.match.verified is None


def test_the_correlation_at_every_lag_is_the_plain_sum_of_products():
    """The peak over the lags where the query fits in the reference, and its significance against
    the lags that wrap around the reference's end, as the plain sums of products give them."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(90, 5)).astype(np.float32)
    query = reference[31:71] + 0.5 * rng.normal(size=(40, 5)).astype(np.float32)

    def corr(lag: int) -> float:
        window = reference[(np.arange(40) + lag) % 90]
        return float((query * window).sum() / (np.linalg.norm(query) * np.linalg.norm(window)))

    valid, wrapped = [corr(lag) for lag in range(51)], np.array([corr(lag) for lag in range(51, 90)])
    evidence = compare(query, reference)
    assert int(np.argmax(valid)) == 31
    assert evidence.correlation == pytest.approx(max(valid), abs=1e-5)
    assert evidence.significance == pytest.approx((max(valid) - wrapped.mean()) / wrapped.std(), rel=1e-4)
    assert evidence.significance > 10
    assert compare(query, reference[:30]).correlation == 0.0  # shorter than the query: no evidence


def test_a_track_that_even_a_perfect_check_could_not_lift_to_the_threshold_is_not_read(fixture_dir, library_store,
                                                                                        model, tmp_path):
    """One fragment of a long file counts for its share of the file only, so at a high threshold
    reading its reference could change nothing: it is skipped. A 12 s file (one fragment) is checked."""
    import soundfile as sf

    store, _ = library_store
    verified_model = replace(model, calibration=replace(model.calibration, score="verified"))
    cfg = MatchConfig(threshold=0.999999, verify_below=1.01, stop_confidence=None)
    song = fixture_dir / "messy" / "Track 14.flac"  # a whole 41 s song not in the library: 4 fragments
    whole = match_file(song, store, verified_model, cfg)
    assert whole.status == "unknown" and whole.match.verified is None
    excerpt = tmp_path / "excerpt.wav"
    sf.write(excerpt, load_audio(song, FC.sample_rate)[: 12 * FC.sample_rate], FC.sample_rate)
    short = match_file(excerpt, store, verified_model, cfg)
    assert short.status == "unknown" and short.match.verified is not None

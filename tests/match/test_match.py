import os
from dataclasses import replace

import numpy as np
import pytest
from helpers import untrained_model

from tagmatch.match.config import MatchConfig
from tagmatch.match.votes import rival_margins, vote
from tagmatch.match.query import fragment_bounds
from tagmatch.match.decide import match_file


def _messy(manifest, expect):
    return [e for e in manifest["messy"] if e["expect"] == expect]


@pytest.fixture(scope="module")
def results(fixture_dir, manifest, library_store, model):
    store, _ = library_store
    return {e["path"]: match_file(fixture_dir / e["path"], store, model) for e in manifest["messy"]}


def test_every_known_copy_is_matched_to_its_reference_at_the_right_offset(results, manifest, fixture_dir, library_store):
    store, _ = library_store
    for e in _messy(manifest, "match"):
        m = results[e["path"]]
        assert m.status == "match", (e, m)
        assert store.tracks[m.match.track].path == str(fixture_dir / e["reference"]), e
        assert abs(m.match.offset_s - e["offset_s"]) < 0.75, (e, m.match)
        assert m.match.fragments_agreeing >= 1 and m.match.fragments_total >= 1
        assert 0.5 <= m.match.confidence <= 1.0


def test_songs_not_in_the_library_are_unknown(results, manifest):
    for e in _messy(manifest, "unknown"):
        m = results[e["path"]]
        assert m.status == "unknown", (e, m)
        assert m.match is not None and m.match.confidence < 0.5  # the best guess is kept for study


def test_bad_files_get_one_line_errors(results, manifest):
    for e in _messy(manifest, "error"):
        m = results[e["path"]]
        assert m.status == "error" and m.error and "\n" not in m.error, (e, m)
    assert "empty" in results["messy/empty.mp3"].error
    assert "too short" in results["messy/short.wav"].error
    assert "silent" in results["messy/silence.wav"].error


def test_unreadable_missing_and_directory_inputs(tmp_path, library_store, model, fixture_dir, manifest):
    store, _ = library_store
    missing = match_file(tmp_path / "nope.mp3", store, model)
    assert missing.status == "error" and "cannot read" in missing.error
    folder = tmp_path / "folder.mp3"
    folder.mkdir()
    assert match_file(folder, store, model).status == "error"
    if os.geteuid() != 0:  # root reads anything, so permissions cannot be tested as root
        locked = tmp_path / "locked.wav"
        locked.write_bytes((fixture_dir / _messy(manifest, "match")[0]["path"]).read_bytes())
        locked.chmod(0)
        assert "permission" in match_file(locked, store, model).error


def test_alternatives_are_other_tracks_ranked_by_score(results):
    for m in results.values():
        if m.match:
            tracks = [m.match.track] + [a.track for a in m.alternatives]
            assert len(set(tracks)) == len(tracks) and len(m.alternatives) <= 3
            scores = [m.match.score] + [a.score for a in m.alternatives]
            assert scores == sorted(scores, reverse=True)


def test_a_higher_threshold_turns_matches_into_unknowns(fixture_dir, manifest, library_store, model):
    store, _ = library_store
    e = _messy(manifest, "match")[0]
    m = match_file(fixture_dir / e["path"], store, model, MatchConfig(threshold=1.01))
    assert m.status == "unknown" and m.match is not None


def test_votes_need_agreement_on_track_and_offset():
    # 10 windows; track 1 always at offset 5 s, track 2 scattered at random offsets.
    q = np.arange(10) * 0.1
    track = np.array([[1, 2]] * 10)
    ref = np.stack([q + 5.0, np.arange(10) * 3.7], axis=1)
    sim = np.full((10, 2), 0.9)
    votes = vote(track, ref, sim, q, 0.5)
    assert votes[1][0] == pytest.approx(0.9)
    assert abs(votes[1][1] - 5.0) < 1e-6
    assert votes[2][0] <= 0.9 * 2 / 10


def test_margins_ignore_runners_up_that_share_the_audio():
    m = rival_margins({1: 0.8, 2: 0.75, 3: 0.1}, ratio=0.8)
    assert m[1] == pytest.approx(0.7)  # track 2 is near-identical audio (a remaster), not a rival
    assert m[3] == pytest.approx(0.1)


def test_aligned_score_counts_the_windows_whose_top_hits_missed_the_track():
    """Noise pushes a right track out of most windows' top-k; along its alignment those windows
    still rise above their background, while a chance alignment's do not."""
    from tagmatch.audio.features import FeatureConfig
    from tagmatch.match.align import aligned_score
    from tagmatch.match.decide import decide
    from tagmatch.match.votes import Hits
    from tagmatch.model.calibration import Calibration
    from tagmatch.store.shards import Store, TrackInfo

    rng = np.random.default_rng(0)
    dim, n_ref = 16, 60

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    ref, other = unit(rng.normal(size=(n_ref, dim))), unit(rng.normal(size=(n_ref, dim)))
    grid = np.arange(n_ref) * 0.32  # the reference hop
    store = Store(FeatureConfig(), "toy", dim, np.concatenate([ref, other]), np.repeat([0, 1], n_ref),
                  np.tile(grid, 2), tracks=[TrackInfo(f"/lib/{i}.flac", {}, 20.0, 1, 1) for i in range(2)])
    q_time = np.arange(60) * 0.16  # the query hop: half the windows fall between reference windows
    at = np.rint((q_time + 4.0) / 0.32).astype(int)
    vectors = unit(ref[at] + 0.15 * rng.normal(size=(60, dim)))  # track 0 from 4 s on, noisy
    # Only the first 6 windows have track 0 among their hits; the rest hit track 1 by chance.
    track = np.ones((60, 2), int)
    track[:6, 0] = 0
    ref_time = np.where(track == 0, grid[at][:, None], rng.uniform(0, 19, size=(60, 2)))
    sim = np.where(track == 0, 0.9, 0.4)
    sim[:, 1] = 0.35  # each window's background
    hits = [Hits(0.0, track, ref_time, sim, q_time, vectors)]
    cfg = MatchConfig()
    votes = [hits[0].votes(cfg)]
    assert votes[0].scores[0][0] < 0.15  # by votes, 6 windows of 60
    right, chance = (aligned_score(t, hits, votes, store) for t in (0, 1))
    assert right > 0.4 and chance < 0.05
    model = type("M", (), {"calibration": Calibration(mid=0.1, width=0.02)})()
    fm = decide("q", hits, store, model, cfg)
    assert fm.status == "match" and fm.match.track == 0 and fm.match.margin == pytest.approx(right - chance)
    assert fm.match.offset_s == pytest.approx(4.0, abs=0.2)
    votes_only = decide("q", hits, store, model, MatchConfig(rescore=0))
    assert votes_only.match.margin < 0.1


def test_a_model_calibrated_for_the_votes_is_matched_with_the_votes(tmp_path, fixture_dir, manifest, library_store, model):
    """A model file calibrated before the aligned score (no `score` in its calibration) keeps the
    score its threshold was fitted for; the shipped model is calibrated for the aligned score with
    the check against the reference files ("verified")."""
    import joblib

    from tagmatch.model.calibration import Calibration
    from tagmatch.model.modelfile import default_model_path, load_model, set_calibration

    assert load_model(default_model_path()).calibration.score == "verified"
    store, _ = library_store
    old = tmp_path / "old.joblib"
    d = joblib.load(model.path)
    d["calibration"] = {"mid": 0.2, "width": 0.03}  # as files were written before
    joblib.dump(d, old)
    votes_model = load_model(old)
    assert votes_model.calibration == Calibration(0.2, 0.03, "votes") and votes_model.model_id == model.model_id
    path = fixture_dir / _messy(manifest, "match")[0]["path"]
    cfg = MatchConfig(stop_confidence=None)
    as_old = match_file(path, store, votes_model, cfg)
    votes = match_file(path, store, model, replace(cfg, rescore=0))
    aligned = match_file(path, store, model, cfg)
    assert as_old.match.margin == pytest.approx(votes.match.margin)
    assert aligned.match.margin != pytest.approx(votes.match.margin)
    set_calibration(old, Calibration(0.02, 0.004))  # calibrated again: today's score
    assert load_model(old).calibration.score == "verified"


def test_fragments_merge_a_short_tail():
    assert fragment_bounds(2200, 1000, 300) == [(0, 1000), (1000, 2200)]
    assert fragment_bounds(2400, 1000, 300) == [(0, 1000), (1000, 2000), (2000, 2400)]
    assert fragment_bounds(500, 1000, 300) == [(0, 500)]


def test_a_coarser_query_hop_embeds_fewer_windows_and_still_matches(fixture_dir, manifest, library_store, model):
    from tagmatch.audio.decode import load_audio
    from tagmatch.match.query import query_frames

    store, _ = library_store
    item = _messy(manifest, "match")[0]
    path = fixture_dir / item["path"]
    y = load_audio(path, model.feature_config.sample_rate)
    fine = query_frames(y, model, MatchConfig(query_hop_s=0.1))[1]
    coarse = query_frames(y, model, MatchConfig(query_hop_s=0.3))[1]
    assert len(coarse) <= len(fine) // 3 + 1
    fm = match_file(path, store, model, MatchConfig(query_hop_s=0.3))
    assert fm.match and store.tracks[fm.match.track].path == str(fixture_dir / item["reference"])


@pytest.mark.parametrize("kind", ["window", "shared"])
@pytest.mark.parametrize("seconds", [3.5, 9.0, 10.5, 11.0, 12.99, 13.0, 13.5, 20.9, 23.0, 31.0])
def test_progressive_reading_cuts_the_fragments_and_windows_of_the_whole_file(tmp_path, seconds, kind):
    """QueryAudio decodes only as far as it must; what it cuts must be exactly what
    fragment_bounds + query_frames give on the whole decoded file (short tails merged, silent
    windows dropped), whatever the length; with the log-mel of the whole file under each window
    and the context after it that the model reads (the shared kind's)."""
    import soundfile as sf

    from tagmatch.audio.decode import load_audio
    from tagmatch.audio.features import cut_windows
    from tagmatch.match.query import query_frames, QueryAudio

    model = untrained_model(kind)
    fc, cfg = model.feature_config, MatchConfig()
    ctx = model.context_frames
    rate = 44100
    rng = np.random.default_rng(int(seconds * 100))
    x = 0.2 * rng.standard_normal(int(seconds * rate))
    x[int(1.0 * rate) : int(4.5 * rate)] = 0.0  # a silent stretch: its windows are dropped
    path = tmp_path / "q.wav"
    sf.write(str(path), x, rate, subtype="FLOAT")
    S, starts = query_frames(load_audio(path, fc.sample_rate), model, cfg)
    n_frames = len(S)
    windows = cut_windows(S, starts, fc)
    bounds = fragment_bounds(n_frames, 1000, 300)
    query = QueryAudio(path, model, cfg)
    got = []  # (start frame, windows, starts), a short tail joined to the fragment before
    for piece in query.fragments():
        start = int(round(piece.start_s / fc.frame_seconds))
        if len(piece.starts):
            end = min(n_frames, piece.starts[-1] + fc.window_frames + ctx)  # what the model reads
            assert piece.mel_at + len(piece.mel) >= end
            np.testing.assert_allclose(piece.mel, S[piece.mel_at : piece.mel_at + len(piece.mel)],
                                       rtol=1e-5, atol=1e-5)
        piece_windows = cut_windows(piece.mel, piece.starts - piece.mel_at, fc)
        if piece.joins_previous:
            assert got[-1][0] == int(round(piece.previous_s / fc.frame_seconds))
            got[-1] = (got[-1][0], np.concatenate([got[-1][1], piece_windows]),
                       np.concatenate([got[-1][2], piece.starts]))
        else:
            got.append((start, piece_windows, piece.starts))
    assert piece.last
    got = [g for g in got if g[0] < n_frames - fc.window_frames + 1]  # no window can start in the rest
    assert [g[0] for g in got] == [a for a, _ in bounds]
    for (a, b), (_, w, s) in zip(bounds, got):
        sel = (starts >= a) & (starts < b)
        assert np.array_equal(s, starts[sel])
        np.testing.assert_allclose(w, windows[sel], rtol=1e-5, atol=1e-5)
    assert query.read_until_s <= n_frames * fc.frame_seconds + 1e-9


def test_a_sure_long_file_is_read_only_until_sure_with_the_same_answer(tmp_path, fixture_dir, manifest,
                                                                       library_store, model, monkeypatch):
    """A whole song is identified from its first fragment: the rest is neither decoded nor
    searched. Reading it all (stop_confidence None, `scan --whole-files`) gives the same song."""
    import soundfile as sf

    import tagmatch.match.query as query_mod
    from tagmatch.audio.decode import load_audio

    store, _ = library_store
    ref = max((fixture_dir / "library").rglob("*.wav"), key=lambda p: sf.info(str(p)).duration)
    y = load_audio(ref, 44100)  # 88 s, re-encoded as MP3 (a rip of the reference)
    path = tmp_path / "rip.mp3"
    sf.write(str(path), y, 44100, format="MP3")
    decoded = []

    def counting(p, sr):
        for block in load_blocks(p, sr):
            decoded.append(len(block))
            yield block

    load_blocks = query_mod.stream_audio
    monkeypatch.setattr(query_mod, "stream_audio", counting)
    early = match_file(path, store, model)
    read_early, decoded[:] = sum(decoded), []
    full = match_file(path, store, model, MatchConfig(stop_confidence=None))
    assert early.status == full.status == "match"
    assert store.tracks[early.match.track].path == store.tracks[full.match.track].path == str(ref)
    assert early.match.confidence >= 0.9999 and early.stopped_at_s == 10.0 and full.stopped_at_s is None
    assert early.match.fragments_total == 1 and full.match.fragments_total >= 8
    assert read_early < 20 * 8000 and sum(decoded) > 85 * 8000
    strict = match_file(path, store, model, MatchConfig(threshold=1.01))  # never sure enough: read it all
    assert strict.status == "unknown" and strict.stopped_at_s is None


def test_embedding_in_padded_batches_gives_each_window_its_own_vector():
    """A window-kind model's `embed` runs full batches of 32 and pads the rest to a multiple of
    8: whatever the count, every window gets the vector it gets alone, in order, and padding rows
    never leak out."""
    model = untrained_model("window", channels=(16, 32, 64, 128, 128))
    fc = model.feature_config
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, fc.window_frames, fc.n_mels)).astype(np.float32)
    alone = np.concatenate([model.embed(x[i : i + 1]) for i in range(len(x))])
    for n in (1, 9, 24, 33, 50):
        got = model.embed(x[:n])
        assert got.shape == (n, alone.shape[1])
        np.testing.assert_allclose(got, alone[:n], atol=2e-5)


@pytest.mark.parametrize("seconds", [12.5, 21.5, 26.0])
def test_reading_fragment_by_fragment_scores_as_the_whole_file(tmp_path, fixture_dir, library_store, model, seconds):
    """Without stopping, the progressive matcher (fragments cut at 10 s, a short tail joined
    back) must score exactly as match_vectors over the whole file's windows."""
    import soundfile as sf

    from tagmatch.audio.decode import load_audio
    from tagmatch.match.decide import match_vectors
    from tagmatch.match.query import query_frames

    store, _ = library_store
    ref = max((fixture_dir / "library").rglob("*.wav"), key=lambda p: sf.info(str(p)).duration)
    y = load_audio(ref, 44100)[int(7.3 * 44100) : int((7.3 + seconds) * 44100)]
    path = tmp_path / "excerpt.wav"
    sf.write(str(path), y, 44100)
    cfg = MatchConfig(stop_confidence=None)
    fc = model.feature_config
    S, starts = query_frames(load_audio(path, fc.sample_rate), model, cfg)
    whole = match_vectors(str(path), model.embed_query(S, starts), starts, len(S), store, model, cfg)
    read = match_file(path, store, model, cfg)
    for a, b in zip([whole.match] + whole.alternatives, [read.match] + read.alternatives):
        assert a.track == b.track and a.fragments_total == b.fragments_total
        assert a.score == pytest.approx(b.score, abs=1e-5) and a.offset_s == pytest.approx(b.offset_s, abs=0.011)

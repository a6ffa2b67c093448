import os

import numpy as np
import pytest

from tagmatch.match import MatchConfig, _margins, _vote, fragment_bounds, match_file


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
    votes = _vote(track, ref, sim, q, 0.5)
    assert votes[1][0] == pytest.approx(0.9)
    assert abs(votes[1][1] - 5.0) < 1e-6
    assert votes[2][0] <= 0.9 * 2 / 10


def test_margins_ignore_runners_up_that_share_the_audio():
    m = _margins({1: 0.8, 2: 0.75, 3: 0.1}, ratio=0.8)
    assert m[1] == pytest.approx(0.7)  # track 2 is near-identical audio (a remaster), not a rival
    assert m[3] == pytest.approx(0.1)


def test_fragments_merge_a_short_tail():
    assert fragment_bounds(2200, 1000, 300) == [(0, 1000), (1000, 2200)]
    assert fragment_bounds(2400, 1000, 300) == [(0, 1000), (1000, 2000), (2000, 2400)]
    assert fragment_bounds(500, 1000, 300) == [(0, 500)]


def test_a_coarser_query_hop_embeds_fewer_windows_and_still_matches(fixture_dir, manifest, library_store, model):
    from tagmatch.audio import load_audio
    from tagmatch.match import query_windows

    store, _ = library_store
    item = _messy(manifest, "match")[0]
    path = fixture_dir / item["path"]
    y = load_audio(path, model.feature_config.sample_rate)
    fine = query_windows(y, model.feature_config, MatchConfig(query_hop_s=0.1))[0]
    coarse = query_windows(y, model.feature_config, MatchConfig(query_hop_s=0.3))[0]
    assert len(coarse) <= len(fine) // 3 + 1
    fm = match_file(path, store, model, MatchConfig(query_hop_s=0.3))
    assert fm.match and store.tracks[fm.match.track].path == str(fixture_dir / item["reference"])

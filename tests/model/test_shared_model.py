"""The shared-kind encoder: one pass over a stretch of log-mel must give each window the vector it
would get alone (with its context after it), whatever the chunking and phase; and gain must not
matter."""

import numpy as np
import pytest
from helpers import untrained_model

from tagmatch.model.embedders import SHARED_MAX_WINDOWS


def _alone(model, S, start):
    """The window at `start` embedded on its own: a pass over just it and its context."""
    fc = model.feature_config
    n = fc.window_frames + model.context_frames
    x = np.full((n, fc.n_mels), np.log(1e-6), np.float32)  # silence past the end of S
    part = S[start : start + n]
    x[: len(part)] = part
    return model.embed_at(x, np.array([0]))[0]


def _mel(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((frames, 64)) * 2 - 5).astype(np.float32)


@pytest.mark.parametrize("grid", ["reference", "query", "mixed"])
def test_a_pass_over_a_track_gives_each_window_its_own_vector(grid):
    """Windows on one phase of the stride grid (a reference track; here shifted by 5 frames), on
    its four quarter phases (a query: the first three convolutions shared), or anywhere."""
    model = untrained_model("shared")
    stride = model.model_config.stride
    frames = stride * (2 * SHARED_MAX_WINDOWS + 10) + 17  # three chunks, a ragged end
    S = _mel(frames)
    last = frames - model.feature_config.window_frames
    step = {"reference": stride, "query": stride // 4, "mixed": 1}[grid]
    first = 5 if grid == "reference" else 0
    grid_starts = np.arange(first, last + 1, step)
    rng = np.random.default_rng(1)
    picks = rng.choice(grid_starts, size=min(40, len(grid_starts)), replace=False)
    starts = np.unique(np.concatenate([picks, grid_starts[:6], grid_starts[-6:]]))  # both ends too
    got = model.embed_at(S, starts)
    assert got.shape == (len(starts), model.dim)
    want = np.stack([_alone(model, S, s) for s in starts])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-4)
    if grid == "query":  # and a whole grid at once, as a query fragment comes
        every = model.embed_at(S, grid_starts)
        np.testing.assert_allclose(every[np.searchsorted(grid_starts, starts)], want, rtol=1e-4, atol=1e-5)


def test_a_window_does_not_depend_on_what_comes_before_it():
    model = untrained_model("shared")
    S = _mel(600)
    other = S.copy()
    other[:64] = _mel(64, seed=1)  # change only what lies before the window at frame 64
    a = model.embed_at(S, np.array([64, 96]))
    b = model.embed_at(other, np.array([64, 96]))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.embed_at(S, np.array([0])), model.embed_at(other, np.array([0])))


@pytest.mark.parametrize("kind", ["window", "shared"])
def test_gain_does_not_change_the_vectors(kind):
    model = untrained_model(kind)
    S = _mel(500)
    starts = np.array([0, 32, 64, 200, 400])
    louder = S + np.float32(2.3)  # x ~3.2 in amplitude: log power shifts by a constant
    np.testing.assert_allclose(model.embed_at(S, starts), model.embed_at(louder, starts), rtol=1e-4, atol=1e-4)


def test_the_shared_kind_reads_context_and_queries_on_its_stride_phases():
    window, shared = untrained_model("window"), untrained_model("shared")
    assert window.context_frames == 0 and window.default_query_hop_frames() == 20
    assert shared.context_frames == 32 and shared.default_query_hop_frames() == 16
    with pytest.raises(Exception, match="embed_at"):
        shared.embed(np.zeros((1, 96, 64), np.float32))


def test_a_shared_kind_store_finds_an_excerpt_of_a_library_track(tmp_path, fixture_dir):
    """Index and match through the shared kind's paths (whole tracks in chunks on one phase,
    queries on four): an excerpt that starts on the reference grid has windows equal to the
    reference's, so even random weights find its track and offset."""
    import soundfile as sf

    from tagmatch.audio.decode import load_audio
    from tagmatch.store.index import index_library
    from tagmatch.match.config import MatchConfig
    from tagmatch.match.decide import match_file

    model = untrained_model("shared", channels=(8, 16, 16, 16, 16))
    store, report = index_library(fixture_dir / "library", None, model, backend="local")
    assert not report.errors and store.n_vectors > 0
    ref = max((fixture_dir / "library").rglob("*.wav"), key=lambda p: sf.info(str(p)).duration)
    y = load_audio(ref, 8000)
    start_s = 10 * model.model_config.stride * model.feature_config.frame_seconds  # 3.2 s, on the grid
    path = tmp_path / "excerpt.wav"
    sf.write(str(path), y[int(start_s * 8000) : int((start_s + 12) * 8000)], 8000, subtype="FLOAT")
    fm = match_file(path, store, model, MatchConfig(stop_confidence=None))
    assert fm.status != "error", fm.error
    assert store.tracks[fm.match.track].path == str(ref)
    assert fm.match.offset_s == pytest.approx(start_s, abs=0.1)


def test_dupes_compare_files_on_half_the_stride_in_worker_processes_too(tmp_path, fixture_dir):
    """Two copies of a recording sit on unrelated grids: a shared-kind model's folders are
    embedded every half stride (0.16 s) for dupes, by worker processes as well, which load the
    model file (whose own hop is the stride)."""
    from tagmatch.dupes.find import model_for_dupes
    from tagmatch.store.index import index_library
    from tagmatch.model.modelfile import load_model, save_model

    m = untrained_model("shared")
    path = tmp_path / "shared.joblib"
    save_model(path, feature_config=m.feature_config, model_config=m.model_config, params=m.params)
    model = load_model(path)
    dupes_model = model_for_dupes(model)
    assert dupes_model.model_id == model.model_id
    assert dupes_model.feature_config.ref_hop_frames == model.model_config.stride // 2
    assert model_for_dupes(untrained_model("window")).feature_config == untrained_model("window").feature_config
    hop_s = dupes_model.feature_config.ref_hop_frames * dupes_model.feature_config.frame_seconds
    for backend in ("local", "joblib"):
        store, report = index_library(fixture_dir / "library", None, dupes_model, backend=backend, n_jobs=2)
        assert not report.errors
        steps = np.diff(store.vec_time[store.vec_track == 0])
        assert np.allclose(steps[steps > 0].min(), hop_s, atol=1e-3), (backend, steps[:5])

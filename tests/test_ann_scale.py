"""The approximate searcher (tagmatch.ann.IVFPQSearch) against exact search, in the matcher."""

import numpy as np
import pytest

from tagmatch.ann import ANN_INDEX, IVFPQSearch, searcher_for
from tagmatch.features import FeatureConfig
from tagmatch.match import MatchConfig, match_vectors
from tagmatch.store import Store, TrackInfo, quantize

DIM, TRACKS, PER_TRACK = 60, 40, 400  # 16,000 vectors: 100 s a track at the 0.25 s hop


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Tracks as smooth random walks on the sphere (neighbouring windows alike, as in music)."""
    rng = np.random.default_rng(0)
    steps = rng.standard_normal((TRACKS, PER_TRACK, DIM)).astype(np.float32)
    walk = _unit(np.cumsum(steps, axis=1) * 0.3 + rng.standard_normal((TRACKS, 1, DIM)) * 3)
    store = Store(FeatureConfig(), "m-test", DIM, vectors=quantize(walk.reshape(-1, DIM), DIM),
                  vec_track=np.repeat(np.arange(TRACKS), PER_TRACK),
                  vec_time=np.tile(np.arange(PER_TRACK) * 0.25, TRACKS),
                  tracks=[TrackInfo(f"/t{i}.flac", {}, PER_TRACK / 4, 1, 1) for i in range(TRACKS)])
    path = tmp_path_factory.mktemp("ann") / "store"
    store.save(path)
    store = Store.load(path)
    ann = IVFPQSearch.build(store, nlist=64, nprobe=16, refine=16)
    ann.save()
    return store, ann, walk, path


def _query(walk, track, first, rng, n=50):
    """n windows of a track (one 10 s fragment), degraded with noise."""
    return _unit(walk[track, first : first + n] + rng.normal(0, 0.08, (n, DIM))), first


def test_approximate_agrees_with_exact_on_most_windows(synthetic):
    store, ann, walk, _ = synthetic
    rng = np.random.default_rng(1)
    q = np.concatenate([_query(walk, t, 100, rng)[0] for t in range(0, TRACKS, 4)])
    ei, es = store.search(q, 10)
    ai, asim = ann.search(q, 10)
    assert ai.shape == ei.shape == (len(q), 10) and asim.dtype == np.float32
    assert np.mean(ai[:, 0] == ei[:, 0]) >= 0.9
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ai, ei)]) >= 0.7
    assert np.all(np.diff(asim, axis=1) <= 1e-6)  # best first
    # re-ranked exactly: a neighbour both found has the same similarity
    same = ai[:, 0] == ei[:, 0]
    assert np.allclose(asim[same, 0], es[same, 0], atol=1e-4)


def test_match_vectors_with_the_approximate_searcher(synthetic, model):
    store, ann, walk, _ = synthetic
    rng = np.random.default_rng(2)
    fc, cfg = model.feature_config, MatchConfig()
    for track in (3, 17, 31):
        q, first = _query(walk, track, 120, rng, n=100)
        starts = np.rint((first + np.arange(len(q))) * 0.25 / fc.frame_seconds).astype(np.int64)
        n_frames = int(starts[-1]) + fc.window_frames
        exact = match_vectors("q", q, starts, n_frames, store, model, cfg)
        approx = match_vectors("q", q, starts, n_frames, store, model, cfg, searcher=ann)
        assert approx.match.track == exact.match.track == track
        assert approx.match.offset_s == pytest.approx(exact.match.offset_s, abs=0.5)


def test_saved_index_round_trips_and_goes_stale_with_the_store(synthetic):
    store, ann, walk, path = synthetic
    assert (path / ANN_INDEX).exists()
    again = IVFPQSearch.load(Store.load(path))
    assert again is not None and again.key == ann.key and again.nprobe == ann.nprobe
    q = _unit(walk[5, 10:30])
    assert np.array_equal(again.search(q, 10)[0], ann.search(q, 10)[0])
    # small stores are searched exactly, whatever is saved next to them
    assert searcher_for(Store.load(path)) .__class__ is Store
    # a changed store (another shard list) does not use the old index
    changed = Store.load(path)
    changed.remove_tracks({0})
    changed.save(path)
    assert IVFPQSearch.load(Store.load(path)) is None

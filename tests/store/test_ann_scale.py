"""The approximate searcher (tagmatch.store.ann.IVFPQSearch) against exact search, in the matcher."""

import numpy as np
import pytest

import tagmatch.store.ann as ann_mod
from tagmatch.store.ann import ANN_META, IVFPQSearch, describe_search, searcher_for, update_index
from tagmatch.audio.features import FeatureConfig
from tagmatch.match.config import MatchConfig
from tagmatch.match.decide import match_vectors
from tagmatch.store.shards import Store, TrackInfo, quantize

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
    assert (path / ANN_META).exists() and (path / ann.template_file).exists()
    assert sorted(ann.parts) == sorted(s.file for s in store.shards)
    again = IVFPQSearch.load(Store.load(path))
    assert again is not None and again.key == ann.key and again.nprobe == ann.nprobe
    q = _unit(walk[5, 10:30])
    assert np.array_equal(again.search(q, 10)[0], ann.search(q, 10)[0])
    assert isinstance(searcher_for(Store.load(path)), IVFPQSearch)  # a current index is used
    assert describe_search(Store.load(path)).startswith("approximate")


def _store_of(walk, tracks, path):
    store = Store(FeatureConfig(), "m-test", DIM, tracks=[])
    for t in tracks:
        store.add_track(TrackInfo(f"/t{t}.flac", {}, PER_TRACK / 4, 1, 1), quantize(walk[t], DIM),
                        np.arange(PER_TRACK, dtype=np.float32) * 0.25)
    store.save(path)
    return Store.load(path)


def _top_tracks(searcher, store, walk, track, rng):
    q, _ = _query(walk, track, 200, rng)
    idx, _ = searcher.search(q, 10)
    return store.lookup(idx[:, 0])[0]


def test_update_index_follows_the_store_shard_by_shard(synthetic, tmp_path):
    _, _, walk, _ = synthetic
    rng = np.random.default_rng(3)
    path = tmp_path / "store"
    store = _store_of(walk, range(30), path)
    assert update_index(store, "auto") == f"search: exact, {30 * PER_TRACK:,} vectors"  # small: no index
    assert not (path / ANN_META).exists()
    assert "index built" in update_index(store, "approximate")
    assert "index current" in update_index(Store.load(path), "auto")  # kept once there
    first = IVFPQSearch.load(Store.load(path))
    first_parts = dict(first.parts)
    # new tracks: only their shard is added; the cells are not trained again
    store = Store.load(path)
    for t in (30, 31):
        store.add_track(TrackInfo(f"/t{t}.flac", {}, PER_TRACK / 4, 1, 1), quantize(walk[t], DIM),
                        np.arange(PER_TRACK, dtype=np.float32) * 0.25)
    store.save(path)
    assert "index updated: +800 -0 vectors" in update_index(store, "auto")
    store = Store.load(path)
    ann = searcher_for(store)
    assert isinstance(ann, IVFPQSearch) and ann.template_file == first.template_file
    assert {f: p for f, p in ann.parts.items() if f in first_parts} == first_parts  # the old parts kept as they were
    assert len(ann.parts) == len(first_parts) + 1
    assert np.mean(_top_tracks(ann, store, walk, 31, rng) == 31) >= 0.9
    assert np.mean(_top_tracks(ann, store, walk, 7, rng) == 7) >= 0.9
    # a removed track rewrites its shard: its old vectors leave the index, the rewritten shard's
    # come in, and every number the index answers is a number of the store as it is now
    store.remove_tracks({0})
    store.save(path)
    assert "index updated: +11,600 -12,000 vectors" in update_index(store, "auto")
    store = Store.load(path)
    ann = searcher_for(store)
    assert isinstance(ann, IVFPQSearch)
    assert np.mean(_top_tracks(ann, store, walk, 7, rng) == 6) >= 0.9  # track 7 is now number 6
    assert np.mean(_top_tracks(ann, store, walk, 31, rng) == 30) >= 0.9
    idx, _ = ann.search(_unit(walk[12, :50]), 10)
    assert idx.min() >= 0 and idx.max() < store.n_vectors
    # exact: the index goes, and scans search the store itself
    assert update_index(store, "exact").startswith("search: exact")
    assert not list(path.glob("ann-ivfpq*"))
    assert isinstance(searcher_for(Store.load(path)), Store)


def _store_in_shards(walk, tracks, per_shard, path):
    """A saved store of `tracks` in shards of `per_shard` tracks (a save makes one shard of what it
    adds, merged with small neighbours: built here shard by shard instead)."""
    from tagmatch.store.shards import Shard

    tracks = list(tracks)
    shards = [Shard(quantize(walk[tracks[a : a + per_shard]].reshape(-1, DIM), DIM),
                    np.repeat(np.arange(len(tracks[a : a + per_shard])), PER_TRACK),
                    np.tile(np.arange(PER_TRACK, dtype=np.float32) * 0.25, len(tracks[a : a + per_shard])),
                    len(tracks[a : a + per_shard])) for a in range(0, len(tracks), per_shard)]
    Store(FeatureConfig(), "m-test", DIM, shards=shards,
          tracks=[TrackInfo(f"/t{t}.flac", {}, PER_TRACK / 4, 1, 1) for t in tracks]).save(path)
    return Store.load(path)


def test_parts_added_in_worker_processes_are_those_added_here(synthetic, tmp_path):
    """Shards are added in 2 processes (`jobs`), or one after another here: the same index,
    byte for byte, and the same answers; a stop between shards leaves exact search."""
    _, _, walk, _ = synthetic
    stores = {jobs: _store_in_shards(walk, range(12), 4, tmp_path / f"jobs{jobs}") for jobs in (1, 2)}
    assert len(stores[2].shards) == 3
    assert "index built" in update_index(stores[1], "approximate", jobs=1)
    assert "index built" in update_index(stores[2], "approximate", jobs=2)
    anns = {jobs: IVFPQSearch.load(Store.load(tmp_path / f"jobs{jobs}")) for jobs in (1, 2)}
    for s1, s2 in zip(stores[1].shards, stores[2].shards):  # same tracks, same shard contents
        assert ((tmp_path / "jobs1" / anns[1].parts[s1.file]).read_bytes()
                == (tmp_path / "jobs2" / anns[2].parts[s2.file]).read_bytes())
    q = np.concatenate([_query(walk, t, 40, np.random.default_rng(t))[0] for t in (0, 5, 11)])
    (i1, s1), (i2, s2) = anns[1].search(q, 10), anns[2].search(q, 10)
    assert np.array_equal(i1, i2) and np.array_equal(s1, s2)
    # new shards of a store that has its index: added in workers, the old parts kept
    store = _store_in_shards(walk, range(12), 4, tmp_path / "grown")
    update_index(store, "approximate", jobs=2)
    kept = dict(IVFPQSearch.load(Store.load(tmp_path / "grown")).parts)
    for t in (12, 13):
        store.add_track(TrackInfo(f"/t{t}.flac", {}, PER_TRACK / 4, 1, 1), quantize(walk[t], DIM),
                        np.arange(PER_TRACK, dtype=np.float32) * 0.25)
        store.save(tmp_path / "grown")
    assert len(store.shards) == 5  # a shard per save: two new ones, added in two processes
    assert "index updated: +800 -0 vectors" in update_index(store, "auto", jobs=2)
    ann = IVFPQSearch.load(Store.load(tmp_path / "grown"))
    assert {f: p for f, p in ann.parts.items() if f in kept} == kept
    assert np.mean(_top_tracks(ann, Store.load(tmp_path / "grown"), walk, 13, np.random.default_rng(6)) == 13) >= 0.9
    # stopped after the first shard came back
    path = tmp_path / "stopped"
    _store_in_shards(walk, range(12), 4, path)
    msg = update_index(Store.load(path), "approximate", jobs=2,
                       should_stop=lambda: any(path.glob("ann-ivfpq-part-*")))
    assert msg.startswith("search: exact for now")
    assert isinstance(searcher_for(Store.load(path)), Store)
    assert "index built" in update_index(Store.load(path), "approximate", jobs=2)  # the next run builds it
    ann = IVFPQSearch.load(Store.load(path))
    assert sorted(p.name for p in path.glob("ann-ivfpq*")) == sorted([ANN_META, ann.template_file, *ann.parts.values()])


def test_update_index_retrains_a_store_that_grew_past_its_cells(synthetic, tmp_path, monkeypatch):
    _, _, walk, _ = synthetic
    path = tmp_path / "store"
    store = _store_of(walk, range(10), path)
    assert "index built" in update_index(store, "approximate")
    monkeypatch.setattr(ann_mod, "GROW_LIMIT", 1)  # any growth is past the cells' size
    store.add_track(TrackInfo("/t10.flac", {}, PER_TRACK / 4, 1, 1), quantize(walk[10], DIM),
                    np.arange(PER_TRACK, dtype=np.float32) * 0.25)
    store.save(path)
    assert "index built" in update_index(store, "auto")
    assert IVFPQSearch.load(Store.load(path)).trained_for == 11 * PER_TRACK


def test_index_cut_short_leaves_the_previous_one_in_force(synthetic, tmp_path):
    _, _, walk, _ = synthetic
    path = tmp_path / "store"
    store = _store_of(walk, range(10), path)
    update_index(store, "approximate")
    first = IVFPQSearch.load(Store.load(path))
    (path / "ann-ivfpq-part-cut0short.faiss").write_bytes(b"half an index")  # written, never named
    again = IVFPQSearch.load(Store.load(path))
    assert again is not None and again.parts == first.parts
    assert "index current" in update_index(Store.load(path), "auto")
    (path / next(iter(first.parts.values()))).unlink()  # a named file lost: exact search, and the next
    assert isinstance(searcher_for(Store.load(path)), Store)  # index run makes that part again
    assert describe_search(Store.load(path)).startswith("exact: the approximate index is out of date")
    assert "index updated: +4,000 -0 vectors" in update_index(Store.load(path), "auto")
    now = IVFPQSearch.load(Store.load(path))
    assert sorted(p.name for p in path.glob("ann-ivfpq*")) == sorted([ANN_META, now.template_file, *now.parts.values()])


def test_building_stopped_leaves_exact_search(synthetic, tmp_path):
    _, _, walk, _ = synthetic
    path = tmp_path / "store"
    store = _store_of(walk, range(10), path)
    msg = update_index(store, "approximate", should_stop=lambda: True)
    assert msg.startswith("search: exact for now")
    assert not list(path.glob("ann-ivfpq*")) and isinstance(searcher_for(Store.load(path)), Store)


def test_a_big_store_without_its_index_says_so(synthetic, tmp_path, monkeypatch):
    _, _, walk, _ = synthetic
    store = _store_of(walk, range(3), tmp_path / "store")
    assert describe_search(store) == "exact"
    monkeypatch.setattr(ann_mod, "EXACT_MAX_VECTORS", 100)  # as if it were big
    assert describe_search(store).startswith("exact: no approximate index, slower at this size")
    assert "index built" in update_index(store, "auto")  # auto builds one past the size


def test_an_index_of_the_one_file_format_is_rewritten_in_parts_with_its_cells(synthetic, tmp_path):
    import json

    import faiss

    _, _, walk, _ = synthetic
    path = tmp_path / "store"
    store = _store_of(walk, range(10), path)
    old = faiss.index_factory(DIM, "IVF16,PQ30x4fs", faiss.METRIC_INNER_PRODUCT)
    old.train(_unit(walk[:10].reshape(-1, DIM)))
    centroids = faiss.extract_index_ivf(old).quantizer.reconstruct_n(0, 16)
    faiss.write_index(old, str(path / "ann-ivfpq-0ld0ne0file.faiss"))
    (path / ANN_META).write_text(json.dumps({
        "file": "ann-ivfpq-0ld0ne0file.faiss", "key": "IVF16,PQ30x4fs", "nprobe": 8, "refine": 4,
        "model_id": store.model_id, "trained_for": store.n_vectors,
        "slots": {s.file: [i, len(s.time)] for i, s in enumerate(store.shards)}}))
    assert isinstance(searcher_for(Store.load(path)), Store)  # not read as it is
    assert "index rewritten in parts" in update_index(Store.load(path), "auto")
    ann = searcher_for(Store.load(path))
    assert isinstance(ann, IVFPQSearch) and ann.key == "IVF16,PQ30x4fs" and ann.nprobe == 8
    assert np.array_equal(faiss.extract_index_ivf(ann.index).quantizer.reconstruct_n(0, 16), centroids)
    assert not (path / "ann-ivfpq-0ld0ne0file.faiss").exists()
    assert np.mean(_top_tracks(ann, Store.load(path), walk, 4, np.random.default_rng(5)) == 4) >= 0.9


def test_parts_merge_where_faiss_would_overrun_a_list():
    """faiss 1.15 copies too many bytes when a fast-scan list already holds a multiple of 480
    entries; the merger joins such lists itself, so the merged index equals one filled at once."""
    import faiss

    from tagmatch.store.ann import _Merger

    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((2000, DIM)))
    template = faiss.index_factory(DIM, "IVF1,PQ30x4fs", faiss.METRIC_INNER_PRODUCT)
    template.train(x)
    whole = faiss.clone_index(template)
    whole.add_with_ids(x, np.arange(len(x)))
    merged = faiss.clone_index(template)
    merger = _Merger(merged)
    for a, b in [(0, 480), (480, 500), (500, 960), (960, 2000)]:  # one list: 480 entries, then 960
        part = faiss.clone_index(template)
        part.add_with_ids(x[a:b], np.arange(b - a))
        merger.merge(part, a)
    assert merged.ntotal == whole.ntotal
    d1, i1 = whole.search(x[:40], 10)
    d2, i2 = merged.search(x[:40], 10)
    np.testing.assert_array_equal(np.sort(i1, 1), np.sort(i2, 1))
    np.testing.assert_allclose(d1, d2)

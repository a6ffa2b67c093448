import os
import shutil

import numpy as np
import pytest

from tagmatch.errors import StoreError
from tagmatch.audio.features import FeatureConfig
from tagmatch.store.index import index_library
from tagmatch.store.shards import Store, vector_scale, TrackInfo


def _toy_store(n_tracks=3, per_track=5, dim=8, seed=0) -> Store:
    rng = np.random.default_rng(seed)
    s = Store(feature_config=FeatureConfig(), model_id="toy", dim=dim)
    for t in range(n_tracks):
        v = rng.standard_normal((per_track, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        s.add_track(TrackInfo(f"/lib/{t}.flac", {"title": f"T{t}"}, 60.0, 100, 1), v, np.arange(per_track) * 0.5)
    return s


def test_round_trip_keeps_everything(tmp_path):
    s = _toy_store()
    s.save(tmp_path / "s.joblib")
    r = Store.load(tmp_path / "s.joblib")
    assert r.tracks == s.tracks and r.model_id == "toy" and r.feature_config == s.feature_config
    np.testing.assert_array_equal(r.vectors, s.vectors)
    np.testing.assert_array_equal(r.vec_track, s.vec_track)
    np.testing.assert_array_equal(r.vec_time, s.vec_time)
    assert r.vectors.dtype == np.int8  # 1 byte a dimension
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temp file left behind


def test_exact_search_finds_the_stored_vector_first():
    s = _toy_store(n_tracks=4, per_track=50)
    q = s.vectors[[7, 120]].astype(np.float32) / vector_scale(s.dim)
    idx, sim = s.search(q, k=5, chunk=33)  # chunked, so the merge across chunks is exercised
    assert list(idx[:, 0]) == [7, 120]
    assert abs(sim[0, 0] - 1.0) < 0.02  # int8 storage keeps inner products of unit vectors
    assert (np.diff(sim, axis=1) <= 1e-6).all()
    full = q @ s.vectors.astype(np.float32).T / vector_scale(s.dim)
    np.testing.assert_allclose(sim, -np.sort(-full, axis=1)[:, :5], rtol=1e-5)


def test_remove_tracks_renumbers_vectors():
    s = _toy_store(n_tracks=3, per_track=4)
    s.remove_tracks({1})
    assert [t.path for t in s.tracks] == ["/lib/0.flac", "/lib/2.flac"]
    assert list(s.vec_track) == [0] * 4 + [1] * 4


def test_missing_and_corrupt_and_foreign_stores_give_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="tagmatch index"):
        Store.load(tmp_path / "none.joblib")
    bad = tmp_path / "bad.joblib"
    bad.write_bytes(b"this is not a joblib file")
    with pytest.raises(StoreError, match="corrupt"):
        Store.load(bad)
    import joblib

    joblib.dump({"something": "else"}, tmp_path / "other.joblib")
    with pytest.raises(StoreError, match="not a tagmatch store"):
        Store.load(tmp_path / "other.joblib")


def test_store_of_another_model_is_refused(library_store, model):
    store, _ = library_store
    with pytest.raises(StoreError, match="another|not the model"):
        store.check_model("0123456789abcdef", model.feature_config)
    with pytest.raises(StoreError):
        store.check_model(model.model_id, FeatureConfig(n_mels=32))
    store.check_model(model.model_id, model.feature_config)  # its own model is fine


def test_index_reads_tags_and_covers_every_track(library_store, manifest):
    store, _ = library_store
    assert len(store.tracks) == len(manifest["library"])
    by_title = {t.tags.get("title"): t for t in store.tracks}
    for entry in manifest["library"]:
        t = by_title[entry["title"]]
        assert t.tags["artist"] == entry["artist"] and t.tags["album"] == entry["album"]
        assert abs(t.duration_s - entry["duration_s"]) < 0.5
        n = (store.vec_track == store.tracks.index(t)).sum()
        assert n >= 0.8 * entry["duration_s"] * 2 - 3  # a window every 0.5 s, silence dropped


def test_incremental_index_embeds_only_new_or_changed_files(library_copy, model, tmp_path):
    files = sorted(p for p in library_copy.rglob("*") if p.is_file())
    store, rep = index_library(library_copy, None, model)
    assert len(rep.added) == len(files) and not rep.errors
    before = store.vectors.copy()

    store, rep = index_library(library_copy, store, model)
    assert rep.unchanged == len(files) and not (rep.added or rep.updated or rep.removed)
    np.testing.assert_array_equal(store.vectors, before)

    changed, deleted = files[0], files[1]
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    deleted.unlink()
    shutil.copy(files[2], library_copy / "new copy.flac" if files[2].suffix == ".flac" else library_copy / f"new copy{files[2].suffix}")
    seen = []
    store, rep = index_library(library_copy, store, model, progress=lambda p: seen.append(p.item))
    assert rep.updated == [str(changed)] and rep.removed == [str(deleted)] and len(rep.added) == 1
    assert len(seen) == 2  # only the changed and the new file were decoded and embedded
    assert len(store.tracks) == len(files)
    assert str(deleted) not in {t.path for t in store.tracks}


def test_index_reports_bad_files_and_goes_on(library_copy, model):
    (library_copy / "broken.flac").write_bytes(b"fLaC" + b"\0" * 100)
    (library_copy / "empty.mp3").write_bytes(b"")
    store, rep = index_library(library_copy, None, model)
    assert {os.path.basename(p) for p, _ in rep.errors} == {"broken.flac", "empty.mp3"}
    assert all("\n" not in reason for _, reason in rep.errors)
    assert len(store.tracks) == len(rep.added) > 0


def test_int8_quantization_keeps_unit_vectors_and_clips_outliers():
    from tagmatch.store.shards import quantize

    rng = np.random.default_rng(1)
    v = rng.standard_normal((200, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    back = quantize(v, 128).astype(np.float32) / vector_scale(128)
    assert np.abs(back - v).max() <= 0.5 / vector_scale(128) + 1e-6  # rounding only, no clipping
    assert (np.abs(np.sum(back * v, axis=1) - 1.0) < 0.005).all()  # inner products barely move
    spike = np.zeros((1, 128), np.float32)
    spike[0, 3] = 1.0  # one huge component: clipped to the int8 range, direction kept
    q = quantize(spike, 128)
    assert q[0, 3] == 127 and np.count_nonzero(q) == 1


@pytest.mark.parametrize("n", [7, 300, 1000, 4099])
def test_blocked_top_k_equals_a_full_sort(n):
    from tagmatch.store.shards import top_k_columns

    sims = np.random.default_rng(n).standard_normal((5, n)).astype(np.float32)
    k = min(10, n)
    got = np.sort(top_k_columns(sims, k, block=16), axis=1)
    want = np.sort(np.argsort(-sims, axis=1)[:, :k], axis=1)
    np.testing.assert_array_equal(got, want)


# ---- the folder format: shards, mmap, incremental saves ---------------------------------------
def _files(folder) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_a_save_writes_only_new_and_changed_shards(tmp_path):
    folder = tmp_path / "store"
    s = _toy_store(n_tracks=3)
    s.save(folder)
    first = _files(folder)
    shard1 = [n for n in first if n.startswith("shard-")]
    assert len(shard1) == 1 and "manifest.json" in first

    r = Store.load(folder)
    v = np.random.default_rng(9).standard_normal((4, r.dim)).astype(np.float32)
    r.add_track(TrackInfo("/lib/new.flac", {}, 30.0, 1, 1), v / np.linalg.norm(v, axis=1, keepdims=True),
                np.arange(4) * 0.5)
    r.save(folder)
    second = _files(folder)
    assert second[shard1[0]] == first[shard1[0]]  # the old shard was not touched
    assert len([n for n in second if n.startswith("shard-")]) == 2
    tracks1 = [n for n in first if n.startswith("tracks-")]
    assert second[tracks1[0]] == first[tracks1[0]]  # nor its track list: a new track writes its own
    assert len([n for n in second if n.startswith("tracks-")]) == 2

    r = Store.load(folder)
    r.remove_tracks({3})  # the new track: only its shard goes
    r.save(folder)
    third = _files(folder)
    assert [n for n in third if n.startswith("shard-")] == shard1 and third[shard1[0]] == first[shard1[0]]
    assert len([n for n in third if n.startswith("tracks-")]) == 1  # earlier track tables are gone
    back = Store.load(folder)
    assert back.tracks == s.tracks
    np.testing.assert_array_equal(back.vectors, s.vectors)
    np.testing.assert_array_equal(back.vec_track, s.vec_track)


def _two_shard_store(tmp_path) -> tuple[Store, Store]:
    """A toy store saved, then one more track added and saved: (the store, it loaded again)."""
    s = _toy_store(n_tracks=3)
    s.save(tmp_path / "store")
    v = np.random.default_rng(9).standard_normal((4, s.dim)).astype(np.float32)
    s.add_track(TrackInfo("/lib/new.flac", {}, 30.0, 1, 1), v / np.linalg.norm(v, axis=1, keepdims=True),
                np.arange(4) * 0.5)
    s.save(tmp_path / "store")  # a second save: the new track gets a shard of its own
    return s, Store.load(tmp_path / "store")


def test_lookup_reads_track_and_time_from_each_shard(tmp_path):
    _, r = _two_shard_store(tmp_path)
    assert len(r.shards) == 2 and r.n_vectors == 19
    idx = np.array([[18, 0, 15], [16, 7, 3]])
    track, when = r.lookup(idx)  # shard by shard: no flat tables built
    assert "vec_track" not in r._flat
    np.testing.assert_array_equal(track, r.vec_track[idx])
    np.testing.assert_array_equal(when, r.vec_time[idx])
    assert track[0, 0] == 3 and when[0, 0] == pytest.approx(1.5)


def test_track_vectors_reads_one_tracks_rows_from_its_shard(tmp_path):
    s, r = _two_shard_store(tmp_path)
    flat = r.vectors.astype(np.float32) / vector_scale(r.dim)
    for t in range(4):
        times, vectors = r.track_vectors(t)
        rows = np.flatnonzero(r.vec_track == t)
        np.testing.assert_array_equal(times, r.vec_time[rows])
        np.testing.assert_allclose(vectors, flat[rows], atol=1e-6)
    r.remove_tracks({1})
    times, vectors = r.track_vectors(1)  # the former track 2
    np.testing.assert_allclose(vectors, flat[np.flatnonzero(s.vec_track == 2)], atol=1e-6)


def test_loading_maps_the_vectors_and_searches_shard_by_shard(tmp_path, monkeypatch):
    import tagmatch.store.shards as store_mod

    s = _toy_store(n_tracks=4, per_track=50)
    s.save(tmp_path / "a")
    more = _toy_store(n_tracks=2, per_track=30, seed=5)
    r = Store.load(tmp_path / "a")
    for t, i in zip(more.tracks, range(2)):
        r.add_track(t, more.vectors[more.vec_track == i], more.vec_time[more.vec_track == i])
    r.save(tmp_path / "a")
    r = Store.load(tmp_path / "a")
    assert len(r.shards) == 2 and all(isinstance(sh.vectors, np.memmap) for sh in r.shards)
    q = r.vectors[[3, 210, 225]].astype(np.float32) / vector_scale(r.dim)
    cached = r.search(q, k=7)
    monkeypatch.setattr(store_mod, "FLOAT_CACHE_BYTES", 0)  # big-store path: int8 shards, chunked
    r2 = Store.load(tmp_path / "a")
    idx, sim = r2.search(q, k=7, chunk=17)
    np.testing.assert_array_equal(idx, cached[0])
    np.testing.assert_allclose(sim, cached[1], rtol=1e-5)
    assert list(idx[:, 0]) == [3, 210, 225]
    assert list(r2.vec_track[idx[:, 0]]) == [0, 4, 4]


def test_a_save_cut_short_leaves_the_old_store_and_the_next_save_tidies_up(tmp_path):
    folder = tmp_path / "store"
    s = _toy_store()
    s.save(folder)
    (folder / "shard-deadbeef0000.joblib").write_bytes(b"half a shard")  # a crash before the manifest
    r = Store.load(folder)
    assert r.tracks == s.tracks
    r.save(folder)
    assert not (folder / "shard-deadbeef0000.joblib").exists()


def test_an_older_single_file_store_and_a_damaged_folder_say_what_to_do(tmp_path):
    import joblib

    old = tmp_path / "store.joblib"
    joblib.dump({"format": "tagmatch-store", "version": 2}, old)
    with pytest.raises(StoreError, match="version 2 .one file.*tagmatch index"):
        Store.load(old)
    folder = tmp_path / "store"
    _toy_store().save(folder)
    next(folder.glob("shard-*")).unlink()
    with pytest.raises(StoreError, match="missing or unreadable.*tagmatch index"):
        Store.load(folder)
    with pytest.raises(StoreError, match="is a file"):
        _toy_store().save(old)


def test_many_small_saves_are_merged_into_few_shards(tmp_path, monkeypatch):
    import tagmatch.store.shards as store_mod

    monkeypatch.setattr(store_mod, "SMALL_SHARD", 100)
    monkeypatch.setattr(store_mod, "MAX_SMALL_SHARDS", 3)
    folder = tmp_path / "store"
    s = _toy_store(n_tracks=1)
    want = _toy_store(n_tracks=12)
    for i in range(12):  # one save per track, as a long index does every few seconds
        if i:
            sel = want.vec_track == i
            s.add_track(want.tracks[i], want.vectors[sel], want.vec_time[sel])
        s.save(folder)
    assert len(s.shards) <= 4
    back = Store.load(folder)
    assert back.tracks == want.tracks
    np.testing.assert_array_equal(back.vectors, want.vectors)
    np.testing.assert_array_equal(back.vec_track, want.vec_track)
    assert len(list(folder.glob("shard-*"))) == len(back.shards)


def test_a_crash_mid_index_keeps_the_files_done_and_a_rerun_finishes(fixture_dir, tmp_path, library_store):
    from tagmatch.audio.decode import find_audio_files
    from tagmatch.jobs import index_job

    class Crash(Exception):
        pass

    def crash_at_3(step):
        if step.done == 3:
            raise Crash  # the process dies here: no final save

    folder = tmp_path / "store"
    with pytest.raises(Crash):
        index_job(fixture_dir / "library", folder, on_progress=crash_at_3, save_every_s=0)
    kept = Store.load(folder)
    assert len(kept.tracks) == 3  # saved before each file's report: the third is in
    res = index_job(fixture_dir / "library", folder)
    assert res.report.unchanged == 3 and len(res.report.added) == len(find_audio_files(fixture_dir / "library")) - 3
    whole, _ = library_store
    assert sorted(t.path for t in res.store.tracks) == sorted(t.path for t in whole.tracks)


def test_a_store_of_format_3_opens_and_is_written_as_format_4(tmp_path):
    """Format 3 kept one joblib track table for the whole store; it is read as it is, and the
    next save gives every shard its own track list."""
    import json

    import joblib

    from dataclasses import asdict

    folder = tmp_path / "store"
    s = _toy_store(n_tracks=3)
    s.save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    joblib.dump([asdict(t) for t in s.tracks], folder / "tracks-0f0rmat3.joblib")
    for sh in manifest["shards"]:
        (folder / sh.pop("tracks")).unlink()
        del sh["tracks_crc32"]
    manifest.update(version=3, tracks="tracks-0f0rmat3.joblib")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    old = Store.load(folder)
    assert old.tracks == s.tracks
    np.testing.assert_array_equal(old.vectors, s.vectors)
    old.save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == 4 and "tracks" not in manifest and not (folder / "tracks-0f0rmat3.joblib").exists()
    assert Store.load(folder).tracks == s.tracks

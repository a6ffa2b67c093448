"""Parallel indexing and scanning: joblib worker processes and a dask cluster build the same store
and give the same scan as the local path; a stop keeps what is done, and a re-run completes it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tagmatch.errors import TagmatchError
from tagmatch.store.index import index_library
from tagmatch.jobs import index_job
from tagmatch.store.shards import Store


def assert_same_store(a: Store, b: Store) -> None:
    assert [t.path for t in a.tracks] == [t.path for t in b.tracks]
    assert a.tracks == b.tracks  # tags, durations, sizes, mtimes
    assert a.model_id == b.model_id and a.dim == b.dim
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.vec_track, b.vec_track)
    np.testing.assert_array_equal(a.vec_time, b.vec_time)


@pytest.fixture(scope="module")
def cluster():
    """A dask cluster of two separate worker processes, as `dask scheduler` + workers would be."""
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=logging.ERROR) as c:
        yield c


def test_joblib_builds_the_same_store_as_the_local_run(fixture_dir, model, library_store):
    store, report = index_library(fixture_dir / "library", None, model, backend="joblib", n_jobs=2)
    assert not report.errors
    assert_same_store(library_store[0], store)


def test_dask_cluster_builds_the_same_store_as_the_local_run(fixture_dir, model, library_store, cluster):
    seen = []
    store, report = index_library(fixture_dir / "library", None, model, backend="dask",
                                  scheduler=cluster.scheduler_address, progress=lambda p: seen.append(p))
    assert not report.errors
    assert [p.done for p in seen] == list(range(1, len(store.tracks) + 1))  # reported one by one, in order
    assert_same_store(library_store[0], store)


@pytest.mark.parametrize("backend", ["joblib", "dask"])
def test_a_stop_keeps_what_is_done_and_a_rerun_completes_it(backend, fixture_dir, library_copy, model,
                                                           library_store, cluster, tmp_path):
    kw = {"scheduler": cluster.scheduler_address} if backend == "dask" else {"n_jobs": 2}
    done = []
    store, report = index_library(library_copy, None, model, backend=backend, progress=done.append,
                                  should_stop=lambda: bool(done), **kw)
    assert len(store.tracks) == len(done) == 1
    path = tmp_path / "store"
    store.save(path)
    store, report = index_library(library_copy, Store.load(path), model, backend=backend, **kw)
    assert report.unchanged == 1 and not report.errors
    ref, lib = library_store[0], fixture_dir / "library"
    # The same as the local run (of another copy of the files: same paths below the root).
    assert ([(os.path.relpath(t.path, library_copy), t.tags, t.duration_s) for t in store.tracks]
            == [(os.path.relpath(t.path, lib), t.tags, t.duration_s) for t in ref.tracks])
    np.testing.assert_array_equal(store.vectors, ref.vectors)
    np.testing.assert_array_equal(store.vec_track, ref.vec_track)
    np.testing.assert_array_equal(store.vec_time, ref.vec_time)


def test_a_worker_with_another_model_fails_the_run(fixture_dir, model, tmp_path):
    import shutil

    from tagmatch.model.modelfile import default_model_path, set_projection

    other = tmp_path / "other.joblib"
    shutil.copy(default_model_path(), other)
    set_projection(other, np.eye(model.dim, model.dim // 2, dtype=np.float32))
    with pytest.raises(TagmatchError, match="same model file"):
        index_library(fixture_dir / "library", None, model, backend="joblib", n_jobs=1, model_path=other)


def test_bad_backend_arguments_are_one_line_errors(fixture_dir, tmp_path):
    with pytest.raises(TagmatchError, match="dask backend"):
        index_job(fixture_dir / "library", tmp_path / "s", backend="joblib", scheduler="tcp://127.0.0.1:1")
    with pytest.raises(TagmatchError, match="at least 1"):
        index_job(fixture_dir / "library", tmp_path / "s", backend="joblib", n_jobs=0)


@pytest.mark.slow
def test_an_unreachable_scheduler_is_a_one_line_error(fixture_dir, tmp_path):
    with pytest.raises(TagmatchError, match="cannot use the dask scheduler at tcp://127.0.0.1:1") as exc:
        index_job(fixture_dir / "library", tmp_path / "s", scheduler="tcp://127.0.0.1:1")
    assert "\n" not in str(exc.value)


@pytest.mark.slow
def test_cli_index_with_a_local_dask_cluster(fixture_dir, library_store, tmp_path):
    store_path = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "tagmatch", "index", str(fixture_dir / "library"), "--store",
                           str(store_path), "--backend", "dask", "--jobs", "2", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"added {len(library_store[0].tracks)}," in proc.stdout and "errors 0" in proc.stdout
    assert_same_store(library_store[0], Store.load(store_path))


@pytest.mark.parametrize("backend", ["joblib", "dask"])
def test_a_parallel_scan_gives_the_local_results(backend, fixture_dir, library_store, cluster):
    """Scanning whole files on worker processes (each opens the store itself) changes nothing."""
    from tagmatch.jobs import scan_job

    _, store_path = library_store
    kw = {"scheduler": cluster.scheduler_address} if backend == "dask" else {"n_jobs": 2}
    local = scan_job(fixture_dir / "messy", store_path)
    seen = []
    par = scan_job(fixture_dir / "messy", store_path, backend=backend, on_progress=seen.append, **kw)
    assert par.doc.files == local.doc.files
    assert [s.done for s in seen] == list(range(1, len(local.results) + 1))
    assert local.count("match") > 0 and local.count("error") > 0  # the fixtures' broken files too


def test_auto_starts_worker_processes_only_for_many_files(monkeypatch):
    from tagmatch.store import parallel

    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert parallel.resolve_backend("auto", parallel.AUTO_MIN_FILES - 1) == "local"
    assert parallel.resolve_backend("auto", parallel.AUTO_MIN_FILES) == "joblib"
    assert parallel.resolve_backend("dask", 1) == "dask"
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert parallel.resolve_backend("auto", 10 * parallel.AUTO_MIN_FILES) == "local"  # one core: no workers


def test_auto_index_of_many_files_runs_on_workers_and_builds_the_same_store(fixture_dir, model, library_store,
                                                                          monkeypatch):
    from tagmatch.store import index, parallel

    monkeypatch.setattr(parallel, "AUTO_MIN_FILES", 2)  # the fixtures' 14 files count as many
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    used, real = [], index.ordered_map

    def spy(fn, args, backend, *rest):
        used.append(backend)
        return real(fn, args, backend, *rest)

    monkeypatch.setattr(index, "ordered_map", spy)
    store, report = index_library(fixture_dir / "library", None, model)
    assert used == ["joblib"] and not report.errors
    assert_same_store(store, library_store[0])


def test_workers_load_the_file_the_model_came_from(tmp_path, monkeypatch):
    """A model loaded from some file is loaded by the workers from that file; the shipped one
    is named as None, so that each worker (perhaps on another machine) takes its own copy."""
    import shutil

    from tagmatch.model.modelfile import default_model_path, load_model
    from tagmatch.store.parallel import model_path_for_workers

    monkeypatch.delenv("TAGMATCH_MODEL", raising=False)
    assert model_path_for_workers(load_model().path) is None
    copy = tmp_path / "m.joblib"
    shutil.copy(default_model_path(), copy)
    assert model_path_for_workers(load_model(copy).path) == str(copy.resolve())


def test_prefetch_hands_what_it_started_but_never_yielded_to_discard():
    """A scan stopped early must close the files it opened ahead (prefetch's `discard`), not
    leave them to the garbage collector."""
    from tagmatch.store.parallel import prefetch

    discarded = []
    gen = prefetch(lambda x: x * 10, [1, 2, 3, 4, 5], threads=1, ahead=2, discard=discarded.append)
    first, fut = next(gen)
    assert (first, fut.result()) == (1, 10)
    gen.close()
    assert sorted(discarded) == [20, 30]  # started ahead while 1 was worked on
    assert [x for x, _ in prefetch(lambda x: x, [1, 2, 3], 2, 2)] == [1, 2, 3]

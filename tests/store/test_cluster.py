"""Search sharded over a dask cluster (tagmatch.store.cluster): groups of shards on the workers,
merged on the client, with the answers of the one-process scan; and its faults: a worker killed
mid-scan, a worker holding another store version, a cluster that goes away."""

from __future__ import annotations

import json
import logging
import os
import signal

import numpy as np
import pytest

from tagmatch.errors import SearchLost, StoreError
from tagmatch.jobs import scan_job
from tagmatch.store.cluster import ClusterSearcher, merge_top_k, open_group, plan_groups, store_version
from tagmatch.store.folder import Shard
from tagmatch.store.shards import Store

distributed = pytest.importorskip("distributed")
N_SHARDS = 4


def _split_copy(store: Store, path, n: int = N_SHARDS):
    """The store saved again with its tracks in `n` shards (the fixtures' store is one shard)."""
    bounds = np.linspace(0, len(store.tracks), n + 1).round().astype(int)
    vt, vtime, vec = store.vec_track, store.vec_time, np.asarray(store.vectors)
    shards = []
    for a, b in zip(bounds, bounds[1:]):
        rows = (vt >= a) & (vt < b)
        shards.append(Shard(vec[rows], vt[rows] - a, vtime[rows], int(b - a)))
    split = Store(store.feature_config, store.model_id, store.dim, tracks=store.tracks, shards=shards)
    split.save(path)
    return Store.load(path)


def _cluster(n_workers: int = 2):
    return distributed.LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1,
                                    dashboard_address=None, silence_logs=logging.ERROR)


@pytest.fixture(scope="module")
def split_store(library_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("cluster") / "store"
    return _split_copy(library_store[0], path), path


@pytest.fixture(scope="module")
def cluster():
    with _cluster() as c:
        yield c


@pytest.fixture(scope="module")
def local_scan(fixture_dir, split_store):
    return scan_job(fixture_dir / "messy", split_store[1], backend="local")


def assert_same_answers(a: list[dict], b: list[dict]) -> None:
    """Every file's status, match, confidence (to 1e-6) and alternatives the same."""
    assert [f["path"] for f in a] == [f["path"] for f in b]
    for x, y in zip(a, b):
        assert (x["status"], x["error"]) == (y["status"], y["error"]), x["path"]
        for cx, cy in zip([x["match"], *x["alternatives"]], [y["match"], *y["alternatives"]]):
            assert (cx is None) == (cy is None), x["path"]
            if cx is not None:
                assert cx["path"] == cy["path"] and cx["offset_s"] == cy["offset_s"], x["path"]
                assert abs(cx["confidence"] - cy["confidence"]) <= 1e-6, x["path"]
        assert len(x["alternatives"]) == len(y["alternatives"])


def test_groups_are_contiguous_runs_of_shards_of_about_equal_size():
    sizes = [5, 5, 5, 5, 1, 1, 1, 1, 20]
    store = Store.__new__(Store)
    store.shards = [Shard(np.zeros((n, 2)), np.zeros(n), np.zeros(n), 1, f"s{i}") for i, n in enumerate(sizes)]
    store._pending = []
    for n in (1, 2, 3, 9, 20):
        groups = plan_groups(store, n)
        assert [f for g in groups for f in g.files] == [s.file for s in store.shards]  # each once, in order
        assert len(groups) == min(n, len(sizes)) and all(g.files for g in groups)
        assert [g.first for g in groups] == list(np.cumsum([0] + [g.n_vectors for g in groups])[:-1])
    assert [len(g.files) for g in plan_groups(store, 2)] == [6, 3]  # 22 | 22 vectors


def test_merged_top_k_of_the_groups_is_the_top_k_of_the_whole():
    rng = np.random.default_rng(0)
    sims = rng.standard_normal((7, 300)).astype(np.float32)
    sims[:, 50] = sims[:, 250] = 9  # a tie: the lower number first
    parts = []
    for lo, hi in ((0, 100), (100, 180), (180, 300)):
        top = np.argsort(-sims[:, lo:hi], axis=1, kind="stable")[:, :10]
        parts.append((top + lo, np.take_along_axis(sims[:, lo:hi], top, 1)))
    idx, sim = merge_top_k(parts, 10)
    want = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(sim, np.take_along_axis(sims, want, 1))
    assert (idx[:, 0] == 50).all() and (idx[:, 1] == 250).all()


def test_a_sharded_scan_gives_the_one_process_answers(fixture_dir, split_store, cluster, local_scan):
    store, path = split_store
    seen = []
    sharded = scan_job(fixture_dir / "messy", path, scheduler=cluster.scheduler_address, on_progress=seen.append)
    assert sharded.search == f"exact, sharded: 2 groups on 2 dask workers"
    assert_same_answers(local_scan.doc.files, sharded.doc.files)
    assert [s.done for s in seen] == list(range(1, len(local_scan.results) + 1))
    assert local_scan.count("match") >= 5 and local_scan.count("error") > 0  # the fixtures' broken files too


def test_a_sharded_scan_with_the_approximate_index(fixture_dir, split_store, cluster, tmp_path):
    from tagmatch.store.ann import update_index

    path = tmp_path / "store"
    store = _split_copy(split_store[0], path)
    assert "index built" in update_index(store, "approximate")
    local = scan_job(fixture_dir / "messy", path, backend="local")
    assert local.search.startswith("approximate")
    with distributed.Client(cluster) as client:
        searcher = ClusterSearcher(client, Store.load(path), n_groups=3)
        assert searcher.describe() == "approximate, sharded: 3 groups on 2 dask workers"
        assert sorted(o["group"] for o in searcher.opened) == [0, 1, 2]
    sharded = scan_job(fixture_dir / "messy", path, scheduler=cluster.scheduler_address)
    assert sharded.search.startswith("approximate, sharded")
    # every group probes the same cells, so the merged candidates hold the one-process ones
    assert_same_answers(local.doc.files, sharded.doc.files)


def test_a_worker_killed_mid_scan_leaves_the_answers_as_they_were(fixture_dir, split_store, local_scan):
    store, path = split_store
    killed = []
    with _cluster() as c, distributed.Client(c) as client:
        pids = client.run(os.getpid)

        def kill_after_the_first_file(p) -> None:
            if p.done == 1 and not killed:  # the owner of group 0 (the first address): kill -9
                addr = sorted(pids)[0]
                os.kill(pids[addr], signal.SIGKILL)
                killed.append(addr)

        sharded = scan_job(fixture_dir / "messy", path, scheduler=c.scheduler_address,
                           on_progress=kill_after_the_first_file)
    assert killed
    assert_same_answers(local_scan.doc.files, sharded.doc.files)


def test_a_worker_with_another_store_version_refuses(fixture_dir, split_store, cluster, tmp_path):
    path = tmp_path / "store"
    store = _split_copy(split_store[0], path)
    group = plan_groups(store, 2)[0]
    with pytest.raises(StoreError, match="holds version .* not the client's 00000000-00000000") as exc:
        open_group(str(path), "00000000-00000000", group)
    assert "\n" not in str(exc.value)
    with distributed.Client(cluster) as client:
        searcher = ClusterSearcher(client, store)
        store.remove_tracks({0})  # the store changes under a scan, and the workers start again: what
        store.save(path)  # they read is not the version the client holds
        client.restart()
        assert store_version(path) != searcher.version
        with pytest.raises(SearchLost, match="holds version"):
            searcher.search(np.zeros((3, store.dim), np.float32), 10)


def test_a_cluster_that_goes_away_stops_the_scan_and_keeps_the_files_done(fixture_dir, split_store, tmp_path):
    store, path = split_store
    out = tmp_path / "scan.json"
    c = _cluster()

    def close_after_the_first_file(p) -> None:
        if p.done == 1:
            c.close()

    # closing stops the workers and then the scheduler: the client sees either first
    gone = r"the dask cluster (went away|has no workers left)"
    with pytest.raises(SearchLost, match=rf"scan stopped after 1 of \d+ files: {gone}") as exc:
        scan_job(fixture_dir / "messy", path, scheduler=c.scheduler_address, json_path=out,
                 on_progress=close_after_the_first_file)
    assert "\n" not in str(exc.value) and str(out) in str(exc.value)
    assert len(json.loads(out.read_text())["files"]) == 1


async def test_the_tui_scans_on_the_cluster_named_by_the_environment(fixture_dir, split_store, cluster, local_scan,
                                                                     tmp_path, monkeypatch):
    """The TUI has no --scheduler: $TAGMATCH_SCHEDULER sends its index and scan jobs to a cluster."""
    import time

    from tagmatch.organize.scandoc import ScanDoc
    from tagmatch.tui.app import TagmatchApp
    from tagmatch.tui.home import HomeScreen
    from tagmatch.tui.progress import JobScreen

    _, path = split_store
    monkeypatch.setenv("TAGMATCH_STORE", str(path))
    monkeypatch.setenv("TAGMATCH_SCHEDULER", cluster.scheduler_address)
    app = TagmatchApp()
    async with app.run_test(size=(100, 30)) as pilot:
        home = app.screen
        assert isinstance(home, HomeScreen)
        t0 = time.monotonic()
        while "dask cluster" not in str(home.query_one("#store").render()):
            assert time.monotonic() - t0 < 60
            await pilot.pause(0.05)
        assert f"on the dask cluster at {cluster.scheduler_address}" in str(home.query_one("#store").render())
        await pilot.press("s")
        app.screen.query_one("#field-0").value = str(fixture_dir / "messy")
        await pilot.press("enter")
        job = app.screen
        assert isinstance(job, JobScreen)
        while not job.finished:
            assert time.monotonic() - t0 < 300
            await pilot.pause(0.05)
        summary = str(job.query_one("#job-summary").render())
        assert "Search exact, sharded: 2 groups on 2 dask workers" in summary, summary
        await pilot.press("enter")
        assert_same_answers(local_scan.doc.files, ScanDoc.read(app.screen.scan_path).files)


def test_the_environment_names_the_cluster_unless_another_backend_is_asked_for(monkeypatch):
    from tagmatch.jobs import cluster_address

    monkeypatch.setenv("TAGMATCH_SCHEDULER", "tcp://10.0.0.1:8786")
    assert cluster_address() == cluster_address(backend="dask") == "tcp://10.0.0.1:8786"
    assert cluster_address(scheduler="tcp://other:1") == "tcp://other:1"
    assert cluster_address(backend="local") is None and cluster_address(backend="joblib") is None
    monkeypatch.delenv("TAGMATCH_SCHEDULER")
    assert cluster_address() is None

"""Indexing: embed a reference library into a store, incrementally.

Only new or changed files (size or mtime differ) are decoded and embedded; tracks whose files
disappeared from the indexed folder are dropped. Decoding and mel computation run in a thread
pool ahead of the encoder, so the two cores stay busy.

Backends: "local" (the above: the fastest on a small machine), "joblib" (whole files on local
worker processes) and "dask" (whole files on a distributed cluster). The parallel ones run
`embed_file` in workers that load the model themselves; the calling process alone owns the store,
adding results in file order as they come, so every backend builds the same store.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tagmatch.audio import find_audio_files, load_audio
from tagmatch.errors import ModelError, TagmatchError
from tagmatch.features import FeatureConfig, cut_windows, log_mel, window_starts
from tagmatch.modelio import LoadedModel, default_model_path, load_model
from tagmatch.store import Store, TrackInfo, quantize
from tagmatch.tags import read_tags

SILENT_RMS = 1e-4  # about -80 dBFS
BACKENDS = ("local", "joblib", "dask")


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    audio_seconds: float = 0.0


@dataclass
class Progress:
    done: int
    total: int
    path: str
    error: str | None = None


def reference_windows(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Windows every `ref_hop_frames` of a decoded track, silent ones dropped.

    Returns (windows [shape=(n, window_frames, n_mels)], start times in seconds [shape=(n,)]).
    """
    S = log_mel(y, cfg)
    starts = window_starts(len(S), cfg.ref_hop_frames, cfg)
    if len(starts) == 0 and len(S) > 0:  # a track shorter than one window: pad with silence
        y = np.concatenate([y, np.zeros(cfg.window_samples - len(y) + 1, np.float32)])
        S = log_mel(y, cfg)
        starts = window_starts(len(S), cfg.ref_hop_frames, cfg)
    loud = window_rms(y, starts, cfg) > SILENT_RMS
    starts = starts[loud]
    return cut_windows(S, starts, cfg), starts * cfg.frame_seconds


def window_rms(y: np.ndarray, starts: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """RMS of the audio under each window (cheap, from a cumulative sum of squares)."""
    c = np.concatenate([[0.0], np.cumsum(y.astype(np.float64) ** 2)])
    a = starts * cfg.hop_length
    b = np.minimum(a + cfg.window_samples, len(y))
    return np.sqrt((c[b] - c[a]) / np.maximum(b - a, 1))


def _prepare(path: Path, cfg: FeatureConfig):
    """Decode + features + tags for one file (runs in a worker thread)."""
    try:
        y = load_audio(path, cfg.sample_rate)
        windows, times = reference_windows(y, cfg)
        if len(windows) == 0:
            raise TagmatchError("no audible audio (silent or too short)")
        try:
            tags = read_tags(path)
        except TagmatchError:
            tags = {}
        return windows, times, len(y) / cfg.sample_rate, tags, None
    except TagmatchError as exc:
        return None, None, 0.0, {}, str(exc)


def index_library(
    root: Path,
    store: Store | None,
    model: LoadedModel,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    backend: str = "local",
    n_jobs: int | None = None,
    scheduler: str | None = None,
    model_path: Path | str | None = None,
) -> tuple[Store, IndexReport]:
    """Bring `store` up to date with the audio files under `root` (the store is edited in place
    and returned; a new one is made when `store` is None). Nothing under `root` is modified.

    `backend` "joblib" uses `n_jobs` worker processes (default: all cores); "dask" the cluster at
    `scheduler`, else a local one of `n_jobs` (default 2) worker processes. Their workers load the
    model from `model_path` (None: $TAGMATCH_MODEL, else the shipped default), which must be the
    file `model` came from: a worker that finds another model id fails the run. A stop
    (`should_stop`, checked after each file) loses at most the files in flight; the caller saves.
    """
    if backend not in BACKENDS:
        raise TagmatchError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if n_jobs is not None and n_jobs < 1:
        raise TagmatchError(f"the number of jobs must be at least 1, not {n_jobs}")
    cfg = model.feature_config
    if store is not None:
        store.check_model(model.model_id, cfg)
    else:
        store = Store(feature_config=cfg, model_id=model.model_id, dim=model.dim)
    root = Path(root).resolve()
    files = find_audio_files(root)
    report = IndexReport()
    by_path = store.track_by_path()
    on_disk = {str(p) for p in files}
    gone = {i for p, i in by_path.items() if _is_under(p, root) and p not in on_disk}
    report.removed = sorted(store.tracks[i].path for i in gone)

    todo, stale = [], set()
    for p in files:
        st = p.stat()
        i = by_path.get(str(p))
        if i is not None and store.tracks[i].size == st.st_size and store.tracks[i].mtime_ns == st.st_mtime_ns:
            report.unchanged += 1
            continue
        if i is not None:
            stale.add(i)
        todo.append((p, st, i is not None))
    store.remove_tracks(gone | stale)
    stop = should_stop or (lambda: False)

    def record(n: int, item: tuple, fe: FileEmbedding) -> None:
        p, st, was_known = item
        if fe.error is None:
            store.add_track(TrackInfo(str(p), fe.tags, fe.duration_s, st.st_size, st.st_mtime_ns),
                            fe.vectors, fe.times)
            (report.updated if was_known else report.added).append(str(p))
            report.audio_seconds += fe.duration_s
        else:
            report.errors.append((str(p), fe.error))
        if progress:
            progress(Progress(n, len(todo), str(p), fe.error))

    if backend == "local":
        for n, (p, st, was_known, (windows, times, dur, tags, err)) in enumerate(_prefetch(todo, cfg), 1):
            if stop():
                break
            vectors = model.embed(windows) if err is None else None
            record(n, (p, st, was_known), FileEmbedding(str(p), vectors, times, dur, tags, err))
        return store, report

    if not todo or stop():
        return store, report
    paths = [str(p) for p, _, _ in todo]
    model_path = model_path or os.environ.get("TAGMATCH_MODEL")
    model_path = str(Path(model_path).resolve()) if model_path else None  # workers may not share our cwd
    results = (_joblib_results(paths, model_path, model.model_id, n_jobs) if backend == "joblib"
               else _dask_results(paths, model_path, model.model_id, n_jobs, scheduler))
    with contextlib.closing(results):  # closing cancels what is still in flight
        for n, (i, fe) in enumerate(results, 1):
            record(n, todo[i], fe)
            if stop():
                break
    return store, report


# ---- parallel backends: whole files in worker processes ------------------------------------------
@dataclass
class FileEmbedding:
    """One file's result, as a worker sends it back: small and picklable (no model inside)."""

    path: str
    vectors: np.ndarray | None  # [shape=(n, dim)] int8 from workers (the store's form), float locally
    times: np.ndarray | None  # [shape=(n,)] window starts in seconds
    duration_s: float = 0.0
    tags: dict = field(default_factory=dict)
    error: str | None = None  # one line; the other fields are empty then


_WORKER_MODELS: dict[str | None, LoadedModel] = {}  # per worker process: load + jit once, not per file


def embed_file(path: str, model_path: str | None, model_id: str) -> FileEmbedding:
    """Decode, window and embed one file (in a worker process). The model is loaded from
    `model_path` (None: the worker's shipped default; never its environment) once per process
    and must have id `model_id`, or the run fails: vectors of another model would be garbage."""
    model = _WORKER_MODELS.get(model_path)
    if model is None or model.model_id != model_id:  # first file here, or the file was replaced
        _ignore_sigint()
        model = _WORKER_MODELS[model_path] = load_model(model_path or default_model_path())
    if model.model_id != model_id:
        raise ModelError(f"a worker loaded model {model.model_id} from {model_path or 'its shipped default'}, "
                         f"not {model_id}: every worker must see the same model file (pass --model)")
    windows, times, dur, tags, err = _prepare(Path(path), model.feature_config)
    if err is not None:
        return FileEmbedding(path, None, None, error=err)
    return FileEmbedding(path, quantize(model.embed(windows), model.dim), times, dur, tags)


def _ignore_sigint() -> None:
    """Ctrl-C reaches the whole process group: workers leave it to the client, which stops
    cleanly after the current file (they are ended when it closes the pool)."""
    import multiprocessing
    import signal
    import threading

    if multiprocessing.parent_process() is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Worker processes started in here inherit an ignored SIGINT (Python keeps it ignored), so a
    Ctrl-C, which reaches the whole process group, does not kill them mid-start or mid-file: the
    client alone stops, cleanly, after the current file."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _joblib_results(paths: list[str], model_path: str | None, model_id: str,
                    n_jobs: int | None) -> Iterator[tuple[int, FileEmbedding]]:
    """(index, result) in file order, from loky worker processes; closing it cancels the rest."""
    from joblib import Parallel, delayed

    with _children_ignore_sigint():
        gen = Parallel(n_jobs=n_jobs or -1, return_as="generator")(
            delayed(embed_file)(p, model_path, model_id) for p in paths)
    try:
        yield from enumerate(gen)
    finally:
        with warnings.catch_warnings():  # "tasks executed but not used": expected on a stop
            warnings.simplefilter("ignore", UserWarning)
            gen.close()


def _dask_results(paths: list[str], model_path: str | None, model_id: str, n_jobs: int | None,
                  scheduler: str | None) -> Iterator[tuple[int, FileEmbedding]]:
    """(index, result) in file order, from a dask cluster: the one at `scheduler`, else a local one
    we start and close. A few files per worker thread are in flight, so memory stays flat and a
    stop (closing this) throws away little; results that finish early wait for their turn."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="10s")
        else:
            import logging

            with _children_ignore_sigint():
                cluster = LocalCluster(n_workers=n_jobs or 2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        client.wait_for_workers(1, timeout=60)
    except (OSError, TimeoutError, RuntimeError) as exc:  # RuntimeError: a local worker failed to start
        if cluster is not None:
            cluster.close()
        where = f"the dask scheduler at {scheduler}" if scheduler else "a local dask cluster"
        raise TagmatchError(f"cannot use {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    in_flight: dict = {}
    try:
        ahead = 2 * sum(client.nthreads().values()) + 2
        todo = iter(enumerate(paths))
        done = as_completed()

        def feed() -> None:
            for i, p in itertools.islice(todo, max(0, ahead - len(in_flight))):
                f = client.submit(embed_file, p, model_path, model_id, pure=False)
                in_flight[f] = i
                done.add(f)

        feed()
        ready: dict[int, FileEmbedding] = {}
        nxt = 0
        for f in done:
            ready[in_flight.pop(f)] = f.result()  # a worker's exception is raised here
            f.release()
            while nxt in ready:
                yield nxt, ready.pop(nxt)
                nxt += 1
            feed()
    finally:
        if in_flight:
            client.cancel(list(in_flight))
        client.close()
        if cluster is not None:
            cluster.close()


def _prefetch(todo, cfg) -> Iterator:
    """Yield (path, stat, was_known, prepared) in order, preparing up to 3 files ahead."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = []
        it = iter(todo)
        for item in it:
            futures.append((item, pool.submit(_prepare, item[0], cfg)))
            if len(futures) >= 3:
                break
        while futures:
            (p, st, known), fut = futures.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                futures.append((nxt, pool.submit(_prepare, nxt[0], cfg)))
            yield p, st, known, fut.result()


def _is_under(path: str, root: Path) -> bool:
    try:
        Path(path).relative_to(root)
        return True
    except ValueError:
        return False

"""Whole files on worker processes: joblib on this machine's cores, or a Dask cluster.

`ordered_map(fn, arg_tuples, backend, ...)` runs `fn(*args)` for each tuple in worker processes
and yields `(i, result)` in the order of the tuples (a result that finishes early waits for the
ones before it), so what the caller builds does not depend on the backend or on timing. Closing
the generator cancels what is still in flight. Indexing (`index.embed_file`) and scanning
(`scan.match_in_worker`) both run through it; only the calling process writes anything.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

from tagmatch.errors import ModelError, TagmatchError

BACKENDS = ("auto", "local", "joblib", "dask")
AUTO_MIN_FILES = 64  # "auto" starts worker processes from this many files (each costs ~3 s to start)

_WORKER_MODELS: dict = {}  # per worker process: a model is loaded and compiled once, not per file


def prefetch(fn: Callable, items: list, threads: int, ahead: int,
             discard: Callable[[Any], None] | None = None) -> Iterator[tuple[Any, Future]]:
    """(item, future of fn(item)) in order, with `ahead` more items already started on `threads`
    threads while the caller works on the one yielded: the next files decode meanwhile. Closing
    it waits for what is in flight (a few files), then stops, passing the results never handed
    out to `discard` (e.g. to close the files they hold open)."""
    pending: list[tuple[Any, Future]] = []
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            it = iter(items)
            pending = [(item, pool.submit(fn, item)) for item in itertools.islice(it, ahead)]
            while pending:
                item, fut = pending.pop(0)
                for nxt in itertools.islice(it, 1):
                    pending.append((nxt, pool.submit(fn, nxt)))
                yield item, fut
    finally:  # leaving the pool waited for what was in flight
        for _, fut in pending if discard is not None else ():
            if not fut.cancelled() and fut.exception() is None:
                discard(fut.result())


def worker_model(model_path: str | None, model_id: str):
    """The model in a worker process, loaded from `model_path` (None: the worker's shipped default;
    never its environment) once per process. It must have id `model_id`, or the run fails:
    vectors of another model would be garbage."""
    from tagmatch.model.modelfile import default_model_path, load_model
    from tagmatch.threads import one_compute_thread

    model = _WORKER_MODELS.get(model_path)
    if model is None or model.model_id != model_id:  # first file here, or the file was replaced
        ignore_sigint()
        one_compute_thread()  # one worker per core: pools of threads in each would fight
        model = _WORKER_MODELS[model_path] = load_model(model_path or default_model_path())
    if model.model_id != model_id:
        raise ModelError(f"a worker loaded model {model.model_id} from {model_path or 'its shipped default'}, "
                         f"not {model_id}: every worker must see the same model file (pass --model)")
    return model


def model_path_for_workers(model_path) -> str | None:
    """The model file workers load: `--model` (or the file the client's model came from), else
    the client's $TAGMATCH_MODEL, made absolute (workers may not share our cwd); None: each
    worker's shipped default (also when that is the file named: on another machine it lies
    elsewhere)."""
    from pathlib import Path

    from tagmatch.model.modelfile import default_model_path

    model_path = model_path or os.environ.get("TAGMATCH_MODEL")
    if not model_path or Path(model_path).resolve() == default_model_path().resolve():
        return None
    return str(Path(model_path).resolve())


def resolve_backend(backend: str, n_files: int) -> str:
    """"auto": joblib worker processes, one per core, for `AUTO_MIN_FILES` files or more (on 2 cores
    indexing the bench's 107 tracks took 77 s that way, 93 s in this process with a decoding
    thread, which has to share the interpreter); fewer files are not worth the workers' start."""
    if backend != "auto":
        return backend
    return "joblib" if n_files >= AUTO_MIN_FILES and usable_cores() > 1 else "local"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or `taskset` narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_backend(backend: str, n_jobs: int | None) -> None:
    if backend not in BACKENDS:
        raise TagmatchError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if n_jobs is not None and n_jobs < 1:
        raise TagmatchError(f"the number of jobs must be at least 1, not {n_jobs}")


def ordered_map(fn: Callable, arg_tuples: list[tuple], backend: str, n_jobs: int | None = None,
                scheduler: str | None = None) -> Iterator[tuple[int, Any]]:
    """(i, fn(*arg_tuples[i])) in order, from joblib worker processes or a dask cluster."""
    if backend == "joblib":
        return _joblib_results(fn, arg_tuples, n_jobs)
    if backend == "dask":
        return _dask_results(fn, arg_tuples, n_jobs, scheduler)
    raise TagmatchError(f"no worker processes for backend {backend!r}")


def ignore_sigint() -> None:
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


def _joblib_results(fn: Callable, arg_tuples: list[tuple], n_jobs: int | None) -> Iterator[tuple[int, Any]]:
    """(index, result) in order, from loky worker processes; closing it cancels the rest."""
    from joblib import Parallel, delayed

    with _children_ignore_sigint():
        gen = Parallel(n_jobs=n_jobs or -1, return_as="generator")(
            delayed(fn)(*args) for args in arg_tuples)
    try:
        yield from enumerate(gen)
    finally:
        with warnings.catch_warnings():  # "tasks executed but not used": expected on a stop
            warnings.simplefilter("ignore", UserWarning)
            gen.close()


@contextlib.contextmanager
def dask_client(n_jobs: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A dask client of the cluster at `scheduler`, else of a local cluster of `n_jobs` (default 2)
    one-thread worker processes, started here and closed on leaving. Unreachable, or without
    workers: a one-line TagmatchError."""
    from distributed import Client, LocalCluster

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
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TagmatchError(f"cannot use {where}: {why}") from None
    try:
        yield client
    finally:
        with warnings.catch_warnings(), contextlib.suppress(Exception):  # a cluster gone: nothing to close
            warnings.simplefilter("ignore")
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


def _dask_results(fn: Callable, arg_tuples: list[tuple], n_jobs: int | None,
                  scheduler: str | None) -> Iterator[tuple[int, Any]]:
    """(index, result) in file order, from a dask cluster: the one at `scheduler`, else a local one
    we start and close. A few files per worker thread are in flight, so memory stays flat and a
    stop (closing this) throws away little; results that finish early wait for their turn."""
    from distributed import as_completed

    with dask_client(n_jobs, scheduler) as client:
        in_flight: dict = {}
        try:
            ahead = 2 * sum(client.nthreads().values()) + 2
            todo = iter(enumerate(arg_tuples))
            done = as_completed()

            def feed() -> None:
                for i, args in itertools.islice(todo, max(0, ahead - len(in_flight))):
                    f = client.submit(fn, *args, pure=False)
                    in_flight[f] = i
                    done.add(f)

            feed()
            ready: dict[int, Any] = {}
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

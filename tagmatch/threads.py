"""One compute thread per process, for indexing and scanning.

Both keep the other cores busy on their own (a thread decodes the next file; worker processes
take one file each), so a second thread inside the encoder or the search only adds contention:
XLA's and OpenBLAS's pools spin while they wait for work, and that spinning is CPU the files
never use. Measured on the bench's queries (docs/benchmarks.md): 223 ms of CPU per query file
with the default pools, 90 ms with one thread each; the index path 117x -> 180x realtime per
core. Training keeps the default pools (it runs alone and wants every core).
"""

from __future__ import annotations

import os


def one_compute_thread() -> None:
    """Limit this process to one XLA thread and one BLAS/OpenMP thread. Call it before the
    first JAX computation; later, XLA's pool is already made and only BLAS/OpenMP change."""
    import numpy  # noqa: F401  (loads OpenBLAS, so that the limit below reaches it)
    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "1"  # libraries loaded later
    threadpool_limits(1)  # libraries loaded already: numpy's OpenBLAS (and OpenMP, if faiss is)
    _one_xla_thread()


def _one_xla_thread() -> None:
    """XLA sizes its CPU thread pool from the process's CPU affinity when its backend starts
    (jax-ml/jax#1539; there is no flag): narrow the affinity to one CPU, start the backend,
    then give every thread of the process (the pool's too) all the CPUs back."""
    if not hasattr(os, "sched_setaffinity"):  # not Linux: keep XLA's default pool
        return
    import jax

    cpus = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cpus)})
        jax.devices("cpu")
    finally:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:  # a thread that has just ended
                pass

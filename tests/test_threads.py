"""One compute thread per process (tagmatch.threads): what indexing and scanning run with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os
cpus = os.sched_getaffinity(0)
from tagmatch.threads import one_compute_thread
one_compute_thread()
import jax.numpy as jnp
(jnp.ones((64, 64)) @ jnp.ones((64, 64))).block_until_ready()
from threadpoolctl import threadpool_info
print(json.dumps({
    "cpus": len(cpus),
    "threads": [len(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")],
    "blas": [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"],
    "omp_env": os.environ.get("OMP_NUM_THREADS"),
}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_one_compute_thread_limits_the_pools_and_leaves_every_thread_all_cpus():
    """The affinity is narrowed only while XLA starts: afterwards every thread of the process
    (XLA's own included) may run on every CPU again, or two worker processes would share one."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(got["threads"]) > 1
    assert all(n == got["cpus"] for n in got["threads"])
    assert got["blas"] and all(n == 1 for n in got["blas"])
    assert got["omp_env"] == "1"  # for OpenMP loaded later (faiss)

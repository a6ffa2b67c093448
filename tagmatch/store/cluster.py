"""Search sharded over a Dask cluster, for stores bigger than one machine holds.

The store's shards are cut into *groups*: contiguous runs of shards of about equal size
(`plan_groups`). Each group is searched on one dask worker, which opens its shards (memory-mapped)
and its part of the approximate index once and keeps them (`open_group`, a per-process cache).
A scan's client embeds each fragment as always and `ClusterSearcher.search` sends its windows to
every group; each group answers its top-k with global vector numbers and exact int8 similarities
(the re-rank makes groups comparable), and the client keeps the k best of all: the matcher votes
on them as on a local search. With exact search (a store without an index) the answers are those
of the one-process search. With the index every group probes the same cells (one template) and
sends its `refine * k` best candidates by the compressed codes with both similarities; the client
keeps the `refine * k` best of all by the codes, as one index over every shard would, then the k
best of those by exact similarity: the one-process answer, up to ties of the codes' coarse
distances at the last candidate.

Faults: a search is a plain dask task addressed to its group's worker and allowed elsewhere, so
when that worker dies the scheduler runs it again on another, which loads the group (each worker
keeps `GROUP_CACHE` groups); the owners are re-read from the scheduler every few seconds. A task
that kills `distributed.scheduler.allowed-failures` workers fails its file (status error, named).
A worker that holds another version of the store than the client refuses, and a cluster that
goes away stops the scan (`SearchLost`, one line): the scan JSON keeps the files done.
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagmatch.errors import SearchLost, StoreError, TagmatchError
from tagmatch.store.folder import manifest_bytes, read_shards
from tagmatch.store.shards import Store

GROUP_CACHE = 2  # groups a worker process keeps open: its own, and one taken over from a lost worker
REASSIGN_S = 5.0  # how often the client asks the scheduler which workers are alive
LOAD_TIMEOUT_S = 1800.0  # opening a group: its shards' checks and its index parts (minutes at 100k tracks)
SEARCH_TIMEOUT_S = 600.0  # one fragment's search on every group, a group's reload on another worker included


@dataclass(frozen=True)
class Group:
    """A run of the store's shards searched on one worker."""

    number: int
    files: tuple[str, ...]  # shard files, in store order
    first: int  # global number of its first vector
    n_vectors: int


def plan_groups(store: Store, n: int) -> list[Group]:
    """`n` groups (at most one per shard) of contiguous shards, each near an n-th of the vectors;
    a shard is never split (its part of the index is one file)."""
    starts = store.shard_starts()
    total, n = int(starts[-1]), max(1, min(int(n), len(store.shards)))
    cuts = [0]
    for i in range(1, n):  # the shard boundary nearest each n-th of the vectors, always moving on
        want = total * i / n
        best = int(np.argmin(np.abs(starts[:-1] - want)))
        cuts.append(min(max(best, cuts[-1] + 1), len(store.shards) - (n - i)))
    cuts.append(len(store.shards))
    return [Group(g, tuple(s.file for s in store.shards[a:b]), int(starts[a]), int(starts[b] - starts[a]))
            for g, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def store_version(path: Path) -> str:
    """What a search worker must hold to answer for the client: a CRC-32 of the store's manifest
    and of its index's JSON (a re-index changes one or both)."""
    from tagmatch.store.ann import ANN_META

    try:
        meta = (Path(path) / ANN_META).read_bytes()
    except OSError:
        meta = b""
    return f"{zlib.crc32(manifest_bytes(path)):08x}-{zlib.crc32(meta):08x}"


# ---- on a worker -------------------------------------------------------------------------------
_GROUPS: OrderedDict = OrderedDict()  # per worker process: (store path, version, group) -> searcher


def open_group(store_path: str, version: str, group: Group):
    """The searcher of one group, opened once per worker process: the store's approximate index
    for the group's shards when the index covers the store, else exact search over them (as the
    one-process scan chooses). Refuses a store whose version is not the client's."""
    from tagmatch.store.ann import group_searcher
    from tagmatch.threads import one_compute_thread

    key = (store_path, version, group)
    if key in _GROUPS:
        _GROUPS.move_to_end(key)
        return _GROUPS[key]
    mine = store_version(Path(store_path))
    if mine != version:
        raise StoreError(f"a search worker{_where()} holds version {mine} of the store {store_path}, not the "
                         f"client's {version}: every worker must see the same store (copy it again after an index)")
    one_compute_thread()
    from tagmatch.audio.features import FeatureConfig

    m, shards = read_shards(Path(store_path), group.files)
    sub = Store(FeatureConfig.from_dict(m["feature_config"]), m["model_id"], int(m["dim"]), shards=shards)
    sub.folder = Path(store_path)
    searcher = group_searcher(sub, {s["file"]: int(s["n_vectors"]) for s in m["shards"]})
    _GROUPS[key] = searcher
    while len(_GROUPS) > GROUP_CACHE:
        _GROUPS.popitem(last=False)
    return searcher


def load_group(store_path: str, version: str, group: Group) -> dict:
    """Open a group on this worker ahead of the searches; what it holds, for the client's log."""
    t0 = time.perf_counter()
    searcher = open_group(store_path, version, group)
    return {"group": group.number, "search": type(searcher).__name__, "open_s": round(time.perf_counter() - t0, 2)}


def search_group(store_path: str, version: str, group: Group, queries: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One group's answer for each query window, with global vector numbers: (idx, approximate
    similarities, exact similarities). With the approximate index, its `refine * k` candidates
    (`IVFPQSearch.candidates`); with exact search its top k (approximate: None)."""
    searcher = open_group(store_path, version, group)
    if hasattr(searcher, "candidates"):
        idx, approx, exact = searcher.candidates(queries, k)
    else:
        (idx, exact), approx = searcher.search(queries, k), None
    return idx + np.int64(group.first), approx, exact


def _where() -> str:
    try:
        from distributed import get_worker

        return f" at {get_worker().address}"
    except (ImportError, ValueError):
        return ""


# ---- on the client -----------------------------------------------------------------------------
def merge_top_k(parts: list[tuple], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every group's answer (`search_group`) merged, per query window: the k best by exact
    similarity, best first. With the approximate index, first the candidates one index over all
    the groups would keep (the `refine * k` best by the compressed codes), so the answer does not
    depend on how the store is grouped (but for ties of the coarse code distances at the last
    candidate). Equal exact similarities: the lower vector number first."""
    from tagmatch.store.ann import best_k

    idx = np.concatenate([p[0] for p in parts], axis=1)
    exact = np.concatenate([p[-1] for p in parts], axis=1)
    if not idx.shape[1]:
        return idx, exact
    if all(len(p) == 3 and p[1] is not None for p in parts):
        approx = np.concatenate([p[1] for p in parts], axis=1)
        kc = max(p[0].shape[1] for p in parts)
        if approx.shape[1] > kc:  # a partition, not a sort: ~5x cheaper at 10 groups
            keep = np.argpartition(-approx, kc - 1, axis=1)[:, :kc]
            idx, exact = np.take_along_axis(idx, keep, 1), np.take_along_axis(exact, keep, 1)
    return best_k(idx, exact, k)


class ClusterSearcher:
    """`search(queries, k) -> (idx, sim)` like `Store.search`, over the groups of a store held by
    the workers of a dask `client` (see the module docstring). Opening it opens every group on
    its worker, so a worker with another store version is refused before the scan starts."""

    def __init__(self, client, store: Store, n_groups: int | None = None, groups: list[Group] | None = None):
        self.client, self.store = client, store
        self.path = str(Path(store.folder).resolve())
        self.version = store_version(Path(self.path))
        workers = self._workers()
        self.groups = groups or plan_groups(store, n_groups or len(workers))
        self._assign(workers)
        self.opened = self._run(
            [self._submit(load_group, g) for g in self.groups], LOAD_TIMEOUT_S, "opening the store's groups")

    def describe(self) -> str:
        kinds = sorted({o["search"] for o in self.opened})
        how = "approximate" if kinds == ["IVFPQSearch"] else "exact" if kinds == ["Store"] else "/".join(kinds)
        return f"{how}, sharded: {len(self.groups)} groups on {len(set(self.owner.values()))} dask workers"

    def _workers(self) -> list[str]:
        try:
            workers = sorted(self.client.scheduler_info()["workers"])
        except Exception as exc:
            raise SearchLost(f"the dask cluster went away ({_why(exc)})") from None
        if not workers:
            raise SearchLost("the dask cluster has no workers left")
        return workers

    def _assign(self, workers: list[str]) -> None:
        """Group g to the g-th worker (in address order, round robin): every client that sees the
        same workers sends each group to the same worker."""
        self.owner = {g.number: workers[g.number % len(workers)] for g in self.groups}
        self._assigned_at = time.monotonic()

    def _submit(self, fn, group: Group, *args):
        return self.client.submit(fn, self.path, self.version, group, *args, workers=[self.owner[group.number]],
                                  allow_other_workers=True, pure=False)

    def _run(self, futures: list, timeout: float, what: str) -> list:
        from distributed import wait

        try:
            done = wait(futures, timeout=timeout)
            if done.not_done:
                raise SearchLost(f"{what} took over {timeout:.0f} s on the dask cluster")
            return self.client.gather(futures)
        except (SearchLost, StoreError) as exc:  # another store version: no answer from this cluster
            raise SearchLost(str(exc)) from None
        except TagmatchError:
            raise
        except Exception as exc:
            if type(exc).__name__ == "KilledWorker":  # the task itself kills every worker it runs on
                raise TagmatchError(f"{what} killed the dask workers it ran on: {_why(exc)}") from None
            raise SearchLost(f"the dask cluster went away while {what} ({_why(exc)})") from None
        finally:
            for f in futures:
                f.release()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if time.monotonic() - self._assigned_at > REASSIGN_S:
            self._assign(self._workers())
        q = np.ascontiguousarray(queries, dtype=np.float32)
        parts = self._run([self._submit(search_group, g, q, k) for g in self.groups], SEARCH_TIMEOUT_S,
                          "searching")
        return merge_top_k(parts, k)


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__

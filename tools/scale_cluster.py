"""Sharded search on a dask cluster at scale (`make scale-cluster`): G groups of N tracks' worth.

The vectors are replicated from real ones as in tools/scale_store.py (tools/scale_data.py), from
the bench's store (`make bench`: the dev corpus' 107 reference songs, embedded by the shipped
model): group 0 holds the real vectors and rotated replicas, every other group rotated replicas
only, so the real queries have their true tracks in group 0 and every other track is a distractor.
"N tracks' worth" = N x 1,008 vectors (4.2 min at a 0.25 s hop, as in `make scale`).

Stages, cached under ~/.cache/tagmatch/scale-cluster/ (a re-run goes on from there):
  build    each group's store apart (replicate, quantize, Store.save); more groups can be added
           later, the ones built are kept
  index    the approximate index as `tagmatch index` keeps it: one template (cells and codebooks,
           trained on group 0 for a store of --max-groups groups) and a part per shard (added on
           --jobs processes: tagmatch.store.ann.write_parts), next to each group's store; then
           one store of all the groups' shards and parts (hard links: a store folder names its
           files in its manifest and index JSON)
  measure  for 1, 2, 4 ... groups (a store of the first G groups, hard links again): a
           LocalCluster of G one-thread workers, each holding one group (ClusterSearcher):
           opening, RSS per worker, search ms per 10 s fragment inside a worker and as the
           client waits for all groups, the client's merge, and the file-level answer of the
           matcher against one-process exact search on real queries
  update   on a copy of the first group's store (hard links): add 1 track, add 1,000, remove 1,
           as `tagmatch index` does them (Store.save, then update_index): seconds and bytes written
Prints one JSON line per stage; results in ~/.cache/tagmatch/scale-cluster/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import joblib
import numpy as np

from tagmatch.store.folder import MANIFEST
from tagmatch.store.shards import Store, TrackInfo
from tools.scale_data import base_store, build_store, exact_reference, query_set
from tools.scale_store import FRAGMENT_WINDOWS, Precomputed, load_json, log, save_json

CACHE = Path.home() / ".cache" / "tagmatch" / "scale-cluster"


def combine(parts: list[Path], out: Path) -> None:
    """One store of the shards of `parts` (stores of the same model), in order, by hard links."""
    from tagmatch.store.ann import ANN_META

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    manifests = [json.loads((p / MANIFEST).read_text()) for p in parts]
    for p, m in zip(parts, manifests):
        for s in m["shards"]:
            for f in (s["file"], s["tracks"]):
                os.link(p / f, out / f)
    m = dict(manifests[0])
    m["shards"] = [s for mm in manifests for s in mm["shards"]]
    m["n_tracks"] = sum(mm["n_tracks"] for mm in manifests)
    m["n_vectors"] = sum(mm["n_vectors"] for mm in manifests)
    meta = parts[0] / ANN_META
    if meta.exists():  # the parts' index files too (all from one template: the same cells)
        metas = [json.loads((p / ANN_META).read_text()) for p in parts]
        joint = dict(metas[0], parts={f: v for mt in metas for f, v in mt["parts"].items()})
        for p, mt in zip(parts, metas):
            for f in [mt["trained"], *(v[0] for v in mt["parts"].values())]:
                if not (out / f).exists():
                    os.link(p / f, out / f)
        (out / ANN_META).write_text(json.dumps(joint))
    (out / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")


def first_shards(store_path: Path, n_shards: int, out: Path) -> None:
    """A store of the first `n_shards` shards of a store (and their index parts), by hard links."""
    from tagmatch.store.ann import ANN_META

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    m = json.loads((store_path / MANIFEST).read_text())
    m["shards"] = m["shards"][:n_shards]
    m["n_tracks"] = sum(s["n_tracks"] for s in m["shards"])
    m["n_vectors"] = sum(s["n_vectors"] for s in m["shards"])
    for s in m["shards"]:
        for f in (s["file"], s["tracks"]):
            os.link(store_path / f, out / f)
    if (store_path / ANN_META).exists():
        meta = json.loads((store_path / ANN_META).read_text())
        meta["parts"] = {s["file"]: meta["parts"][s["file"]] for s in m["shards"]}
        for f in [meta["trained"], *(v[0] for v in meta["parts"].values())]:
            os.link(store_path / f, out / f)
        (out / ANN_META).write_text(json.dumps(meta))
    (out / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")


def stage_template(root: Path, group0: Path, n_total: int, nlist: int | None) -> dict:
    """The trained cells and codebooks every group's parts share, as `tagmatch index` would train
    them for a store of `n_total` vectors, on a sample of group 0's vectors."""
    import faiss

    from tagmatch.store.ann import IVFPQSearch, gather_vectors

    store = Store.load(group0)
    key = IVFPQSearch.default_key(n_total, store.dim, nlist)
    template = faiss.index_factory(store.dim, key, faiss.METRIC_INNER_PRODUCT)
    n_train = min(store.n_vectors, max(40 * faiss.extract_index_ivf(template).nlist, 65536))
    t0 = time.perf_counter()
    rows = np.sort(np.random.default_rng(0).choice(store.n_vectors, size=n_train, replace=False))
    template.train(gather_vectors(store, rows))
    faiss.write_index(template, str(root / "template.faiss"))
    log(f"{key}: trained on {n_train:,} vectors in {time.perf_counter() - t0:.0f} s")
    return {"index_key": key, "train_vectors": n_train, "train_s": round(time.perf_counter() - t0, 1)}


def stage_group_index(group: Path, root: Path, key: str, trained_for: int, jobs: int) -> dict:
    """One group's index parts (`jobs` processes), committed next to the group's store with the shared
    template, as `tagmatch index` keeps them."""
    import faiss

    from tagmatch.store import ann
    from tagmatch.store.ann import default_probe, write_parts

    store = Store.load(group)
    template_file = f"{ann.ANN_PREFIX}-trained-{root.name}.faiss"
    if not (group / template_file).exists():
        os.link(root / "template.faiss", group / template_file)
    t0 = time.perf_counter()
    parts = write_parts(store, faiss.read_index(str(group / template_file)), template_file, store.shards, jobs)
    add_s = time.perf_counter() - t0
    nprobe, refine = default_probe(trained_for)
    ann._commit(group, store, {"key": key, "nprobe": nprobe, "refine": refine, "trained_for": trained_for,
                               "trained": template_file, "parts": parts})
    size = sum((group / f).stat().st_size for f in parts.values())
    return {"add_s": round(add_s, 1), "add_vectors_per_s": round(store.n_vectors / add_s), "parts_bytes": size}


def _rss_mb(kind: str = "VmRSS") -> float:
    """This process's resident memory: all of it (VmRSS), or its own (RssAnon: not counting the
    store's mapped pages, which are page cache the kernel can drop)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _time_group_searches(frags: list[np.ndarray], k: int) -> dict:
    """On a worker: the median ms of searching each fragment in the groups this worker holds."""
    from tagmatch.store import cluster

    out = {}
    for (_, _, group), searcher in list(cluster._GROUPS.items()):
        searcher.search(frags[0], k)
        ts = []
        for f in frags[1:]:
            t0 = time.perf_counter()
            searcher.search(f, k)
            ts.append(time.perf_counter() - t0)
        out[group.number] = round(1000 * float(np.median(ts)), 2)
    return out


def stage_measure(store_path: Path, n_groups: int, group_shards: list[int], n_agree: int, n_frag: int,
                  model, qs: list[dict], on_timed=None) -> dict:
    """G groups on a LocalCluster of G workers (see the module docstring). `on_timed(res)`: the
    figures so far, before the agreement with exact search (its reference takes longest)."""
    import distributed

    from tagmatch.match.config import MatchConfig
    from tagmatch.match.decide import match_vectors
    from tagmatch.store.cluster import ClusterSearcher, Group, merge_top_k

    sub_path = CACHE / f"sub-{n_groups}"
    first_shards(store_path, sum(group_shards[:n_groups]), sub_path)
    store = Store.load(sub_path)
    starts = store.shard_starts()
    cuts = np.cumsum([0] + group_shards[:n_groups])
    groups = [Group(g, tuple(s.file for s in store.shards[a:b]), int(starts[a]), int(starts[b] - starts[a]))
              for g, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    cfg, k = MatchConfig(), MatchConfig().top_k
    frags = [q["vectors"][a : a + FRAGMENT_WINDOWS] for q in qs
             for a in range(0, len(q["vectors"]) - FRAGMENT_WINDOWS + 1, FRAGMENT_WINDOWS)][: n_frag + 1]
    res: dict = {"groups": n_groups, "tracks": len(store.tracks), "vectors": store.n_vectors,
                 "vectors_per_group": [g.n_vectors for g in groups]}
    with distributed.LocalCluster(n_workers=n_groups, threads_per_worker=1, processes=True, memory_limit=0,
                                  dashboard_address=None, silence_logs=logging.ERROR) as lc, \
            distributed.Client(lc) as client:
        client.run(lambda: __import__("tagmatch.threads").threads.one_compute_thread())
        rss0 = client.run(_rss_mb)
        t0 = time.perf_counter()
        searcher = ClusterSearcher(client, store, groups=groups)
        res["open_s"] = round(time.perf_counter() - t0, 1)
        res["search"] = searcher.describe()
        rss = client.run(_rss_mb)
        res["rss_per_worker_mb"] = sorted(round(rss[w] - rss0[w]) for w in rss)
        res["worker_ms_per_fragment"] = client.run(_time_group_searches, frags, k)
        ts = []
        for f in frags[1:]:
            t0 = time.perf_counter()
            searcher.search(f, k)
            ts.append(time.perf_counter() - t0)
        res["client_ms_per_fragment"] = round(1000 * float(np.median(ts)), 2)
        kc = k * 16  # what each group sends with the approximate index (64 : 16 probing): 16 k candidates
        parts = [(np.arange(FRAGMENT_WINDOWS * kc).reshape(FRAGMENT_WINDOWS, kc) + g * 10**6,
                  np.random.default_rng(g).random((FRAGMENT_WINDOWS, kc), np.float32),
                  np.random.default_rng(g + 99).random((FRAGMENT_WINDOWS, kc), np.float32)) for g in range(10)]
        res["group_answer_bytes"] = sum(a.nbytes for a in parts[0])
        t0 = time.perf_counter()
        for _ in range(200):
            merge_top_k(parts[:n_groups], k)
        res["merge_ms_per_fragment"] = round(1000 * (time.perf_counter() - t0) / 200, 3)
        t0 = time.perf_counter()
        for _ in range(200):
            merge_top_k(parts, k)
        res["merge_ms_per_fragment_10_groups"] = round(1000 * (time.perf_counter() - t0) / 200, 3)
        rss = client.run(_rss_mb)
        res["rss_per_worker_after_search_mb"] = sorted(round(rss[w] - rss0[w]) for w in rss)
        anon = client.run(_rss_mb, "RssAnon")
        res["anon_per_worker_after_search_mb"] = sorted(round(v) for v in anon.values())
        if on_timed:
            on_timed(dict(res, load=[round(v, 2) for v in os.getloadavg()]))
        sub = qs[:n_agree]
        ref = _exact(store_path, store, groups, sub, k)
        bounds = np.cumsum([0] + [len(q["vectors"]) for q in sub])
        same = same_status = 0
        differ = []
        for j, q in enumerate(sub):
            pre = Precomputed(ref["idx"][bounds[j] : bounds[j + 1]], ref["sim"][bounds[j] : bounds[j + 1]])
            ex = match_vectors(q["name"], q["vectors"], q["starts"], q["n_frames"], store, model, cfg, searcher=pre)
            sh = match_vectors(q["name"], q["vectors"], q["starts"], q["n_frames"], store, model, cfg, searcher=searcher)
            answer = [(m.status, store.tracks[m.match.track].path if m.status == "match" else None) for m in (ex, sh)]
            same += answer[0] == answer[1]  # the file's answer: match (to which track) or not
            same_status += ex.status == sh.status
            if answer[0] != answer[1]:
                differ.append([q["name"], *answer])
        res["agreement_files"] = len(sub)
        res["answer_agreement"] = round(same / len(sub), 4)
        res["status_agreement"] = round(same_status / len(sub), 4)
        res["answers_that_differ"] = differ[:10]
    res["load"] = [round(v, 2) for v in os.getloadavg()]
    return res


def _exact(store_path: Path, store: Store, groups, sub: list[dict], k: int) -> dict:
    """Exact top-k of the query windows over these groups: each group's once (cached), merged."""
    from tagmatch.store.cluster import merge_top_k

    allv = np.concatenate([q["vectors"] for q in sub])
    parts = []
    for g in groups:
        cache = CACHE / f"exact-{g.files[0]}-{len(g.files)}-{len(sub)}.joblib"
        if cache.exists():
            parts.append(joblib.load(cache))
            continue
        t0 = time.perf_counter()
        view = Store(store.feature_config, store.model_id, store.dim,
                     shards=[s for s in store.shards if s.file in set(g.files)])
        i, s = exact_reference(view, allv, k)
        parts.append((i + g.first, s))
        joblib.dump(parts[-1], cache)
        log(f"exact reference of group {g.number}: {len(allv):,} windows in {time.perf_counter() - t0:.0f} s")
    idx, sim = merge_top_k(parts, k)
    return {"idx": idx, "sim": sim}


def stage_update(store_path: Path, n_shards: int) -> dict:
    """What `tagmatch index` writes and spends keeping a store of one group and its index current:
    add 1 track, add 1,000 tracks, remove 1 (its shard is rewritten)."""
    from tagmatch.store.ann import update_index

    work = CACHE / "update-store"
    first_shards(store_path, n_shards, work)
    res: dict = {"tracks": len(Store.load(work).tracks)}

    def files() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_ino, p.stat().st_size) for p in work.iterdir()}

    def timed(label: str, change) -> None:
        before = files()
        store = Store.load(work)
        t0 = time.perf_counter()
        change(store)
        store.save(work)
        save_s = time.perf_counter() - t0
        msg = update_index(store, "auto")
        after = files()
        written = sum(size for name, (ino, size) in after.items() if before.get(name, (None,))[0] != ino)
        res[label] = {"store_save_s": round(save_s, 2), "index_s": round(time.perf_counter() - t0 - save_s, 2),
                      "bytes_written": written, "index": msg}
        log(f"update: {label}: {json.dumps(res[label])}")

    def add(n: int):
        def change(store: Store) -> None:
            sh = store.shards[-1]
            rows = np.flatnonzero(sh.track == sh.track[-1])  # the last track's vectors, as new tracks
            t = store.tracks[-1]
            for i in range(n):
                store.add_track(TrackInfo(f"{t.path}.copy{i}", {}, t.duration_s, t.size, t.mtime_ns),
                                np.asarray(sh.vectors[rows]), np.asarray(sh.time[rows]))
        return change

    timed("add_1", add(1))
    timed("add_1000", add(1000))
    timed("remove_1", lambda store: store.remove_tracks({0}))
    shutil.rmtree(work)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks-per-group", type=int, default=100_000)
    ap.add_argument("--groups", default="1,2,4", help="the group counts to measure; the store holds the largest")
    ap.add_argument("--stages", default="build,index,measure,update")
    ap.add_argument("--agree", type=int, default=200, help="real query files for the agreement with exact search")
    ap.add_argument("--fragments", type=int, default=100, help="10 s fragments timed")
    ap.add_argument("--nlist", type=int, default=0, help="IVF cells (default: by size, as `tagmatch index`)")
    ap.add_argument("--jobs", type=int, default=2, help="processes building the index parts")
    ap.add_argument("--max-groups", type=int, default=4,
                    help="the cells are trained for a store of this many groups (more may be added later)")
    args = ap.parse_args(argv)
    from tagmatch.model.modelfile import load_model

    counts = [int(g) for g in args.groups.split(",")]
    root = CACHE / str(args.tracks_per_group)
    root.mkdir(parents=True, exist_ok=True)
    results_path = CACHE / "results.json"
    results = load_json(results_path)
    r = results.setdefault(root.name, {})
    model = load_model()
    store_path = root / f"store-{max(counts)}"
    groups = [root / f"group-{g}" for g in range(max(counts))]
    base = None
    for g, path in enumerate(groups):
        info = r.setdefault("groups", {}).setdefault(str(g), {})
        if "build" in args.stages and not (path / MANIFEST).exists():
            base = base or base_store(model, bench=True)
            log(f"group {g}: replicating {args.tracks_per_group:,} tracks' worth")
            info["build"] = build_store(base, model, args.tracks_per_group, path, seed=g, first_replica=g * 10_000)
            info.pop("index", None)
            log(f"group {g}: {json.dumps(info['build'])}")
            save_json(results_path, results)
        if "index" in args.stages and "index" not in info:
            if "template" not in r:
                n_total = info["build"]["vectors"] * args.max_groups
                r["template"] = stage_template(root, groups[0], n_total, args.nlist or None)
                save_json(results_path, results)
            info["index"] = stage_group_index(path, root, r["template"]["index_key"],
                                              info["build"]["vectors"] * args.max_groups, args.jobs)
            log(f"group {g} index: {json.dumps(info['index'])}")
            save_json(results_path, results)
    combine(groups, store_path)
    r["group_shards"] = [len(json.loads((p / MANIFEST).read_text())["shards"]) for p in groups]
    if "measure" in args.stages:
        qs = query_set(model, base_store(model, bench=True), args.agree)
        for g in counts:
            log(f"measuring {g} group(s)")
            def timed(res: dict, g: int = g) -> None:
                r.setdefault("measure", {})[str(g)] = res
                log(f"{g} group(s) before the agreement: {json.dumps(res)}")
                save_json(results_path, results)

            r.setdefault("measure", {})[str(g)] = stage_measure(store_path, g, r["group_shards"], args.agree,
                                                               args.fragments, model, qs, timed)
            log(json.dumps(r["measure"][str(g)]))
            save_json(results_path, results)
    if "update" in args.stages:
        r["update"] = stage_update(store_path, r["group_shards"][0])
        save_json(results_path, results)
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

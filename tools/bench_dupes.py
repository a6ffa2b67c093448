"""Duplicate finding on the dev corpus (`make bench-dupes`): precision and recall of duplicate
pairs, and the time per 1,000 files.

Every track of the corpus (known and unknown songs alike) is in the folder; two thirds of them
also get two degraded copies: the whole track re-encoded to MP3 128k with a gain change, and a
20-60 s excerpt as AAC 96k with another gain change. True pairs: a track and its copies, and the
two copies of one track (the excerpt is inside the whole re-encode). Remastered pairs
(related.tsv) share audio in part; pairs that join two versions of one song are counted apart,
neither as hits nor as false ones.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from tagmatch.audio.degrade import write_av, write_mp3
from tools.bench import cpu_seconds

from tagmatch.audio.decode import load_audio
from tagmatch.train.devcorpus import DEFAULT_ROOT, corpus_available, load_corpus
from tagmatch.dupes.find import DupesConfig, find_duplicates, model_for_dupes
from tagmatch.dupes.report import file_facts
from tagmatch.errors import TagmatchError
from tagmatch.store.index import index_library
from tagmatch.model.modelfile import load_model
from tagmatch.threads import one_compute_thread

SR = 44100
CACHE = Path.home() / ".cache" / "tagmatch" / "bench-dupes"


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha1(key.encode()).hexdigest()[:12], 16))


def build_folder(corpus, out: Path) -> dict[str, str]:
    """Symlinks to every corpus track plus degraded copies; returns path -> source key."""
    music, copies = out / "music", out / "copies"
    music.mkdir(parents=True, exist_ok=True)
    copies.mkdir(parents=True, exist_ok=True)
    source: dict[str, str] = {}
    tracks = sorted(corpus.known + corpus.unknown, key=lambda t: str(t.path))
    for i, t in enumerate(tracks):
        key = str(t.path.relative_to(corpus.root))
        link = music / f"t{i:03d}{t.path.suffix}"
        if not link.exists():
            link.symlink_to(t.path)
        source[str(link)] = key
        rng = _rng(key)
        if rng.random() >= 2 / 3:
            continue
        whole, part = copies / f"t{i:03d}-whole.mp3", copies / f"t{i:03d}-part.m4a"
        if not (whole.exists() and part.exists()):
            y = load_audio(t.path, SR)
            write_mp3(whole, np.clip(y * 10 ** (rng.uniform(-10, 4) / 20), -1, 1).astype(np.float32), SR, 128)
            dur = len(y) / SR
            n = min(rng.uniform(20, 60), 0.6 * dur)
            a = rng.uniform(0, dur - n)
            ex = y[int(a * SR) : int((a + n) * SR)] * 10 ** (rng.uniform(-12, 3) / 20)
            write_av(part, np.clip(ex, -1, 1).astype(np.float32), SR, "aac", 96)
        source[str(whole)] = source[str(part)] = key
    return source


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--out", type=Path, default=CACHE)
    ap.add_argument("--search", default="auto", choices=["auto", "exact", "approximate"],
                    help="stage-1 search (auto: exact below dupes.APPROX_ABOVE vectors)")
    ap.add_argument("--reuse-store", action="store_true", help="reuse the embeddings of the last run (compare only)")
    args = ap.parse_args(argv)
    if not corpus_available(args.corpus):
        print(f"dev corpus not found at {args.corpus}: run ../shared/corpus/fetch-dev-corpus", file=sys.stderr)
        return 0
    corpus = load_corpus(args.corpus)
    group = {str(t.path.relative_to(corpus.root)): t.group for t in corpus.known + corpus.unknown}
    t0 = time.perf_counter()
    source = build_folder(corpus, args.out)
    print(f"folder: {len(source)} files ({time.perf_counter() - t0:.0f} s to prepare)", flush=True)

    one_compute_thread()  # as `tagmatch dupes` runs
    model = model_for_dupes(load_model(args.model))  # as `tagmatch dupes` embeds the folders
    fc = model.feature_config
    c0, w0 = cpu_seconds(), time.perf_counter()  # embedding runs on worker processes (auto backend)
    saved = args.out / f"store-{model.model_id}-hop{fc.ref_hop_frames}"
    if args.reuse_store and saved.exists():
        from tagmatch.store.shards import Store

        store, report = Store.load(saved), None
        embed_wall = embed_cpu = float("nan")
    else:
        store, report = index_library(args.out / "music", None, model)
        store, report2 = index_library(args.out / "copies", store, model)
        report.errors += report2.errors
        embed_wall, embed_cpu = time.perf_counter() - w0, cpu_seconds() - c0
        store.save(saved)
        for path, reason in report.errors:
            print(f"  {path}: {reason}")
    infos = {i: file_facts(t.path, t.tags, t.size) for i, t in enumerate(store.tracks)}
    c0, w0 = time.process_time(), time.perf_counter()
    groups = find_duplicates(store, infos, fc.window_samples / fc.sample_rate, DupesConfig(), search=args.search)
    cmp_wall, cmp_cpu = time.perf_counter() - w0, time.process_time() - c0

    paths = [t.path for t in store.tracks]
    predicted = set()
    for g in groups:
        if g.kind == "duplicate":
            for a, b in itertools.combinations(sorted(g.members), 2):
                predicted.add((a, b))
    partial = {tuple(sorted(g.members)) for g in groups if g.kind == "partial"}
    truth, related = set(), set()
    for a, b in itertools.combinations(range(len(paths)), 2):
        sa, sb = source.get(paths[a]), source.get(paths[b])
        if sa == sb:
            truth.add((a, b))
        elif group[sa] == group[sb]:
            related.add((a, b))
    tp = len(predicted & truth)
    fp = sorted(predicted - truth - related)
    fn = sorted(truth - predicted)
    n, hours = len(paths), store.hours
    res = {
        "files": n, "hours": round(hours, 2), "errors": len(report.errors) if report else None,
        "search": args.search,
        "true_pairs": len(truth), "predicted_pairs": len(predicted), "hits": tp,
        "precision": round(tp / max(tp + len(fp), 1), 4), "recall": round(tp / max(len(truth), 1), 4),
        "false_pairs": [(paths[a], paths[b]) for a, b in fp], "missed_pairs": [(paths[a], paths[b]) for a, b in fn],
        "remaster_pairs_grouped": len(predicted & related), "remaster_pairs": len(related),
        "partial_pairs": len(partial), "partial_pairs_true": len(partial & truth),
        "embed_wall_s": round(embed_wall, 1), "embed_cpu_s": round(embed_cpu, 1),
        "compare_wall_s": round(cmp_wall, 1), "compare_cpu_s": round(cmp_cpu, 1),
        "vectors": store.n_vectors, "model": model.model_id,
    }
    per_k = 1000 / n
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}, indent=1))
    for a, b in res["false_pairs"]:
        print(f"  false: {a} ~ {b}")
    for a, b in res["missed_pairs"]:
        print(f"  missed: {a} ~ {b}")
    print(f"\nprecision {res['precision']:.2%}, recall {res['recall']:.2%} over {len(truth)} true pairs; "
          f"per 1,000 files ({hours / n * 1000:.0f} h of audio): embed {embed_wall * per_k / 60:.1f} min wall, "
          f"compare {cmp_wall * per_k:.1f} s wall")
    (args.out / f"results-{model.model_id}-{args.search}.json").write_text(json.dumps(res, indent=1))  # per model
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TagmatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

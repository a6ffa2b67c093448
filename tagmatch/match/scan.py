"""Scanning a folder: match every file, and the scan document (tagmatch.organize.scandoc) that
scripts and the later steps read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from tagmatch.audio.decode import find_audio_files
from tagmatch.match.decide import Candidate, FileMatch, match_file
from tagmatch.match.config import MatchConfig
from tagmatch.match.query import open_query, QueryAudio
from tagmatch.model.modelfile import LoadedModel
from tagmatch.organize.rejections import Rejections, encode
from tagmatch.organize.scandoc import ScanDoc
from tagmatch.organize.seen import seen
from tagmatch.store.parallel import prefetch
from tagmatch.store.shards import Store

JSON_TAGS = ("title", "artist", "album", "tracknumber")


def scan_paths(root: Path) -> list[Path]:
    """What a scan looks at: files with audio extensions (a single file is scanned as given)."""
    return find_audio_files(Path(root))


def scan(paths: list[Path], store: Store, model: LoadedModel, cfg: MatchConfig = MatchConfig(),
         should_stop: Callable[[], bool] | None = None, searcher=None,
         rejections: Rejections | None = None) -> Iterator[FileMatch]:
    """Match files one by one (a generator, so callers can show progress and stop early). The
    start of the next file is decoded in a thread while this one is embedded and searched.
    `searcher`: default `tagmatch.store.ann.searcher_for(store)`: the store's saved approximate index
    when it has a current one, else exact."""
    store.check_model(model.model_id, model.feature_config)
    if searcher is None:
        from tagmatch.store.ann import searcher_for

        searcher = searcher_for(store)
    for p, prepared in prefetch(lambda p: open_query(Path(p), model, cfg), paths, 1, 1, discard=QueryAudio.close):
        if should_stop and should_stop():
            if prepared.exception() is None:
                prepared.result().close()  # the files opened ahead are closed, not left to the GC
            return
        yield match_file(p, store, model, cfg, searcher, prepared, rejections)


_WORKER_STORES: dict = {}  # per worker process: the store opened (memory-mapped) once, not per file


def match_in_worker(path: str, store_path: str, model_path: str | None, model_id: str,
                    cfg: MatchConfig, rejections: Rejections | None = None) -> FileMatch:
    """Match one file in a worker process (tagmatch.store.parallel). The worker opens the store itself,
    once per store version (a re-index between scans changes its manifest), memory-mapped; track
    numbers in the result are the same as in the client's copy of that store."""
    from tagmatch.store.ann import ANN_META, searcher_for
    from tagmatch.store.parallel import worker_model
    from tagmatch.store.folder import MANIFEST

    from tagmatch.model.calibration import LIBRARY_FILE

    model = worker_model(model_path, model_id)
    meta = Path(store_path) / ANN_META  # `tagmatch index` may change the index and not the store
    cal = Path(store_path) / LIBRARY_FILE  # nor the library's calibration
    key = (store_path, (Path(store_path) / MANIFEST).stat().st_mtime_ns, meta.exists() and meta.stat().st_mtime_ns,
           cal.exists() and cal.stat().st_mtime_ns, model.model_id)
    if key not in _WORKER_STORES:
        _WORKER_STORES.clear()
        store = Store.load(Path(store_path))
        store.check_model(model.model_id, model.feature_config, store_path)
        _WORKER_STORES[key] = store, searcher_for(store), model.for_library(store)  # as the local scan does
    store, searcher, model = _WORKER_STORES[key]
    return match_file(path, store, model, cfg, searcher, rejections=rejections)


def candidate_json(c: Candidate, store: Store) -> dict:
    t = store.tracks[c.track]
    tags = {k: t.tags.get(k) for k in JSON_TAGS}
    for k, v in t.tags.items():
        tags.setdefault(k, v)
    return {"path": t.path, "tags": tags, "confidence": round(c.confidence, 4), "offset_s": c.offset_s,
            "fragments_agreeing": c.fragments_agreeing, "fragments_total": c.fragments_total,
            "score": round(c.score, 4), "margin": round(c.margin, 4),
            "verified": None if c.verified is None else round(c.verified, 4),
            "significance": None if c.significance is None else round(c.significance, 2)}


def file_json(m: FileMatch, store: Store) -> dict:
    out = {"path": str(Path(m.path).absolute()), "status": m.status, "error": m.error,
           "match": candidate_json(m.match, store) if m.match else None,
           "alternatives": [candidate_json(a, store) for a in m.alternatives],
           "stopped_at_s": m.stopped_at_s, "seen": seen(m.path)}
    if m.fingerprint is not None:
        out["fingerprint"] = encode(m.fingerprint)
    if m.passed_over:
        out["passed_over"] = [store.tracks[t].path for t in m.passed_over]
    return out


def scan_doc(results: list[FileMatch], store: Store, store_path: Path, target: Path | None = None) -> ScanDoc:
    """The scan document of these results (`ScanDoc.save` writes it)."""
    return ScanDoc(str(Path(store_path).absolute()), [file_json(m, store) for m in results],
                   str(Path(target).absolute()) if target is not None else None)


def describe(m: FileMatch, store: Store) -> str:
    """'Artist - Title' of a match (falls back on the file name when untagged)."""
    if not m.match:
        return ""
    t = store.tracks[m.match.track]
    title = t.tags.get("title") or Path(t.path).stem
    return f"{t.tags['artist']} - {title}" if t.tags.get("artist") else title

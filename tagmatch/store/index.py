"""Indexing: embed a reference library into a store, incrementally.

Only new or changed files (size or mtime differ) are decoded and embedded; tracks whose files
disappeared from the indexed folder are dropped (not when most of them did: see index_library). Decoding and mel computation run in a thread
pool ahead of the encoder, so the two cores stay busy.

Backends: "local" (the above), "joblib" (whole files on local worker processes, one per core:
the fastest for a big batch), "dask" (whole files on a distributed cluster), and "auto" (the
default: joblib from `parallel.AUTO_MIN_FILES` files, else local). The parallel ones run
`embed_file` in workers that load the model themselves; the calling process alone owns the store,
adding results in file order as they come, so every backend builds the same store.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from tagmatch.audio.decode import find_audio_files, load_audio
from tagmatch.errors import TagmatchError
from tagmatch.audio.features import SILENT_RMS, FeatureConfig, log_mel, window_rms, window_starts
from tagmatch.model.modelfile import LoadedModel
from tagmatch.store.parallel import (check_backend, model_path_for_workers, ordered_map, prefetch, resolve_backend,
                               worker_model)
from tagmatch.store.shards import Store, TrackInfo, quantize
from tagmatch.organize.tags import read_tags
from tagmatch.progress import OnProgress, Progress

@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    audio_seconds: float = 0.0


def reference_frames(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """A decoded track's log-mel and the start frames of its audible windows, every
    `ref_hop_frames` (a track shorter than one window is padded with silence to one).

    Returns (S [shape=(frames, n_mels)], starts [shape=(n,)]); `LoadedModel.embed_at` embeds them.
    """
    S = log_mel(y, cfg)
    starts = window_starts(len(S), cfg.ref_hop_frames, cfg)
    if len(starts) == 0 and len(S) > 0:
        y = np.concatenate([y, np.zeros(cfg.window_samples - len(y) + 1, np.float32)])
        S = log_mel(y, cfg)
        starts = window_starts(len(S), cfg.ref_hop_frames, cfg)
    loud = window_rms(y, starts, cfg) > SILENT_RMS
    return S, starts[loud]


def _prepare(path: Path, cfg: FeatureConfig):
    """Decode + features + tags for one file (runs in a worker thread)."""
    try:
        y = load_audio(path, cfg.sample_rate)
        S, starts = reference_frames(y, cfg)
        if len(starts) == 0:
            raise TagmatchError("no audible audio (silent or too short)")
        try:
            tags = read_tags(path)
        except TagmatchError:
            tags = {}
        return S, starts, len(y) / cfg.sample_rate, tags, None
    except TagmatchError as exc:
        return None, None, 0.0, {}, str(exc)


def index_library(
    root: Path,
    store: Store | None,
    model: LoadedModel,
    *,
    progress: OnProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    backend: str = "auto",
    n_jobs: int | None = None,
    scheduler: str | None = None,
    model_path: Path | str | None = None,
    prune: bool = False,
    files: list[Path] | None = None,
    remove_missing: bool = True,
) -> tuple[Store, IndexReport]:
    """Bring `store` up to date with the audio files under `root` (the store is edited in place
    and returned; a new one is made when `store` is None). Nothing under `root` is modified.

    `backend` "auto" picks joblib for many files, else "local" (parallel.resolve_backend);
    "joblib" uses `n_jobs` worker processes (default: all cores); "dask" the cluster at
    `scheduler`, else a local one of `n_jobs` (default 2) worker processes. Their workers load the
    model from `model_path` (None: the file `model` was loaded from), which must hold that same
    model: a worker that finds another model id fails the run. A stop
    (`should_stop`, checked after each file) loses at most the files in flight; the caller saves.

    Nothing is dropped from the store that could not be looked at: tracks under a folder that
    cannot be listed, or whose file cannot be stat'ed, are kept (and reported as errors). And
    when more than half of the tracks indexed from `root` are gone, nothing is changed unless
    `prune`: a folder that is empty because its disk is not mounted must not empty the store.

    `files`: the audio files to index, listed by the caller (beets' items) instead of found under
    `root`; `remove_missing` False keeps the tracks of files not listed (a listing of part of
    the library).
    """
    check_backend(backend, n_jobs)
    cfg = model.feature_config
    if store is not None:
        store.check_model(model.model_id, cfg)
    else:
        store = Store(feature_config=cfg, model_id=model.model_id, dim=model.dim)
    root = Path(root).resolve()
    if str(root) not in store.roots:
        store.roots.append(str(root))
    unreadable: list[tuple[str, str]] = []
    if files is None:
        files = find_audio_files(root, unreadable)
    else:
        files = sorted({Path(f).resolve() for f in files})
    report = IndexReport()
    for folder, why in unreadable:  # its tracks stay in the store as they were
        report.errors.append((folder, f"cannot read this folder ({why}); its tracks are kept as they were"))
    by_path = store.track_by_path()
    on_disk = {str(p) for p in files}
    blind = [Path(f) for f, _ in unreadable]
    under = [i for p, i in by_path.items() if _is_under(p, root)]
    gone = {i for i in under if remove_missing and store.tracks[i].path not in on_disk
            and not any(_is_under(store.tracks[i].path, b) for b in blind)}
    if len(gone) * 2 > len(under) and not prune:
        raise TagmatchError(
            f"{len(gone)} of the {len(under)} tracks indexed from {root} are no longer there (an emptied or "
            "unmounted folder?); the store is unchanged. To drop them from the store, index with --prune")
    report.removed = sorted(store.tracks[i].path for i in gone)

    todo, stale = [], set()
    for p in files:
        try:
            st = p.stat()
        except OSError as exc:  # a broken link, or gone since the listing: a track it had is kept
            why = "a broken link" if p.is_symlink() else f"cannot read it ({exc.strerror or exc})"
            report.errors.append((str(p), why))
            continue
        i = by_path.get(str(p))
        if i is not None and store.tracks[i].size == st.st_size and store.tracks[i].mtime_ns == st.st_mtime_ns:
            report.unchanged += 1
            continue
        if i is not None:
            stale.add(i)
        todo.append((p, st, i is not None))
    store.remove_tracks(gone | stale)
    for path, why in report.errors if progress else ():  # shown now, as the files' errors will be
        progress(Progress("indexing", 0, len(todo), path, why))
    stop = should_stop or (lambda: False)
    backend = resolve_backend(backend, len(todo))

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
            progress(Progress("indexing", n, len(todo), str(p), fe.error))

    if backend == "local":
        for n, ((p, st, was_known), prepared) in enumerate(prefetch(lambda t: _prepare(t[0], cfg), todo, 2, 3), 1):
            if stop():
                break
            S, starts, dur, tags, err = prepared.result()
            vectors, times = (None, None) if err else (model.embed_at(S, starts), starts * cfg.frame_seconds)
            record(n, (p, st, was_known), FileEmbedding(str(p), vectors, times, dur, tags, err))
        return store, report

    if not todo or stop():
        return store, report
    paths = [str(p) for p, _, _ in todo]
    model_path = model_path_for_workers(model_path or model.path)
    hop = cfg.ref_hop_frames  # the workers' model file may have another (dupes.model_for_dupes)
    results = ordered_map(embed_file, [(p, model_path, model.model_id, hop) for p in paths], backend, n_jobs,
                          scheduler)
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


def embed_file(path: str, model_path: str | None, model_id: str,
               ref_hop_frames: int | None = None) -> FileEmbedding:
    """Decode, window and embed one file (in a worker process). The model is loaded from
    `model_path` (None: the worker's shipped default; never its environment) once per process
    and must have id `model_id`, or the run fails: vectors of another model would be garbage.
    `ref_hop_frames`: windows this far apart (default: the model's reference hop)."""
    model = worker_model(model_path, model_id)
    fc = model.feature_config
    if ref_hop_frames is not None:
        fc = replace(fc, ref_hop_frames=ref_hop_frames)
    S, starts, dur, tags, err = _prepare(Path(path), fc)
    if err is not None:
        return FileEmbedding(path, None, None, error=err)
    vectors = quantize(model.embed_at(S, starts), model.dim)
    return FileEmbedding(path, vectors, starts * fc.frame_seconds, dur, tags)


def _is_under(path: str, root: Path) -> bool:
    try:
        Path(path).relative_to(root)
        return True
    except ValueError:
        return False

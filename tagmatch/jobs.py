"""The long jobs (index, scan, find duplicates, train) as plain functions, whole: load the model
and the store, do the work, save the result.

The CLI and the TUI both call these; each shows their `tagmatch.progress.Progress` events its own way (a rich bar, a Textual
progress screen) and hands in its own stop signal (Ctrl-C, Escape). A stopped job saves what is
done, atomically, so nothing is ever half-written: a re-run goes on from there.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tagmatch.errors import SearchLost, StoreError, TagmatchError
from tagmatch.fsutil import atomic_path, check_writable, document_lock, store_lock
from tagmatch.progress import OnProgress, Progress, ShouldStop, never, quiet

if TYPE_CHECKING:
    from tagmatch.dupes.report import DupesReport
    from tagmatch.organize.scandoc import ScanDoc


def open_store(store_path: Path, model, must_exist: bool, verify: str = "quick", damaged: list | None = None):
    """The store at `store_path` (None when it does not exist and need not), refused when another
    model built it. `verify`, `damaged`: as Store.load checks and drops damaged shards."""
    from tagmatch.store.shards import Store

    if not must_exist and not store_path.exists():
        return None
    store = Store.load(store_path, verify=verify, damaged=damaged)
    store.check_model(model.model_id, model.feature_config, store_path)
    return store


# ---- index ------------------------------------------------------------------------------------
@dataclass
class IndexResult:
    store: object
    report: object
    store_path: Path
    stopped: bool
    search: str = ""  # how scans will search the store (exact, or the approximate index's state)
    repaired: list = field(default_factory=list)  # damaged shards dropped: (file, reason, their tracks' paths)


SAVE_EVERY_S = 10.0  # while indexing, the store is saved this often: a kill loses at most this much


def index_job(ref_dir: Path, store_path: Path, model_path: Path | None = None, *,
              on_progress: OnProgress = quiet, should_stop: ShouldStop = never, backend: str | None = None,
              n_jobs: int | None = None, scheduler: str | None = None,
              save_every_s: float = SAVE_EVERY_S, search: str = "auto", prune: bool = False,
              files: list[Path] | None = None, remove_missing: bool = True, check: bool = False) -> IndexResult:
    """Bring the store at `store_path` up to date with `ref_dir`, saving it as it goes (every
    `save_every_s`: a save writes only the new shards) and at the end, also when stopped. So a
    Ctrl-C loses nothing, a kill at most the last few seconds, and a re-run goes on from there.
    `backend`, `n_jobs`, `scheduler`: where files are embedded (index.index_library); backend None
    is "dask" with a scheduler address, else "auto". The approximate index's new parts are added
    on this machine, in `n_jobs` processes (default one per core). `search`: keep the approximate
    index beside the store up to date (tagmatch.store.ann.update_index): "auto" (for big stores),
    "approximate" or "exact". `prune`: drop the tracks of missing files even when most of the
    folder's are missing (else that is refused, as an unmounted disk looks the same). `files`,
    `remove_missing`: a listing of `ref_dir`'s files from elsewhere (index.index_library)."""
    from tagmatch.store.ann import update_index
    from tagmatch.store.index import index_library
    from tagmatch.model.modelfile import load_model
    from tagmatch.store.shards import Store

    if not Path(ref_dir).is_dir():
        raise TagmatchError(f"not a folder: {ref_dir}")
    with store_lock(store_path):  # one writer at a time
        model = load_model(model_path)
        damaged: list = []  # its tracks are dropped, so the files still under ref_dir are embedded again
        store = open_store(store_path, model, must_exist=False, verify=_index_check(store_path, check),
                           damaged=damaged)
        if store is None:
            store = Store(feature_config=model.feature_config, model_id=model.model_id, dim=model.dim)
            store.vectors_checked_at = time.time()  # every shard will be made here
        last_save = time.monotonic()

        def progress(p) -> None:
            nonlocal last_save
            if time.monotonic() - last_save >= save_every_s:
                store.save(store_path)  # between files the store is whole
                last_save = time.monotonic()
            on_progress(p)

        scheduler = cluster_address(backend, scheduler)
        backend = _backend(backend, scheduler)
        store, report = index_library(ref_dir, store, model, progress=progress, should_stop=should_stop,
                                      backend=backend, n_jobs=n_jobs, scheduler=scheduler, model_path=model_path,
                                      prune=prune, files=files, remove_missing=remove_missing)
        store.save(store_path)
        if should_stop():
            return IndexResult(store, report, store_path, True, repaired=damaged)

        how = update_index(store, search, on_progress=on_progress, should_stop=should_stop, jobs=n_jobs)
        return IndexResult(store, report, store_path, should_stop(), how, damaged)


# ---- scan -------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    results: list
    store: object
    doc: ScanDoc
    stopped: bool
    json_path: Path | None = None
    search: str = ""  # how the store was searched (tagmatch.store.ann.describe_search)

    def count(self, status: str) -> int:
        return sum(m.status == status for m in self.results)


def scan_job(target: Path, store_path: Path, model_path: Path | None = None, *, threshold: float = 0.5,
             json_path: Path | None = None, on_progress: OnProgress = quiet, should_stop: ShouldStop = never,
             backend: str | None = None, n_jobs: int | None = None, scheduler: str | None = None,
             whole_files: bool = False, verify: bool = True) -> ScanResult:
    """Match every audio file under `target`; write the scan JSON to `json_path` when given
    (a stopped scan writes the files done so far). Each file is read only until its answer is
    near-certain (`MatchConfig.stop_confidence`), or to its end with `whole_files`; unsure answers
    are checked against the reference files unless `verify` is False (`MatchConfig.verify`). `backend`
    "joblib" matches whole files on worker processes (tagmatch.store.parallel), each opening the store
    memory-mapped; "dask" (or a `scheduler` address) matches them here and searches the store's
    groups of shards on the cluster's workers (tagmatch.store.cluster). The results are the same as
    the local run's, in the same order. A cluster that goes away mid-scan raises SearchLost, after
    the files done are saved to `json_path`."""
    if not Path(target).exists():
        raise TagmatchError(f"not found: {target}")
    if not 0.0 <= threshold <= 1.0:  # also refuses nan
        raise TagmatchError(f"the threshold is a confidence from 0 to 1, not {threshold}")
    with contextlib.ExitStack() as held:
        if json_path is not None:
            check_writable(json_path)  # now, not after the scan
            held.enter_context(document_lock(json_path))  # not while a review has it open
        return _scan(target, store_path, model_path, threshold, json_path, on_progress, should_stop, backend,
                     n_jobs, scheduler, whole_files, verify)


def _scan(target, store_path, model_path, threshold, json_path, on_progress, should_stop, backend, n_jobs,
          scheduler, whole_files, verify) -> ScanResult:
    """scan_job's work, its arguments checked and the scan JSON's lock held."""
    from tagmatch.store.ann import describe_search, searcher_for
    from tagmatch.match.config import MatchConfig
    from tagmatch.model.modelfile import load_model
    from tagmatch.store.cluster import ClusterSearcher
    from tagmatch.store.parallel import check_backend, dask_client, model_path_for_workers, ordered_map, resolve_backend
    from tagmatch.match.scan import match_in_worker, scan, scan_doc, scan_paths
    from tagmatch.organize.rejections import Rejections

    scheduler = cluster_address(backend, scheduler)
    backend = _backend(backend, scheduler)
    check_backend(backend, n_jobs)
    model = load_model(model_path)
    store = open_store(store_path, model, must_exist=True)
    model = model.for_library(store)  # the calibration this library's decisions gave, if any
    paths = scan_paths(target)
    if not paths:
        raise TagmatchError(f"no audio files in {target}")
    cfg = MatchConfig(threshold=threshold, stop_confidence=None if whole_files else MatchConfig.stop_confidence,
                      verify=MatchConfig.verify if verify else 0)
    backend = resolve_backend(backend, len(paths))
    rejections = Rejections.load() or None  # what the user rejected before is not offered again
    with contextlib.ExitStack() as cluster:
        if backend == "local":
            searcher = searcher_for(store)
            search = describe_search(store, searcher)
            matches = scan(paths, store, model, cfg, should_stop=should_stop, searcher=searcher, rejections=rejections)
        elif backend == "dask":  # the store's groups searched on the workers, files matched here
            client = cluster.enter_context(dask_client(n_jobs, scheduler))
            searcher = ClusterSearcher(client, store)
            search = searcher.describe()
            matches = scan(paths, store, model, cfg, should_stop=should_stop, searcher=searcher, rejections=rejections)
        else:  # each worker opens the store and its index itself, choosing the same way
            search = describe_search(store)
            args = [(str(p), str(Path(store_path).resolve()), model_path_for_workers(model_path), model.model_id, cfg,
                     rejections) for p in paths]
            matches = (m for _, m in ordered_map(match_in_worker, args, backend, n_jobs, scheduler))
        results, lost = [], None
        with contextlib.closing(matches):  # closing a parallel run cancels what is in flight
            try:
                for m in matches:
                    results.append(m)
                    on_progress(Progress("scanning", len(results), len(paths), m.path,
                                         m.error if m.status == "error" else None))
                    if should_stop():
                        break
            except SearchLost as exc:
                lost = exc
    doc = scan_doc(results, store, store_path, target)
    if json_path is not None and results:
        doc.save(json_path)
    if lost is not None:
        kept = f"; {json_path} holds the {len(results)} files done" if json_path is not None and results else ""
        raise SearchLost(f"scan stopped after {len(results)} of {len(paths)} files: {lost}{kept}")
    return ScanResult(results, store, doc, should_stop(), json_path if results else None, search)


# ---- learning from decisions ----------------------------------------------------------------------
def learn_job(store_path: Path, scans: list[Path] | None = None, model_path: Path | None = None):
    """Refit this library's calibration from the decisions in `scans` (default: every saved scan
    against this store) and keep it in the store folder (tagmatch.train.decisions). Returns
    (Calibration, facts)."""
    from tagmatch.model.modelfile import load_model
    from tagmatch.train.decisions import calibrate_from_decisions

    from tagmatch.model.modelfile import library_adapter

    model = load_model(model_path)
    store = open_store(Path(store_path), model, must_exist=True)
    adapter = library_adapter(store.folder, model.model_id)
    if adapter is not None:  # the library's own adapter scores its queries: its calibration goes with it
        model = replace(model, query_adapter=adapter)
    docs = _decided_scans(store_path, scans)
    if not any(f.get("decision") for d in docs for f in d.files):
        raise TagmatchError("no decided files in " + (", ".join(map(str, scans)) if scans else
                            f"the saved scans against {store_path}") + ": review a scan first")
    with store_lock(store_path):
        return calibrate_from_decisions(docs, store.folder, model)


FULL_CHECK_EVERY_S = 7 * 86400


def _index_check(store_path: Path, check: bool) -> str:
    """How `index` checks the store it opens: every vector's checksum ("full") when asked
    (`--check`), or when the last full check is a week old or more (or never was); else its track
    lists, track numbers and times, as every open does ("quick"): the vectors are read only where
    a shard is copied (a merge, a removed track), and then checked first (folder.check_vectors).
    So keeping a big store current costs what changed, not a pass over every vector (~2 s per
    100k tracks warm, minutes cold), and damage is still found within a week (or by `check`)."""
    from tagmatch.store.folder import last_full_check

    last = last_full_check(store_path) if Path(store_path).is_dir() else None
    return "full" if check or last is None or time.time() - last >= FULL_CHECK_EVERY_S else "quick"


def _decided_scans(store_path: Path, scans: list[Path] | None) -> list:
    from tagmatch.organize.scandoc import ScanDoc

    if scans:
        return [ScanDoc.read(p) for p in scans]
    mine = str(Path(store_path).absolute())
    return [d for d in (ScanDoc.read(s.path) for s in list_scans()) if d.store == mine]


def finetune_job(store_path: Path, out: Path | None = None, scans: list[Path] | None = None,
                 model_path: Path | None = None, on_progress: OnProgress = quiet,
                 should_stop: ShouldStop = never) -> dict | None:
    """Fine-tune the query adapter from the review decisions (tagmatch.train.finetune), starting
    from the one this library uses now, and keep it only when the held-out decisions are better
    separated: written to the model file `out`, or (None) as this library's own adapter beside
    its store, whose calibration is then refitted from the same decisions. Returns the facts:
    pairs, held-out separation before and after, whether it was kept; None when stopped (the
    training is checkpointed beside `out` or the store: the same command goes on)."""
    import shutil

    from tagmatch.model.modelfile import (default_model_path, load_model, save_library_adapter, set_calibration,
                                          set_query_adapter)
    from tagmatch.train.decisions import calibrate_from_decisions
    from tagmatch.train.finetune import decision_pairs, finetune, identity_adapter, separation

    base = load_model(model_path)
    store = open_store(Path(store_path), base, must_exist=True)
    model = base.for_library(store)
    docs = _decided_scans(store_path, scans)
    pairs = decision_pairs(docs, store, model, on_progress)
    if not len(pairs["held+"]) or not (len(pairs["held-"]) or len(pairs["train-"])):
        raise TagmatchError(f"too few decisions to learn from ({len(pairs['train+'])} accepted and "
                            f"{len(pairs['train-'])} rejected windows to train on, {len(pairs['held+'])} accepted "
                            "held out): review more files first (accepted and rejected ones)")
    start = model.query_adapter or identity_adapter(model.dim)
    held_neg = pairs["held-"] if len(pairs["held-"]) else pairs["train-"]
    before = separation(model.query_adapter, pairs["held+"], held_neg)
    ckpt = Path(out).with_name(Path(out).name + ".ckpt") if out else Path(store.folder) / "query-adapter.ckpt"
    new = finetune(start, pairs["train+"], pairs["train-"], on_progress=on_progress, checkpoint=ckpt,
                   should_stop=should_stop)
    if new is None:
        return None
    after = separation(new, pairs["held+"], held_neg)
    facts = {"train_pairs": [len(pairs["train+"]), len(pairs["train-"])],
             "held_pairs": [len(pairs["held+"]), len(pairs["held-"])],
             "separation_before": round(before, 4), "separation_after": round(after, 4), "written": after > before}
    if facts["written"] and out is not None:
        out = Path(out)
        with atomic_path(out) as tmp:
            shutil.copyfile(base.path or default_model_path(), tmp)
        set_query_adapter(out, new, note=f"fine-tuned from review decisions: {facts}")
        set_calibration(out, base.calibration, note="kept from the model fine-tuned (refit: calibrate "
                                                    "--from-decisions)")
    elif facts["written"]:
        with store_lock(store_path):
            save_library_adapter(store.folder, base.model_id, new, facts)
            # the recorded margins are the old adapter's: close enough to refit from, until the next scans
            cal, _ = calibrate_from_decisions(docs, store.folder, replace(base, query_adapter=new))
        facts["calibration"] = cal.to_dict()
    return facts


def learn_everything_job(store_path: Path, on_progress: OnProgress = quiet, should_stop: ShouldStop = never) -> str:
    """What Home's `l` does: fine-tune this library's query adapter (kept if better), then refit
    its calibration, from the decisions of the saved scans; a summary in a few lines."""
    from tagmatch.train.decisions import describe_library_fit

    lines = []
    try:
        facts = finetune_job(store_path, on_progress=on_progress, should_stop=should_stop)
        if facts is None:
            raise TagmatchError("stopped; run it again to go on")
        lines.append(("Query adapter fine-tuned for this library" if facts["written"] else
                      "Query adapter kept as it was (no better on the held-out decisions)")
                     + f": separation {facts['separation_before']:+.4f} -> {facts['separation_after']:+.4f}")
    except TagmatchError as exc:
        lines.append(f"Query adapter not fine-tuned: {exc}")
    cal, facts = learn_job(store_path)
    lines.append(describe_library_fit(cal, facts))
    return "\n".join(lines)


# ---- evidence -----------------------------------------------------------------------------------
_LOADED: dict = {}  # (store path, model path) -> (model, store or None, searcher): one of each per process


def evidence_job(query: Path, candidate: dict, store_path: Path | None, model_path: Path | None = None,
                 start_s: float = 0.0):
    """The evidence picture (tagmatch.match.evidence.Picture) that `query` holds `candidate` (a
    scan entry's match). The model and the store are loaded once per process and kept; a store
    that cannot be opened still gives the spectrograms (with a note), not the similarity."""
    from tagmatch.match.evidence import picture
    from tagmatch.model.modelfile import load_model
    from tagmatch.store.ann import searcher_for

    key = (str(store_path), str(model_path))
    if key not in _LOADED:
        model, store, searcher, note = load_model(model_path), None, None, ""
        try:
            store = open_store(Path(store_path), model, must_exist=True) if store_path else None
            searcher = searcher_for(store) if store is not None else None
            model = model.for_library(store) if store is not None else model  # as its scans embed queries
        except TagmatchError as exc:
            note = str(exc)
        _LOADED.clear()
        _LOADED[key] = model, store, searcher, note
    model, store, searcher, note = _LOADED[key]
    pic = picture(query, candidate, store, model, searcher, start_s=start_s)
    return replace(pic, note="; ".join(n for n in (note, pic.note) if n)) if note else pic


def cluster_address(backend: str | None = None, scheduler: str | None = None) -> str | None:
    """The dask scheduler a job uses: `scheduler` (--scheduler), else $TAGMATCH_SCHEDULER unless
    another backend was asked for (so the TUI, which has no such option, indexes and scans on
    the cluster too); None: no cluster."""
    if scheduler or backend not in (None, "dask"):
        return scheduler
    return os.environ.get("TAGMATCH_SCHEDULER") or None


def _backend(backend: str | None, scheduler: str | None) -> str:
    """A scheduler address implies dask; the default is "auto" (parallel.resolve_backend)."""
    backend = backend or ("dask" if scheduler else "auto")
    if scheduler and backend != "dask":
        raise TagmatchError(f"a scheduler address needs the dask backend, not {backend}")
    return backend


def default_scans_dir() -> Path:
    """Where scans are kept for review when no --json is named: $TAGMATCH_SCANS, else the
    user's data dir."""
    import os

    env = os.environ.get("TAGMATCH_SCANS")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("tagmatch")) / "scans"


def new_scan_path(target: Path, scans_dir: Path | None = None) -> Path:
    """A fresh file name for a scan of `target` in the scans folder: `<folder>-<time>.json`."""
    from datetime import datetime

    d = scans_dir or default_scans_dir()
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(target).resolve().name) or "scan"
    base = f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = d / f"{base}.json", 1
    while path.exists():
        n += 1
        path = d / f"{base}-{n}.json"
    return path


@dataclass(frozen=True)
class SavedScan:
    """A scan kept in the scans folder, for Home's list: what it covered and what waits."""

    path: Path
    folder: str
    files: int
    pending: int  # matches without a decision
    accepted: int
    mtime: float


def list_scans(scans_dir: Path | None = None) -> list[SavedScan]:
    """The saved scans, newest first; unreadable files are left out (they are not ours)."""
    from tagmatch.organize.scandoc import ScanDoc

    d = scans_dir or default_scans_dir()
    out = []
    for p in d.glob("*.json") if d.is_dir() else []:
        try:
            doc = ScanDoc.read(p)
        except TagmatchError:
            continue
        files = doc.files
        decided = [(f.get("decision") or {}).get("status") for f in files]
        out.append(SavedScan(p, doc.folder, len(files),
                             sum(f.get("status") == "match" and not d for f, d in zip(files, decided)),
                             decided.count("accepted"), p.stat().st_mtime))
    return sorted(out, key=lambda s: -s.mtime)


# ---- duplicates -------------------------------------------------------------------------------
def dupes_job(dirs: Iterable[Path], cache_path: Path, model_path: Path | None = None, *,
              keep: Iterable[str] = (), library_path: Path | None = None, reference_path: Path | None = None,
              files: list[Path] | None = None,
              on_progress: OnProgress = quiet, should_stop: ShouldStop = never) -> DupesReport | None:
    """Embed the folders into the dupes cache (incremental, saved as it goes), find the groups,
    and return the report (tagmatch.dupes.report.dupes_doc). With `library_path`, also the files already in that
    store. The files of the reference store at `reference_path` (default: `library_path`) are
    always their group's keepers, marked "in_library". `files`: only these files (listed by the
    caller, as beets' items are), found under the one folder in `dirs`. Returns None when stopped
    during embedding (what was embedded is cached)."""
    from tagmatch.dupes.find import against_library, DupesConfig, find_duplicates, model_for_dupes, restrict
    from tagmatch.dupes.reference import Reference, reference_of
    from tagmatch.dupes.report import dupes_doc, file_facts
    from tagmatch.store.index import index_library
    from tagmatch.model.modelfile import load_model

    base = load_model(model_path)
    model = model_for_dupes(base)  # the folders' windows on the grid that comparing files needs
    roots = []
    for d in dirs:
        if not Path(d).is_dir():
            raise TagmatchError(f"not a folder: {d}")
        roots.append(Path(d).resolve())
    if not roots:
        raise TagmatchError("name at least one folder")
    with store_lock(cache_path):  # one writer at a time
        try:
            cache = open_store(cache_path, model, must_exist=False, damaged=[])  # damaged shards: embedded again
        except (StoreError, TagmatchError):
            cache = None  # a cache from another model or version: start again
        for root in roots:
            def progress(p: Progress, stage=f"embedding {root.name}") -> None:
                on_progress(replace(p, stage=stage))
            cache, _ = index_library(root, cache, model, progress=progress, should_stop=should_stop,
                                     prune=True,  # a cache: what is gone is re-embedded if it comes back
                                     files=files, remove_missing=files is None)
            cache.save(cache_path)
            if should_stop():
                return None
    listed = None if files is None else {str(Path(f).resolve()) for f in files}
    ids = [i for i, t in enumerate(cache.tracks) if any(Path(t.path).is_relative_to(r) for r in roots)
           and (listed is None or t.path in listed)]
    store, _ = restrict(cache, ids)
    try:
        reference = reference_of(reference_path or library_path)
    except StoreError:  # finding moves nothing; a quarantine reads the store again and refuses
        reference = Reference()
    infos = {i: file_facts(t.path, t.tags, t.size) for i, t in enumerate(store.tracks)}
    for info in infos.values():
        if reference.holds(info["path"]):
            info["in_library"] = True
    fc = model.feature_config
    window_s = fc.window_samples / fc.sample_rate
    cfg = DupesConfig()

    groups = find_duplicates(store, infos, window_s, cfg, keep={str(Path(k).resolve()) for k in keep},
                             progress=on_progress, protected=reference.holds)
    library, hits = None, []
    if library_path is not None:
        library = open_store(library_path, base, must_exist=True)
        hits = against_library(store, library, window_s, cfg)
    return dupes_doc(groups, store, infos, roots, hits, library)


# ---- train ------------------------------------------------------------------------------------
@dataclass
class TrainRequest:
    """What to train on and where to put it; None fields take `train.TrainConfig`'s defaults."""

    music: list[Path]
    out: Path
    noise: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    steps: int | None = None
    batch_pairs: int | None = None
    learning_rate: float | None = None
    loss: str | None = None
    seed: int | None = None
    kind: str | None = None  # encoder kind: model.ModelConfig's default, or "window" / "shared"
    # (clean, degraded) pairs for the query adapter fitted after training (tagmatch.train.adapter);
    # None: AdapterConfig's default, 0: no adapter
    adapter_pairs: int | None = None


def train_job(req: TrainRequest, *, on_progress: OnProgress = quiet, should_stop: ShouldStop = never) -> dict:
    """Decode the audio, train, and save the model to `req.out` (atomically; a stop saves the
    model as it stands, and with a checkpoint a re-run resumes). Returns train()'s summary plus
    `seconds`."""
    from tagmatch.train.loop import TrainConfig, decode_folder, train

    if not req.music:
        raise TagmatchError("no audio files to train on")
    given = {"steps": req.steps, "batch_pairs": req.batch_pairs, "learning_rate": req.learning_rate,
             "loss": req.loss, "seed": req.seed}
    cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None})
    if req.kind is not None:
        cfg = replace(cfg, model=replace(cfg.model, kind=req.kind))
    sr = cfg.features.sample_rate
    music = decode_folder(req.music, sr, on_progress, should_stop=should_stop)
    noise = decode_folder(req.noise, sr, lambda p: on_progress(replace(p, stage="decoding noise")),
                          should_stop=should_stop) if req.noise else None
    if should_stop():
        raise TagmatchError("stopped before training began; nothing was written")
    if not music:
        raise TagmatchError("none of the training files could be decoded")
    t0 = time.time()

    summary = train(music, req.out, cfg, noise=noise, checkpoint=req.checkpoint, progress=on_progress,
                    should_stop=should_stop, meta={"data": f"{len(music)} files"})
    if req.adapter_pairs != 0 and not should_stop():
        summary["query_adapter_pairs"] = _fit_query_adapter(req, music, noise, on_progress, should_stop)
    return {**summary, "seconds": time.time() - t0}


def _fit_query_adapter(req: TrainRequest, music, noise, on_progress: OnProgress, should_stop: ShouldStop) -> int:
    """Fit the trained model's query adapter on the same music and store it in the model file.
    Returns the number of pairs (0 when stopped first: the model is left without one)."""
    from tagmatch.train.adapter import AdapterConfig, fit_query_adapter

    cfg = AdapterConfig() if req.adapter_pairs is None else replace(AdapterConfig(), pairs=req.adapter_pairs)
    if req.seed is not None:
        cfg = replace(cfg, seed=req.seed)
    return fit_query_adapter(
        req.out, music, noise, cfg, note="fitted after training: ", should_stop=should_stop,
        on_progress=on_progress)


# ---- calibrate --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrateRequest:
    model: Path  # the model file the calibration is written into
    music: list[Path] = field(default_factory=list)  # folders of music (ignored with dev_corpus)
    unknown: list[Path] = field(default_factory=list)  # songs kept out of the reference (default: 1 in 5)
    noise: list[Path] = field(default_factory=list)  # background recordings for the noisy conditions
    dev_corpus: Path | None = None  # the dev corpus's own split instead of `music`
    work: Path | None = None  # the reference store and the query files (default: the user cache dir)
    seed: int = 1  # fit sets at seed + 1000, + 2000, ...
    sets: int = 5
    limit: int | None = None  # songs per side (None: all)
    conditions: str | None = None  # comma-separated condition names (None: all of tagmatch.train.queries')


def default_calibrate_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tagmatch")) / "calibrate"


class _Stopped(Exception):
    """Raised through a job's own progress calls when the user asked it to stop."""


def calibrate_job(req: CalibrateRequest, *, on_progress: OnProgress = quiet,
                  should_stop: ShouldStop = never) -> dict | None:
    """Fit the model's calibration on degraded copies of known songs (indexed into a work store)
    and of held-out ones, and write it into the model file (tagmatch.train.calibrate); None when
    stopped first. Everything made on the way (store, query files) is kept under the work folder,
    so a re-run, also after a stop or a kill, reuses it."""
    def progress(p: Progress) -> None:
        on_progress(p)
        if should_stop():
            raise _Stopped

    try:
        return _calibrate(req, progress)
    except _Stopped:
        return None


def _calibrate(req: CalibrateRequest, on_progress: OnProgress) -> dict:
    from tagmatch.model.modelfile import load_model
    from tagmatch.store.ann import searcher_for, update_index
    from tagmatch.store.index import index_library
    from tagmatch.train.calibrate import calibrate
    from tagmatch.train.devcorpus import corpus_available, folder_corpus, load_corpus
    from tagmatch.train.queries import link_reference, queryable, select_conditions

    conditions = select_conditions(req.conditions)
    if req.dev_corpus is not None:
        if not corpus_available(req.dev_corpus):
            raise TagmatchError(f"no dev corpus at {req.dev_corpus} (../shared/corpus/fetch-dev-corpus builds it)")
        corpus = load_corpus(req.dev_corpus)
    else:
        if not req.music:
            raise TagmatchError("calibrate needs folders of music (or --dev-corpus)")
        for d in [*req.music, *req.unknown, *req.noise]:
            if not Path(d).exists():
                raise TagmatchError(f"not found: {d}")
        corpus = folder_corpus(req.music, req.unknown, req.noise)
    if len(corpus.known) < 2 or len(corpus.unknown) < 2:
        raise TagmatchError(f"calibrate needs at least 2 known and 2 held-out songs "
                            f"(found {len(corpus.known)} and {len(corpus.unknown)})")
    model = load_model(req.model)
    work = Path(req.work or default_calibrate_dir()) / model.model_id
    by_name = link_reference(corpus, work / "ref")
    store_path = work / "store"
    store = open_store(store_path, model, must_exist=False)
    store, report = index_library(work / "ref", store, model,
                                  progress=lambda p: on_progress(replace(p, stage="indexing the known songs")),
                                  prune=True)  # calibrate's own copy of the known songs, rebuilt at will
    store.save(store_path)
    corpus = queryable(corpus, store, by_name, on_progress)  # songs that failed to index cannot be found
    update_index(store, "auto", on_progress=on_progress)
    return calibrate(corpus, conditions, store, model, Path(req.model), by_name, cache=work, seed=req.seed,
                     sets=req.sets, limit=req.limit, searcher=searcher_for(store), on_progress=on_progress)

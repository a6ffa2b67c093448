"""Command line: a thin layer over the library (train, index, scan, info, apply, dupes, undo, runs,
review; no command opens the terminal UI).

Results go to stdout, progress bars and per-file errors to stderr. Exit status: 0 on success
(also when some files failed), 1 when nothing could be processed or on a fatal error.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

from tagmatch.errors import TagmatchError

PROG = "tagmatch"


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@contextmanager
def progress_bar(description: str, total: int | None, quiet: bool):
    """Yield `advance(n=1, **fields)`; draws a rich bar (done/total, rate, ETA) unless quiet."""
    if quiet:
        yield lambda *a, **k: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
               TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=_console(), transient=False) as prog:
        task = prog.add_task(description, total=total, rate="", info="")

        def advance(n: int = 1, total: int | None = None, **fields):
            prog.update(task, advance=n, total=total, **{k: str(v) for k, v in fields.items()})

        yield advance


@contextmanager
def graceful_interrupt():
    """First Ctrl-C asks the running job to stop after the current item (so what is done gets
    saved); a second one interrupts at once."""
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        _err("stopping after the current item (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)


def _load_model(path: Path | None):
    from tagmatch.modelio import load_model

    return load_model(path)


def _store_path(arg: Path | None) -> Path:
    from tagmatch.store import default_store_path

    return Path(arg) if arg else default_store_path()


def _model_and_store(args, must_exist: bool):
    """The model in use and the store it reads, refusing a store built by another model.
    Returns (model, store or None when it does not exist yet and need not, store path)."""
    from tagmatch.store import Store

    model = _load_model(args.model)
    store_path = _store_path(args.store)
    store = Store.load(store_path) if must_exist or store_path.exists() else None
    if store is not None:
        store.check_model(model.model_id, model.feature_config, store_path)
    return model, store, store_path


def _expand_sources(sources: list[Path]) -> list[Path]:
    """Folders, audio files, or text files listing one audio path a line."""
    from tagmatch.audio import find_audio_files, is_audio_path

    out = []
    for s in sources:
        if s.is_file() and not is_audio_path(s):
            out += [Path(l.strip()) for l in s.read_text().splitlines() if l.strip()]
        elif s.exists():
            out += find_audio_files(s)
        else:
            raise TagmatchError(f"not found: {s}")
    return out


# ---- commands ------------------------------------------------------------------------------
def cmd_train(args) -> int:
    import time

    from tagmatch.train import TrainConfig, decode_folder, train

    music_paths = _expand_sources(args.sources)
    noise_paths = _expand_sources(args.noise) if args.noise else []
    if not music_paths:
        raise TagmatchError("no audio files to train on")
    given = {"steps": args.steps, "batch_pairs": args.batch, "learning_rate": args.lr, "loss": args.loss,
             "seed": args.seed}
    cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None})
    with progress_bar("decoding", len(music_paths) + len(noise_paths), args.quiet) as advance:
        def on_file(p, err):
            if err:
                _err(f"{p}: {err} (skipped)")
            advance()
        music = decode_folder(music_paths, cfg.features.sample_rate, on_file)
        noise = decode_folder(noise_paths, cfg.features.sample_rate, on_file) if noise_paths else None
    if not music:
        raise TagmatchError("none of the training files could be decoded")
    t0 = time.time()
    with progress_bar("training", cfg.steps, args.quiet) as advance, graceful_interrupt() as stopped:
        def progress(p):
            advance(rate=f"{p.pairs_per_s:.0f} pairs/s", info=f"loss {p.loss:.3f}  top1 {p.top1:.2f}")
        summary = train(music, args.out, cfg, noise=noise, checkpoint=args.checkpoint, progress=progress,
                        should_stop=stopped, meta={"data": f"{len(music)} files"})
    print(f"saved {args.out}: model {summary['model_id']}, {summary['steps']} steps, "
          f"final loss {summary['final_loss']:.3f}, {time.time() - t0:.0f} s")
    return 0


def cmd_index(args) -> int:
    from tagmatch.index import index_library

    if not args.ref_dir.is_dir():
        raise TagmatchError(f"not a folder: {args.ref_dir}")
    model, store, store_path = _model_and_store(args, must_exist=False)
    with progress_bar("indexing", None, args.quiet) as advance, graceful_interrupt() as stopped:
        def progress(p):
            advance(total=p.total, info=Path(p.path).name[:40])
            if p.error and not args.quiet:
                _err(f"{p.path}: {p.error}")
        store, report = index_library(args.ref_dir, store, model, progress=progress, should_stop=stopped)
    store.save(store_path)
    if args.quiet:
        for path, reason in report.errors:
            _err(f"{path}: {reason}")
    if stopped():
        _err("interrupted: what was indexed so far is saved; run the same command to continue")
    print(f"{store_path}: {len(store.tracks)} tracks, {store.hours:.2f} h, {len(store.vectors)} vectors "
          f"(added {len(report.added)}, updated {len(report.updated)}, removed {len(report.removed)}, "
          f"unchanged {report.unchanged}, errors {len(report.errors)})")
    return 0


def cmd_scan(args) -> int:
    from tagmatch.match import MatchConfig
    from tagmatch.scan import describe, scan, scan_json, scan_paths, write_scan_json

    if not args.dir.exists():
        raise TagmatchError(f"not found: {args.dir}")
    model, store, store_path = _model_and_store(args, must_exist=True)
    paths = scan_paths(args.dir)
    if not paths:
        raise TagmatchError(f"no audio files in {args.dir}")
    cfg = MatchConfig(threshold=args.threshold)
    base = args.dir if args.dir.is_dir() else args.dir.parent
    results = []
    with progress_bar("scanning", len(paths), args.quiet) as advance, graceful_interrupt() as stopped:
        for m in scan(paths, store, model, cfg, should_stop=stopped):
            results.append(m)
            advance(info=Path(m.path).name[:40])
    width = min(48, max(len(_rel(m.path, base)) for m in results))
    for m in results:
        name = _rel(m.path, base).ljust(width)
        if m.status == "match":
            print(f"{name}  {describe(m, store)}  ({m.match.confidence:.2f})")
        elif m.status == "unknown":
            hint = f"  (best guess {describe(m, store)}, {m.match.confidence:.2f})" if m.match else ""
            print(f"{name}  unknown{hint}")
        else:
            print(f"{name}  error: {m.error}")
    if args.json:
        write_scan_json(scan_json(results, store, store_path), args.json)
    counts = {s: sum(m.status == s for m in results) for s in ("match", "unknown", "error")}
    print(f"{len(results)} files: {counts['match']} matched, {counts['unknown']} unknown, {counts['error']} errors"
          + (f"; wrote {args.json}" if args.json else ""), file=sys.stderr)
    return 1 if counts["error"] == len(results) else 0


def cmd_info(args) -> int:
    from tagmatch.store import Store

    store_path = _store_path(args.store)
    store = Store.load(store_path)
    model = _load_model(args.model)
    ok = "matches the model in use" if store.model_id == model.model_id else "built with ANOTHER model"
    print(f"store   {store_path}\ntracks  {len(store.tracks)} ({store.hours:.2f} h)\n"
          f"vectors {len(store.vectors)} x {store.dim} {store.vectors.dtype}\nmodel   {store.model_id} ({ok})")
    return 0


def _show(values) -> str:
    return "(none)" if not values else "; ".join(values)


def _print_plan(plan) -> None:
    """The plan as the user reviews it: one block per file, then what is skipped and why."""
    import os

    paths = [str(op.src) for op in plan.ops] + [str(op.dst) for op in plan.ops if not plan.dest]
    base = Path(os.path.commonpath([os.path.dirname(p) for p in paths])) if paths else Path.cwd()
    verb = {"copy": "copy", "move": "move" if plan.dest else "rename"}[plan.mode]
    for op in plan.ops:
        dst = _rel(str(op.dst), plan.dest) if plan.dest else _rel(str(op.dst), base)
        why = op.why if "confidence" in op.why or op.confidence is None else f"{op.why}, confidence {op.confidence:.2f}"
        print(f"{verb} {_rel(str(op.src), base)}\n  -> {dst}   ({why})")
        added = [f"{c.name}: {_show(c.new)}" for c in op.tag_changes if c.old is None]
        if added:
            print("     + " + " | ".join(added))
        for c in op.tag_changes:
            if c.old is not None:
                print(f"     {'~' if c.new else '-'} {c.name}: {_show(c.old)} -> {_show(c.new)}")
        if op.art_from:
            print("     + cover art from the reference")
    for sk in plan.skipped:
        print(f"skip {_rel(sk.path, base)}   ({sk.reason})")


def cmd_apply(args) -> int:
    from tagmatch.journal import applied_sources, default_runs_dir
    from tagmatch.plan import build_plan, load_scan

    doc = load_scan(args.scan)
    runs_dir = default_runs_dir()
    mode = "copy" if args.copy else ("move" if args.move else None)
    plan = build_plan(doc, min_confidence=args.min_confidence, template=args.template, dest=args.dest, mode=mode,
                      already_applied=applied_sources(runs_dir))
    _print_plan(plan)
    if not plan.ops:
        if args.min_confidence is None and not any(f.get("decision") for f in doc["files"]):
            raise TagmatchError("nothing accepted: no file of the scan has a review decision; "
                                "pass --min-confidence X to accept matches at or above X")
        print("nothing to do", file=sys.stderr)
        return 0
    n_ren = sum(op.src != op.dst for op in plan.ops)
    n_tag = sum(op.retags for op in plan.ops)
    summary = f"{len(plan.ops)} files: {n_ren} to {plan.mode if plan.dest else 'rename'}, {n_tag} to retag"
    if not args.yes:
        print(f"{summary}. Dry run: nothing was changed; add --yes to apply.", file=sys.stderr)
        return 0
    return _carry_out(plan, args, scan=str(Path(args.scan).absolute()), id3v23=args.id3v23)


def _carry_out(plan, args, *, scan: str, id3v23: bool = False) -> int:
    """Run an approved plan as a journaled, undoable run, with a progress bar."""
    import os

    from tagmatch.apply import TEST_DELAY_ENV, apply_plan, start_run
    from tagmatch.journal import default_runs_dir

    run = start_run(plan, default_runs_dir(), scan=scan, id3v23=id3v23)
    delay = float(os.environ.get(TEST_DELAY_ENV) or 0)  # test-only: lets a test kill the run midway
    results = []
    try:
        with progress_bar("applying", len(plan.ops), args.quiet) as advance, graceful_interrupt() as stopped:
            for r in apply_plan(plan, run, id3v23=id3v23, should_stop=stopped, delay_s=delay):
                results.append(r)
                if r.status == "failed":
                    _err(f"{r.src}: {r.message}")
                advance(info=Path(r.src).name[:40])
    except KeyboardInterrupt:
        _err(f"run {run.id} stopped mid-operation; `tagmatch undo {run.id}` puts everything back")
        raise
    done = sum(r.status == "done" for r in results)
    failed = len(results) - done
    left = len(plan.ops) - len(results)
    print(f"run {run.id}: {done} done, {failed} failed" + (" (left unchanged)" if failed else "")
          + (f", {left} not started (interrupted)" if left else "")
          + (f"; undo with: tagmatch undo {run.id}" if done else ""), file=sys.stderr)
    return 1 if failed and not done else 0


def cmd_dupes(args) -> int:
    """Find duplicate recordings under the folders (or act on a saved report with --from)."""
    import json

    from tagmatch.dupes import load_dupes, quarantine_plan

    if args.from_json:
        if args.dirs:
            raise TagmatchError("give folders or --from, not both")
        doc = load_dupes(args.from_json)
    else:
        if not args.dirs:
            raise TagmatchError("name at least one folder (or --from a saved report)")
        doc = _find_dupes(args)
        _print_dupes(doc)
        if args.json:
            from tagmatch.fsutil import atomic_write_text

            atomic_write_text(args.json, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
            print(f"wrote {args.json}", file=sys.stderr)
    if not args.quarantine:
        return 0
    q = args.quarantine.absolute()
    for r in doc.get("roots", []):
        if q == Path(r) or q.is_relative_to(r):
            raise TagmatchError(f"the quarantine folder {q} is inside a scanned folder ({r}); choose one outside it")
    plan = quarantine_plan(doc, q)
    _print_plan(plan)
    if not plan.ops:
        print("nothing to move", file=sys.stderr)
        return 0
    if not args.yes:
        print(f"{len(plan.ops)} files to move to {q}. Dry run: nothing was changed; add --yes to move them.",
              file=sys.stderr)
        return 0
    return _carry_out(plan, args, scan=f"dupes --quarantine {q}")


def _find_dupes(args) -> dict:
    from tagmatch.dupes import DupesConfig, against_library, dupes_doc, file_facts, find_duplicates, restrict
    from tagmatch.index import index_library
    from tagmatch.errors import StoreError
    from tagmatch.store import Store, default_cache_store_path

    model = _load_model(args.model)
    roots = []
    for d in args.dirs:
        if not d.is_dir():
            raise TagmatchError(f"not a folder: {d}")
        roots.append(d.resolve())
    cache_path = args.cache or default_cache_store_path()
    cache = None
    if cache_path.exists():
        try:
            cache = Store.load(cache_path)
            cache.check_model(model.model_id, model.feature_config, cache_path)
        except (StoreError, TagmatchError):
            cache = None  # a cache from another model or version: start again
    for root in roots:
        with progress_bar(f"embedding {root.name}", None, args.quiet) as advance, graceful_interrupt() as stopped:
            def progress(p):
                advance(total=p.total, info=Path(p.path).name[:40])
                if p.error:
                    _err(f"{p.path}: {p.error}")
            cache, _ = index_library(root, cache, model, progress=progress, should_stop=stopped)
        cache.save(cache_path)
        if stopped():
            raise TagmatchError("interrupted: the files embedded so far are cached; run the same command to go on")
    ids = [i for i, t in enumerate(cache.tracks) if any(Path(t.path).is_relative_to(r) for r in roots)]
    store, old_ids = restrict(cache, ids)
    infos = {i: file_facts(t.path, t.tags, t.size) for i, t in enumerate(store.tracks)}
    fc = model.feature_config
    window_s = fc.window_samples / fc.sample_rate
    cfg = DupesConfig()
    with progress_bar("comparing", None, args.quiet) as advance:
        last = {}

        def progress(stage, n, total):
            advance(n - last.get(stage, 0), total=total, info=stage)
            last[stage] = n
        groups = find_duplicates(store, infos, window_s, cfg, keep={str(Path(k).resolve()) for k in args.keep},
                                 progress=progress)
    library, hits = None, []
    if args.against_library:
        library = Store.load(_store_path(args.store))
        library.check_model(model.model_id, fc, _store_path(args.store))
        hits = against_library(store, library, window_s, cfg)
    return dupes_doc(groups, store, infos, roots, hits, library)


def _print_dupes(doc: dict) -> None:
    import os

    roots = [Path(r) for r in doc["roots"]]
    base = Path(os.path.commonpath(roots)) if roots else Path.cwd()
    n_dup = sum(g["kind"] == "duplicate" for g in doc["groups"])
    for g in doc["groups"]:
        print(f"{g['kind']} group ({len(g['files'])} files):")
        for f in g["files"]:
            keeper = f["path"] == g["keeper"]
            what = f"{f['format']}" + (f" {f['bitrate'] // 1000} kb/s" if f.get("bitrate") else "") + \
                (f", {f['duration_s']:.1f} s" if f.get("duration_s") else "")
            where = "keep" if keeper else f"shares {f['overlap_s']:.1f} s at {f['offset_s']:+.1f} s"
            print(f"  {'*' if keeper else ' '} {_rel(f['path'], base)}   ({what}; {where})")
    for h in doc.get("library", []):
        print(f"in library: {_rel(h['path'], base)} = {h['library_path']} ({h['kind']}, {h['overlap_s']:.1f} s)")
    print(f"{n_dup} duplicate group(s), {len(doc['groups']) - n_dup} partial overlap(s)"
          + (f", {len(doc['library'])} files already in the library" if "library" in doc else ""), file=sys.stderr)


def cmd_undo(args) -> int:
    from tagmatch.apply import undo_run
    from tagmatch.journal import default_runs_dir, find_run

    info = find_run(default_runs_dir(), args.run)
    if info.in_flight:
        _err(f"run {info.id} was cut short; {len(info.in_flight)} operation(s) were in flight:")
        for o in info.in_flight:
            _err(f"  #{o.i} {o.src} -> {o.dst} ({'staged' if o.ready else 'started'})")
    undone = refused = 0
    for r in undo_run(info):
        flight = " [was in flight]" if r.was_in_flight else ""
        if r.status == "undone":
            undone += 1
            if not args.quiet:
                back = "" if r.op.entry.get("mode") == "copy" else f" -> {r.op.src}"
                print(f"undone {r.op.dst}{back} ({r.message}){flight}")
        else:
            refused += 1
            _err(f"refused #{r.op.i} {r.op.dst}: {r.message}{flight}")
    print(f"run {info.id}: {undone} undone, {refused} refused", file=sys.stderr)
    return 1 if refused and not undone else 0


def cmd_runs(args) -> int:
    from tagmatch.journal import default_runs_dir, find_run, list_runs

    runs_dir = default_runs_dir()
    if args.run:
        info = find_run(runs_dir, args.run)
        h = info.header
        print(f"run {info.id}  {h.get('time')}  {h.get('mode')}{' to ' + h['dest'] if h.get('dest') else ''}  "
              f"status {info.status}\nscan {h.get('scan')}\nfolder {info.dir}")
        for o in info.ops:
            print(f"#{o.i:<4} {o.state:<9} {o.src}\n       -> {o.dst}" + (f"\n       {o.reason}" if o.reason else ""))
            for name, new in (o.entry.get("new_tags") or {}).items():
                print(f"       {name}: {_show((o.entry.get('old_tags') or {}).get(name))} -> {_show(new)}")
        return 0
    runs = list_runs(runs_dir)
    if not runs:
        print(f"no runs in {runs_dir}", file=sys.stderr)
        return 0
    for r in runs:
        h = r.header
        counts = ", ".join(f"{r.count(s)} {s}" for s in ("done", "undone", "in-flight", "failed") if r.count(s))
        how = f"{h.get('mode')} to {h['dest']}" if h.get("dest") else "rename in place"
        print(f"{r.id}  {h.get('time', '')[:19].replace('T', ' ')}  {h.get('n_ops', len(r.ops)):>4} ops  "
              f"{r.status:<13} {counts or '-'}  ({how})")
    return 0


def cmd_review(args) -> int:
    """Open the TUI's Review screen on a scan (decisions are saved into the scan JSON)."""
    from tagmatch.naming import check_template
    from tagmatch.plan import load_scan

    load_scan(args.scan)  # a bad file is reported here, before the screen takes over
    check_template(args.template)
    return _run_tui(args.scan, template=args.template, dest=args.dest)


def _run_tui(scan: Path | None = None, **kw) -> int:
    from tagmatch.tui.app import TagmatchApp

    TagmatchApp(scan, **kw).run()
    return 0


def _rel(path: str, base: Path) -> str:
    try:
        return str(Path(path).absolute().relative_to(base.absolute()))
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    from tagmatch.naming import DEFAULT_TEMPLATE, FIELDS

    p = argparse.ArgumentParser(prog=PROG, description="Match messy audio files to a tagged reference library.")
    sub = p.add_subparsers(dest="command")

    def common(sp, store=True):
        sp.add_argument("--model", type=Path, help="model file (default: $TAGMATCH_MODEL or the shipped model)")
        if store:
            sp.add_argument("--store", type=Path, help="store file (default: $TAGMATCH_STORE or the user data dir)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    sp = sub.add_parser("train", help="train an encoder on folders of audio (no labels needed)")
    sp.add_argument("sources", type=Path, nargs="+", help="folders, audio files, or text files listing paths")
    sp.add_argument("--out", type=Path, required=True, help="where to write the model file")
    sp.add_argument("--noise", type=Path, nargs="*", help="background recordings for augmentation")
    # Defaults live in train.TrainConfig (not imported here: it pulls in JAX, slow to start).
    sp.add_argument("--steps", type=int, help="training steps (default 4000)")
    sp.add_argument("--batch", type=int, help="pairs per step (default 128)")
    sp.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    sp.add_argument("--loss", choices=("ntxent", "pair-bce"), help="ntxent (default, contrastive) or "
                    "pair-bce (the seed's distance + sigmoid formulation)")
    sp.add_argument("--seed", type=int)
    sp.add_argument("--checkpoint", type=Path, help="checkpoint file: saved periodically, resumed if present")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("index", help="embed a reference library into the store (incremental)")
    sp.add_argument("ref_dir", type=Path)
    common(sp)
    sp.set_defaults(func=cmd_index)

    sp = sub.add_parser("scan", help="suggest a reference track for every file in a folder")
    sp.add_argument("dir", type=Path)
    sp.add_argument("--json", type=Path, help="write the results as JSON to this file")
    sp.add_argument("--threshold", type=float, default=0.5, help="confidence below which a file is unknown")
    common(sp)
    sp.set_defaults(func=cmd_scan)

    sp = sub.add_parser("info", help="describe the store")
    common(sp)
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("apply", help="plan renames and retags from a scan; carry them out with --yes")
    sp.add_argument("scan", type=Path, help="scan JSON (from scan --json), with review decisions if any")
    sp.add_argument("--min-confidence", type=float, metavar="X",
                    help="also accept unreviewed matches with confidence >= X")
    sp.add_argument("--template", default=DEFAULT_TEMPLATE,
                    help=f"path template (default {DEFAULT_TEMPLATE!r}); fields: " + ", ".join(FIELDS))
    sp.add_argument("--dest", type=Path, help="put files under this folder (default: copy there); "
                                              "without it files are renamed in their own folder")
    how = sp.add_mutually_exclusive_group()
    how.add_argument("--copy", action="store_true", help="leave the originals alone (default with --dest)")
    how.add_argument("--move", action="store_true", help="move files (safe across disks)")
    sp.add_argument("--yes", action="store_true", help="carry the plan out (without it: dry run)")
    sp.add_argument("--id3v23", action="store_true", help="write ID3v2.3 instead of v2.4 (MP3, WAV, AIFF)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_apply)

    sp = sub.add_parser("dupes", help="find files that hold the same recording; move the extra copies aside")
    sp.add_argument("dirs", type=Path, nargs="*", help="folders to search")
    sp.add_argument("--json", type=Path, help="write the groups as JSON to this file")
    sp.add_argument("--from", dest="from_json", type=Path, metavar="JSON",
                    help="act on a saved report (edit a group's keeper there to choose another)")
    sp.add_argument("--keep", action="append", default=[], metavar="PATH", help="keep this file in its group")
    sp.add_argument("--against-library", action="store_true", help="also report files already in the reference store")
    sp.add_argument("--quarantine", type=Path, metavar="DIR",
                    help="move every group's extra copies here (relative paths kept); dry run without --yes")
    sp.add_argument("--yes", action="store_true", help="carry the moves out (journaled: `tagmatch undo` restores)")
    sp.add_argument("--cache", type=Path, help="embedding cache (default: the user cache dir)")
    common(sp)
    sp.set_defaults(func=cmd_dupes)

    sp = sub.add_parser("undo", help="restore the names and tags a run changed (default: the last run)")
    sp.add_argument("run", nargs="?", help="run id (or a unique prefix), see `tagmatch runs`")
    sp.add_argument("-q", "--quiet", action="store_true", help="only refusals and the summary")
    sp.set_defaults(func=cmd_undo)

    sp = sub.add_parser("review", help="review a scan in the terminal UI: accept, reject, apply, undo")
    sp.add_argument("scan", type=Path, help="scan JSON (from scan --json); decisions are saved into it")
    sp.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"path template (default {DEFAULT_TEMPLATE!r})")
    sp.add_argument("--dest", type=Path, help="copy accepted files under this folder (default: rename in place)")
    sp.set_defaults(func=cmd_review)

    sp = sub.add_parser("runs", help="list past runs (or the operations of one run)")
    sp.add_argument("run", nargs="?", help="show this run's operations")
    sp.set_defaults(func=cmd_runs)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not args.command:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):  # scripts and pipes get the help
                parser.print_help()
                return 0
            return _run_tui()
        return args.func(args)
    except TagmatchError as exc:
        _err(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

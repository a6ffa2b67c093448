"""Command line: a thin layer over the library (train, index, scan, info, apply, decide, dupes, undo,
runs, review; no command but review opens the terminal UI).

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
def graceful_interrupt():
    """First Ctrl-C (or `kill`, SIGTERM) asks the running job to stop after the current item (so
    what is done gets saved); a second one interrupts at once."""
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        _err("stopping after the current item (Ctrl-C again to abort)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop.is_set
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)


def _store_path(arg: Path | None) -> Path:
    from tagmatch.store.shards import default_store_path

    return Path(arg) if arg else default_store_path()


def _expand_sources(sources: list[Path]) -> list[Path]:
    """Folders, audio files, or text files listing one audio path a line."""
    from tagmatch.audio.decode import find_audio_files, is_audio_path

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
@contextmanager
def step_bars(quiet: bool):
    """Yield an `on_step` for jobs.py: one rich bar per stage (done/total, rate, ETA) and each
    file's error on its own line; with `quiet`, only the errors."""
    if quiet:
        def errors_only(step):
            if step.error:
                _err(f"{step.item}: {step.error}")
        yield errors_only
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=_console(), transient=False) as prog:
        tasks: dict[str, int] = {}

        def on_step(step):
            if step.stage not in tasks:
                tasks[step.stage] = prog.add_task(step.stage, total=step.total, info="")
            info = step.info or Path(step.item).name[:40]
            prog.update(tasks[step.stage], completed=step.done, total=step.total, info=info)
            if step.error:
                prog.console.print(f"{PROG}: {step.item}: {step.error}", markup=False, highlight=False)
        yield on_step


def cmd_train(args) -> int:
    from tagmatch.jobs import TrainRequest, train_job

    req = TrainRequest(music=_expand_sources(args.sources), out=args.out,
                       noise=_expand_sources(args.noise) if args.noise else [], checkpoint=args.checkpoint,
                       steps=args.steps, batch_pairs=args.batch, learning_rate=args.lr, loss=args.loss,
                       seed=args.seed, kind=args.kind, adapter_pairs=args.adapter_pairs)
    with step_bars(args.quiet) as on_step, graceful_interrupt() as stopped:
        summary = train_job(req, on_step=on_step, should_stop=stopped)
    adapter = summary.get("query_adapter_pairs")
    print(f"saved {args.out}: model {summary['model_id']}, {summary['steps']} steps, "
          f"final loss {summary['final_loss']:.3f}"
          + (f", query adapter fitted on {adapter} pairs" if adapter else ", no query adapter")
          + f", {summary['seconds']:.0f} s")
    return 0


def cmd_index(args) -> int:
    from tagmatch.jobs import index_job

    with step_bars(args.quiet) as on_step, graceful_interrupt() as stopped:
        res = index_job(args.ref_dir, _store_path(args.store), args.model, on_step=on_step, should_stop=stopped,
                        backend=args.backend, n_jobs=args.jobs,
                        scheduler=args.scheduler, search=args.search)
    if res.stopped:
        _err("interrupted: what was indexed so far is saved; run the same command to continue")
    store, report = res.store, res.report
    print(f"{res.store_path}: {len(store.tracks)} tracks, {store.hours:.2f} h, {store.n_vectors} vectors "
          f"(added {len(report.added)}, updated {len(report.updated)}, removed {len(report.removed)}, "
          f"unchanged {report.unchanged}, errors {len(report.errors)})")
    if res.search:
        print(res.search)
    return 0


def cmd_scan(args) -> int:
    from tagmatch.jobs import new_scan_path, scan_job
    from tagmatch.match.scan import describe

    json_path = args.json or new_scan_path(args.dir)
    with step_bars(args.quiet) as on_step, graceful_interrupt() as stopped:
        res = scan_job(args.dir, _store_path(args.store), args.model, threshold=args.threshold,
                       json_path=json_path, on_step=on_step, should_stop=stopped, backend=args.backend,
                       n_jobs=args.jobs, scheduler=args.scheduler, whole_files=args.whole_files,
                       verify=not args.no_verify)
    results, store = res.results, res.store
    if res.search.startswith("exact:"):
        _err(f"search {res.search}")
    if not results:
        raise TagmatchError("interrupted before the first file was matched")
    base = args.dir if args.dir.is_dir() else args.dir.parent
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
    counts = {s: res.count(s) for s in ("match", "unknown", "error")}
    print(f"{len(results)} files: {counts['match']} matched, {counts['unknown']} unknown, {counts['error']} errors"
          + ("; interrupted, the rest was not scanned" if res.stopped else "")
          + f"; wrote {json_path} (review it: tagmatch review {json_path})", file=sys.stderr)
    return 1 if counts["error"] == len(results) else 0


def cmd_info(args) -> int:
    from tagmatch.store.ann import describe_search
    from tagmatch.model.modelfile import load_model
    from tagmatch.store.shards import Store

    store_path = _store_path(args.store)
    store = Store.load(store_path)
    model = load_model(args.model)
    ok = "matches the model in use" if store.model_id == model.model_id else "built with ANOTHER model"
    dtype = store.shards[0].vectors.dtype if store.shards else "int8"
    print(f"store   {store_path}\ntracks  {len(store.tracks)} ({store.hours:.2f} h)\n"
          f"vectors {store.n_vectors} x {store.dim} {dtype}\nmodel   {store.model_id} ({ok})\n"
          f"search  {describe_search(store)}")
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
    from tagmatch.organize.journal import applied_sources, default_runs_dir
    from tagmatch.organize.plan import build_plan, load_scan

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


def _tag_edits(sets: list[str], unsets: list[str]) -> dict:
    """--set NAME=VALUE / --unset NAME -> overrides (None removes the tag); each name once."""
    from tagmatch.organize.plan import check_tag_names, split_values

    edits: dict = {}
    for item in sets:
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq:
            raise TagmatchError(f"--set {item!r}: expected NAME=VALUE")
        if name in edits:
            raise TagmatchError(f"tag {name} given twice: put several values in one --set, separated by '; '")
        edits[name] = split_values(value)
    for name in unsets:
        if name in edits:
            raise TagmatchError(f"tag {name} given twice (--set and --unset)")
        edits[name] = None
    check_tag_names(edits)
    return edits


def cmd_decide(args) -> int:
    """Record a review decision in the scan JSON, as the Review screen's keys do, and show what
    `apply` will then do with the file(s)."""
    from tagmatch.organize.journal import applied_sources, default_runs_dir
    from tagmatch.organize.plan import build_plan, clear_decision, find_entry, load_scan, save_scan, set_decision

    edits = _tag_edits(args.set, args.unset)
    editing = bool(edits) or args.path is not None
    if editing and (args.reject or args.clear):
        raise TagmatchError("--set, --unset and --path go with --accept (or alone), not --reject or --clear")
    if not (editing or args.reject or args.clear or args.accept is not None):
        raise TagmatchError("nothing to decide: give --accept [N], --reject, --clear, --set, --unset or --path")
    doc = load_scan(args.scan)
    entries = [find_entry(doc, f) for f in args.files]
    for entry in entries:
        if args.clear:
            clear_decision(doc, entry["path"])
        elif args.reject:
            set_decision(doc, entry["path"], "rejected")
        else:  # --accept starts a new decision; edits alone amend the current one
            old = entry.get("decision") or {}
            old = old if args.accept is None and old.get("status") == "accepted" else {}
            tags = {**(old.get("tags") or {}), **edits}
            path = old.get("path") if args.path is None else args.path
            choice = args.accept if args.accept is not None else old.get("choice", 0)
            set_decision(doc, entry["path"], "accepted", choice=choice, tags=tags, new_path=path or None)
    save_scan(doc, args.scan)
    plan = build_plan({**doc, "files": entries}, template=args.template, dest=args.dest,
                      already_applied=applied_sources(default_runs_dir()))
    _print_plan(plan)
    print(f"saved {len(entries)} decision(s) to {args.scan}", file=sys.stderr)
    return 0


def _carry_out(plan, args, *, scan: str, id3v23: bool = False) -> int:
    """Run an approved plan as a journaled, undoable run, with a progress bar."""
    import os

    from tagmatch.organize.apply import TEST_DELAY_ENV, apply_plan, start_run
    from tagmatch.jobs import Step
    from tagmatch.organize.journal import default_runs_dir

    run = start_run(plan, default_runs_dir(), scan=scan, id3v23=id3v23)
    delay = float(os.environ.get(TEST_DELAY_ENV) or 0)  # test-only: lets a test kill the run midway
    results = []
    try:
        with step_bars(args.quiet) as on_step, graceful_interrupt() as stopped:
            for r in apply_plan(plan, run, id3v23=id3v23, should_stop=stopped, delay_s=delay):
                results.append(r)
                on_step(Step("applying", len(results), len(plan.ops), str(r.src),
                             r.message if r.status == "failed" else None))
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
    from tagmatch.dupes.quarantine import check_quarantine, quarantine_plan
    from tagmatch.dupes.report import find_group, load_dupes, save_dupes, set_keeper

    if args.from_json:
        if args.dirs:
            raise TagmatchError("give folders or --from, not both")
        doc = load_dupes(args.from_json)
        for k in args.keep:  # what the Duplicates screen's "keep this one" does
            i = find_group(doc, k)
            set_keeper(doc, i, k)
            print(f"group {i + 1}: keep {doc['groups'][i]['keeper']}", file=sys.stderr)
    else:
        if not args.dirs:
            raise TagmatchError("name at least one folder (or --from a saved report)")
        doc = _find_dupes(args)
        _print_dupes(doc)
    if args.json:
        save_dupes(doc, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if not args.quarantine:
        return 0
    q = check_quarantine(doc, args.quarantine)
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
    from tagmatch.jobs import dupes_job
    from tagmatch.store.shards import default_cache_store_path

    with step_bars(args.quiet) as on_step, graceful_interrupt() as stopped:
        doc = dupes_job(args.dirs, args.cache or default_cache_store_path(), args.model, keep=args.keep,
                        library_path=_store_path(args.store) if args.against_library else None,
                        on_step=on_step, should_stop=stopped)
    if doc is None:
        raise TagmatchError("interrupted: the files embedded so far are cached; run the same command to go on")
    return doc


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
    from tagmatch.organize.apply import undo_run
    from tagmatch.organize.journal import default_runs_dir, find_run

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
    from tagmatch.organize.journal import default_runs_dir, find_run, list_runs

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
    """Open the TUI's Review screen on a scan (decisions are saved into the scan JSON), or its
    Duplicates screen on a dupes report (keeper choices are saved into the report)."""
    from tagmatch.dupes.report import load_report
    from tagmatch.organize.naming import check_template

    load_report(args.scan)  # a bad file is reported here, before the screen takes over
    check_template(args.template)
    return _run_tui(args.scan, template=args.template, dest=args.dest)


def cmd_keys(args) -> int:
    """List the TUI's key bindings by id, with the keys the config file gives them."""
    from tagmatch.config import config_path, keymap, load_config
    from tagmatch.tui.app import binding_table

    rows = binding_table()
    mine = keymap(load_config(), {r[0] for r in rows})
    width = max(len(r[0]) for r in rows)
    for bid, keys, what in rows:
        print(f"{bid.ljust(width)}  {mine.get(bid, keys):<28} {what}" + ("  (from the config)" if bid in mine else ""))
    print(f"remap in {config_path()}: a [keys] table of id = \"keys\" (comma-separated)", file=sys.stderr)
    return 0


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
    from tagmatch.organize.naming import DEFAULT_TEMPLATE, FIELDS
    from tagmatch.organize.tags import TAG_NAMES

    p = argparse.ArgumentParser(prog=PROG, description="Match messy audio files to a tagged reference library.")
    sub = p.add_subparsers(dest="command")

    def common(sp, store=True):
        sp.add_argument("--model", type=Path, help="model file (default: $TAGMATCH_MODEL or the shipped model)")
        if store:
            sp.add_argument("--store", type=Path, help="store file (default: $TAGMATCH_STORE or the user data dir)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    def workers(sp):
        sp.add_argument("--backend", choices=("auto", "local", "joblib", "dask"),
                        help="auto (default: joblib from 64 files, else local), local (this process, a "
                             "thread decoding ahead), joblib (a worker process per core), dask (a cluster; "
                             "see --scheduler)")
        sp.add_argument("--jobs", type=int, metavar="N", help="worker processes for joblib or a local dask cluster")
        sp.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler, e.g. tcp://HOST:8786 (implies "
                                                               "--backend dask; without it dask starts a local cluster)")

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
    sp.add_argument("--kind", choices=("window", "shared"), help="encoder: each window on its own (window) or "
                    "convolutions shared by overlapping windows (shared: ~3x cheaper to index)")
    sp.add_argument("--adapter-pairs", type=int, metavar="N", help="(clean, degraded) pairs for the query adapter "
                    "fitted after training, which moves noisy queries towards their originals (default 179200, "
                    "~11 min on 2 cores; 0: none)")
    sp.add_argument("--checkpoint", type=Path, help="checkpoint file: saved periodically, resumed if present")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("index", help="embed a reference library into the store (incremental)")
    sp.add_argument("ref_dir", type=Path)
    sp.add_argument("--search", choices=("auto", "approximate", "exact"), default="auto",
                    help="how scans search the store: auto (default) keeps an approximate index (faiss "
                         "IVF-PQ) once the store passes 50,000 vectors (~3.5 h of audio); exact removes it")
    workers(sp)
    common(sp)
    sp.set_defaults(func=cmd_index)

    sp = sub.add_parser("scan", help="suggest a reference track for every file in a folder")
    sp.add_argument("dir", type=Path)
    sp.add_argument("--json", type=Path, help="write the results as JSON to this file")
    sp.add_argument("--threshold", type=float, default=0.5, help="confidence below which a file is unknown")
    sp.add_argument("--whole-files", action="store_true",
                    help="read every file to its end (default: stop once the first 10 s fragments make the answer "
                         "near-certain, confidence 0.9999)")
    sp.add_argument("--no-verify", action="store_true",
                    help="do not read the reference files to check unsure answers (default: the best 3 "
                         "candidates of an unsure file are compared with their reference audio)")
    workers(sp)
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

    sp = sub.add_parser(
        "decide", help="record a review decision (accept, reject, edit tags or path) in a scan JSON",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Record a review decision in the scan JSON, as `tagmatch review` does, then print what "
                    "`tagmatch apply` will do with the file(s).",
        epilog="--accept, --reject and --clear start a new decision (earlier tag and path edits are dropped);\n"
               "--set, --unset and --path alone amend the current one (accepting the match if the file\n"
               "has no accepted decision). VALUE holds several values separated by '; ' (as plans print\n"
               "them; each tag once per command); an empty VALUE removes the tag like --unset.\n"
               "An unknown file (not in the library) is accepted only with tags or a path given here.\n"
               "examples:\n"
               "  tagmatch decide scan.json track07.mp3 --accept 1\n"
               "  tagmatch decide scan.json track07.mp3 --set 'artist=A; B' --unset genre --path 'Mix/Intro'")
    sp.add_argument("scan", type=Path, help="scan JSON (from scan --json); the decision is saved into it")
    sp.add_argument("files", type=Path, nargs="+", metavar="FILE", help="file(s) of the scan")
    what = sp.add_mutually_exclusive_group()
    what.add_argument("--accept", type=int, nargs="?", const=0, metavar="N",
                      help="accept the match (0, the default) or alternative N (1..3); put it after FILE")
    what.add_argument("--reject", action="store_true", help="never apply the file")
    what.add_argument("--clear", action="store_true", help="remove the decision (back to unreviewed)")
    sp.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a tag (repeatable); names: " + ", ".join(TAG_NAMES))
    sp.add_argument("--unset", action="append", default=[], metavar="NAME", help="remove a tag (repeatable)")
    sp.add_argument("--path", metavar="P", help="explicit new path, relative to apply's --dest or the file's "
                                                 "folder (extension kept); '' goes back to the template")
    sp.add_argument("--template", default=DEFAULT_TEMPLATE, help="template for the printed preview only")
    sp.add_argument("--dest", type=Path, help="--dest for the printed preview only (pass it to apply too)")
    sp.set_defaults(func=cmd_decide)

    sp = sub.add_parser("dupes", help="find files that hold the same recording; move the extra copies aside")
    sp.add_argument("dirs", type=Path, nargs="*", help="folders to search")
    sp.add_argument("--json", type=Path, help="write the groups as JSON to this file")
    sp.add_argument("--from", dest="from_json", type=Path, metavar="JSON",
                    help="act on a saved report (edit a group's keeper there to choose another)")
    sp.add_argument("--keep", action="append", default=[], metavar="PATH",
                    help="keep this file in its group (with --from: sets the report's keeper; --json saves it)")
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

    sp = sub.add_parser("review", help="review a scan (or a dupes report) in the terminal UI: accept, reject, "
                                       "apply, undo")
    sp.add_argument("scan", type=Path, help="scan JSON (from scan --json; decisions are saved into it) or "
                                            "dupes report (from dupes --json)")
    sp.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"path template (default {DEFAULT_TEMPLATE!r})")
    sp.add_argument("--dest", type=Path, help="copy accepted files under this folder (default: rename in place)")
    sp.set_defaults(func=cmd_review)

    sp = sub.add_parser("keys", help="list the terminal UI's keys by id (remap them in the config file)")
    sp.set_defaults(func=cmd_keys)

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
        if args.command in ("index", "scan") or (args.command == "dupes" and not args.from_json):  # they embed
            from tagmatch.threads import one_compute_thread

            one_compute_thread()
        return args.func(args)
    except TagmatchError as exc:
        _err(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `tagmatch keys | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())

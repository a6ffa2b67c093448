"""The commands that listen to audio: train, calibrate, index, scan, info, check, dupes."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from tagmatch.cli.output import carry_out, err, expand_sources, graceful_interrupt, print_plan, progress_bars, store_arg
from tagmatch.errors import TagmatchError
from tagmatch.fsutil import check_writable, document_lock, rel
from tagmatch.textsafe import visible


def cmd_train(args) -> int:
    from tagmatch.jobs import TrainRequest, train_job

    if args.from_decisions is not None:
        return _finetune(args)
    if not args.sources:
        raise TagmatchError("name the music to train on (folders, files or lists), or --from-decisions")
    if args.out is None:
        raise TagmatchError("name the model file to write with --out")

    req = TrainRequest(music=expand_sources(args.sources), out=args.out,
                       noise=expand_sources(args.noise) if args.noise else [], checkpoint=args.checkpoint,
                       steps=args.steps, batch_pairs=args.batch, learning_rate=args.lr, loss=args.loss,
                       seed=args.seed, kind=args.kind, adapter_pairs=args.adapter_pairs)
    with progress_bars(args.quiet) as on_progress, graceful_interrupt() as stopped:
        summary = train_job(req, on_progress=on_progress, should_stop=stopped)
    adapter = summary.get("query_adapter_pairs")
    print(f"saved {args.out}: model {summary['model_id']}, {summary['steps']} steps, "
          f"final loss {summary['final_loss']:.3f}"
          + (f", query adapter fitted on {adapter} pairs" if adapter else ", no query adapter")
          + f", {summary['seconds']:.0f} s")
    return 0


def cmd_calibrate(args) -> int:
    from tagmatch.jobs import CalibrateRequest, calibrate_job
    from tagmatch.train.calibrate import describe_fit

    if args.from_decisions is not None:
        return _calibrate_from_decisions(args)
    model = args.model or (Path(os.environ["TAGMATCH_MODEL"]) if os.environ.get("TAGMATCH_MODEL") else None)
    if model is None:
        raise TagmatchError("calibrate writes into a model file: name it with --model (or $TAGMATCH_MODEL)")
    req = CalibrateRequest(model=model, music=args.music, unknown=args.unknown or [], noise=args.noise or [],
                           dev_corpus=args.dev_corpus, work=args.work, seed=args.seed, sets=args.sets,
                           limit=args.limit, conditions=args.conditions)
    with progress_bars(args.quiet) as on_progress, graceful_interrupt() as stopped:
        fit = calibrate_job(req, on_progress=on_progress, should_stop=stopped)
    if fit is None:
        raise TagmatchError("interrupted: the model is unchanged; the query files made so far are kept, "
                            "run the same command to go on")
    print(describe_fit(fit))
    return 0


def _finetune(args) -> int:
    from tagmatch.jobs import finetune_job

    if args.sources:
        raise TagmatchError("--from-decisions takes scans, not music to train on")
    with progress_bars(args.quiet) as on_progress, graceful_interrupt() as stopped:
        facts = finetune_job(store_arg(args.store), args.out, args.from_decisions or None, args.model,
                             on_progress=on_progress, should_stop=stopped)
    if facts is None:
        raise TagmatchError("interrupted: the fine-tuning is checkpointed; run the same command to go on")
    what = (f"held-out decisions separated {facts['separation_before']:+.4f} -> {facts['separation_after']:+.4f} "
            f"(accepted minus rejected similarity; trained on {facts['train_pairs'][0]} accepted and "
            f"{facts['train_pairs'][1]} rejected windows)")
    if facts["written"] and args.out is None:
        print(f"this library's query adapter fine-tuned and kept beside its store (its scans use it); {what}; "
              "its threshold refitted from the same decisions")
    elif facts["written"]:
        print(f"wrote {args.out}: the query adapter fine-tuned; {what}. Use it with --model, and refit the "
              "threshold: tagmatch calibrate --from-decisions --model " + str(args.out))
    else:
        print(f"kept the model as it was (nothing written): {what}")
    return 0


def _calibrate_from_decisions(args) -> int:
    from tagmatch.jobs import learn_job
    from tagmatch.train.decisions import describe_library_fit

    if args.music or args.dev_corpus:
        raise TagmatchError("--from-decisions takes scans, not music folders or --dev-corpus")
    cal, facts = learn_job(store_arg(args.store), args.from_decisions or None, args.model)
    print(describe_library_fit(cal, facts))
    return 0


def cmd_index(args) -> int:
    from tagmatch.jobs import index_job

    with progress_bars(args.quiet) as on_progress, graceful_interrupt() as stopped:
        res = index_job(args.ref_dir, store_arg(args.store), args.model, on_progress=on_progress, should_stop=stopped,
                        backend=args.backend, n_jobs=args.jobs,
                        scheduler=args.scheduler, search=args.search, prune=args.prune, check=args.check)
    if res.stopped:
        err("interrupted: what was indexed so far is saved; run the same command to continue")
    store, report = res.store, res.report
    for file, reason, paths in res.repaired:
        redone = sum(p in report.added for p in paths)
        err(f"repaired: shard {file} {reason}; its {len(paths)} tracks were dropped, "
            f"{redone} of them embedded again from {args.ref_dir}")
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
    with progress_bars(args.quiet) as on_progress, graceful_interrupt() as stopped:
        res = scan_job(args.dir, store_arg(args.store), args.model, threshold=args.threshold,
                       json_path=json_path, on_progress=on_progress, should_stop=stopped, backend=args.backend,
                       n_jobs=args.jobs, scheduler=args.scheduler, whole_files=args.whole_files,
                       verify=not args.no_verify)
    results, store = res.results, res.store
    if res.search.startswith("exact:"):
        err(f"search {res.search}")
    if not results:
        raise TagmatchError("interrupted before the first file was matched")
    base = args.dir if args.dir.is_dir() else args.dir.parent
    width = min(48, max(len(visible(rel(m.path, base))) for m in results))
    for m in results:
        name = visible(rel(m.path, base)).ljust(width)
        if m.status == "match":
            print(f"{name}  {visible(describe(m, store))}  ({m.match.confidence:.2f})")
        elif m.status == "unknown":
            hint = f"  (best guess {visible(describe(m, store))}, {m.match.confidence:.2f})" if m.match else ""
            print(f"{name}  unknown{hint}")
        else:
            print(f"{name}  error: {visible(m.error)}")
    counts = {s: res.count(s) for s in ("match", "unknown", "error")}
    print(f"{len(results)} files: {counts['match']} matched, {counts['unknown']} unknown, {counts['error']} errors"
          + ("; interrupted, the rest was not scanned" if res.stopped else "")
          + f"; wrote {json_path} (review it: tagmatch review {json_path})", file=sys.stderr)
    return 1 if counts["error"] == len(results) else 0


def cmd_info(args) -> int:
    from tagmatch.model.calibration import library_calibration
    from tagmatch.store.ann import describe_search
    from tagmatch.model.modelfile import library_adapter, load_model
    from tagmatch.store.shards import Store

    store_path = store_arg(args.store)
    store = Store.load(store_path)
    model = load_model(args.model)
    ok = "matches the model in use" if store.model_id == model.model_id else "built with ANOTHER model"
    dtype = store.shards[0].vectors.dtype if store.shards else "int8"
    tuned = library_adapter(store.folder, model.model_id) is not None
    adapter = "this library's, fine-tuned from review decisions" if tuned else "the model's"
    model = model.for_library(store)
    own = library_calibration(store.folder, model.query_id)
    cal = own[0] if own else model.calibration
    where = (f"this library's, from {own[1].get('decisions', 0)} review decisions blended with the model's "
             "(tagmatch calibrate --from-decisions)" if own else "the model's")
    print(f"store   {store_path}\ntracks  {len(store.tracks)} ({store.hours:.2f} h)\n"
          f"vectors {store.n_vectors} x {store.dim} {dtype}\nmodel   {store.model_id} ({ok})\n"
          f"search  {describe_search(store)}\n"
          f"calibration {where}: mid {cal.mid:.4f}, width {cal.width:.4g}\n"
          f"query adapter {adapter}")
    return 0


def cmd_explain(args) -> int:
    """Match one file and draw the evidence for its best candidate as a PNG."""
    from tagmatch.jobs import evidence_job, open_store
    from tagmatch.match.decide import match_file
    from tagmatch.match.picture import save_png
    from tagmatch.match.scan import candidate_json, describe
    from tagmatch.model.modelfile import load_model
    from tagmatch.store.ann import searcher_for

    store_path = store_arg(args.store)
    model = load_model(args.model)
    store = open_store(store_path, model, must_exist=True)
    m = match_file(args.file, store, model, searcher=searcher_for(store))
    if m.status == "error":
        raise TagmatchError(f"{args.file}: {m.error}")
    if m.match is None:
        raise TagmatchError(f"{args.file}: no candidate at all in the store")
    pic = evidence_job(args.file, candidate_json(m.match, store), store_path, args.model, start_s=args.start)
    what = f"{describe(m, store)} ({m.status}, confidence {m.match.confidence:.2f})"
    out = args.out or Path(f"{args.file.stem}-evidence.png")
    w, h = save_png(pic, out, title=f"{args.file.name}: {what}")
    if pic.note:
        err(pic.note)
    print(f"wrote {visible(str(out))} ({w}x{h}): {visible(what)}; {pic.agreeing:.0%} of the windows above "
          "their background")
    return 0


def cmd_check(args) -> int:
    """Compare every checksum of the store; name the damaged shards (index repairs them)."""
    from tagmatch.store.folder import unchecked_shards
    from tagmatch.store.shards import Store

    store_path = store_arg(args.store)
    unchecked, damaged = unchecked_shards(store_path), []
    store = Store.load(store_path, verify="full", damaged=damaged)
    for file, reason, paths in damaged:
        err(f"shard {file} {reason}: its {len(paths)} tracks, the first {paths[0] if paths else '-'}")
    whole = f"{len(store.shards)} shards, {len(store.tracks)} tracks, {store.n_vectors} vectors"
    if unchecked:
        whole += f" ({unchecked} shards saved without checksums: `tagmatch index` adds them)"
    if damaged:
        print(f"{store_path}: {len(damaged)} damaged shard(s); whole: {whole}. Repair: tagmatch index REF_DIR "
              f"--store {store_path} --check (drops them and embeds their tracks again)")
        return 1
    print(f"{store_path}: every checksum matches: {whole}")
    return 0


def cmd_dupes(args) -> int:
    """Find duplicate recordings under the folders (or act on a saved report with --from)."""
    from tagmatch.dupes.quarantine import check_quarantine, quarantine_plan
    from tagmatch.dupes.reference import reference_of
    from tagmatch.dupes.report import DupesReport

    with contextlib.ExitStack() as held:
        if args.json:
            held.enter_context(document_lock(args.json))  # not while a review has it open
        if args.from_json:
            if args.dirs:
                raise TagmatchError("give folders or --from, not both")
            doc = DupesReport.read(args.from_json)
            for k in args.keep:  # what the Duplicates screen's "keep this one" does
                i = doc.find_group(k)
                doc.set_keeper(i, k)
                print(f"group {i + 1}: keep {visible(doc.groups[i]['keeper'])}", file=sys.stderr)
        else:
            if not args.dirs:
                raise TagmatchError("name at least one folder (or --from a saved report)")
            if args.json:
                check_writable(args.json)  # now, not after the search
            doc = _find_dupes(args)
            _print_dupes(doc)
        if args.json:
            doc.save(args.json)
            print(f"wrote {args.json}", file=sys.stderr)
    if not args.quarantine:
        return 0
    reference = reference_of(store_arg(args.store))  # its files are never moved, whatever the report says
    q = check_quarantine(doc, args.quarantine, reference)
    plan = quarantine_plan(doc, q, reference)
    print_plan(plan)
    if not plan.ops:
        print("nothing to move", file=sys.stderr)
        return 0
    if not args.yes:
        print(f"{len(plan.ops)} files to move to {q}. Dry run: nothing was changed; add --yes to move them.",
              file=sys.stderr)
        return 0
    return carry_out(plan, args, scan=f"dupes --quarantine {q}")


def _find_dupes(args) -> DupesReport:
    from tagmatch.jobs import dupes_job
    from tagmatch.store.shards import default_cache_store_path

    with progress_bars(args.quiet) as on_progress, graceful_interrupt() as stopped:
        doc = dupes_job(args.dirs, args.cache or default_cache_store_path(), args.model, keep=args.keep,
                        library_path=store_arg(args.store) if args.against_library else None,
                        reference_path=store_arg(args.store),
                        on_progress=on_progress, should_stop=stopped)
    if doc is None:
        raise TagmatchError("interrupted: the files embedded so far are cached; run the same command to go on")
    return doc


def _print_dupes(doc: DupesReport) -> None:
    import os

    roots = [Path(r) for r in doc.roots]
    base = Path(os.path.commonpath(roots)) if roots else Path.cwd()
    n_dup = sum(g["kind"] == "duplicate" for g in doc.groups)
    for g in doc.groups:
        print(f"{g['kind']} group ({len(g['files'])} files):")
        for f in g["files"]:
            keeper = f["path"] == g["keeper"]
            what = f"{f['format']}" + (f" {f['bitrate'] // 1000} kb/s" if f.get("bitrate") else "") + \
                (f", {f['duration_s']:.1f} s" if f.get("duration_s") else "")
            where = "keep" if keeper else f"shares {f['overlap_s']:.1f} s at {f['offset_s']:+.1f} s"
            if f.get("in_library"):
                where += ", in the reference library"
            print(f"  {'*' if keeper else ' '} {visible(rel(f['path'], base))}   ({visible(what)}; {where})")
    for h in doc.library or []:
        print(f"in library: {visible(rel(h['path'], base))} = {visible(h['library_path'])} "
              f"({visible(h['kind'])}, {h['overlap_s']:.1f} s)")
    print(f"{n_dup} duplicate group(s), {len(doc.groups) - n_dup} partial overlap(s)"
          + (f", {len(doc.library)} files already in the library" if doc.library is not None else ""), file=sys.stderr)

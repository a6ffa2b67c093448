"""The commands that change files or read documents, never loading JAX: apply, decide, undo, runs,
review, keys."""

from __future__ import annotations

import sys
from pathlib import Path

from tagmatch.cli.output import carry_out, err, print_plan, show
from tagmatch.errors import TagmatchError
from tagmatch.fsutil import document_lock
from tagmatch.textsafe import visible


def cmd_apply(args) -> int:
    from tagmatch.organize.journal import applied_sources, default_runs_dir
    from tagmatch.organize.plan import build_plan
    from tagmatch.organize.scandoc import ScanDoc

    doc = ScanDoc.read(args.scan)
    runs_dir = default_runs_dir()
    mode = "copy" if args.copy else ("move" if args.move else None)
    plan = build_plan(doc, min_confidence=args.min_confidence, template=args.template, dest=args.dest, mode=mode,
                      already_applied=applied_sources(runs_dir))
    print_plan(plan)
    if not plan.ops:
        if args.min_confidence is None and not any(f.get("decision") for f in doc.files):
            raise TagmatchError("nothing accepted: no file of the scan has a review decision; "
                                "pass --min-confidence X to accept matches at or above X")
        print("nothing to do", file=sys.stderr)
        return 0
    if not args.yes:
        print(f"{plan.summary}. Dry run: nothing was changed; add --yes to apply.", file=sys.stderr)
        return 0
    return carry_out(plan, args, scan=str(Path(args.scan).absolute()), id3v23=args.id3v23)


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


def _decide(args, edits: dict):
    """Read the scan, record the decisions, save it: (the document, the decided entries)."""
    from tagmatch.organize.plan import clear_decision, set_decision
    from tagmatch.organize.scandoc import ScanDoc

    doc = ScanDoc.read(args.scan)
    entries = [doc.entry(f) for f in args.files]
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
    doc.save(args.scan)
    return doc, entries


def cmd_decide(args) -> int:
    """Record a review decision in the scan JSON, as the Review screen's keys do, and show what
    `apply` will then do with the file(s)."""
    from tagmatch.organize.journal import applied_sources, default_runs_dir
    from dataclasses import replace

    from tagmatch.organize.plan import build_plan

    edits = _tag_edits(args.set, args.unset)
    editing = bool(edits) or args.path is not None
    if editing and (args.reject or args.clear):
        raise TagmatchError("--set, --unset and --path go with --accept (or alone), not --reject or --clear")
    if not (editing or args.reject or args.clear or args.accept is not None):
        raise TagmatchError("nothing to decide: give --accept [N], --reject, --clear, --set, --unset or --path")
    with document_lock(args.scan):  # not while a review (or another decide) has it open
        doc, entries = _decide(args, edits)
    plan = build_plan(replace(doc, files=entries), template=args.template, dest=args.dest,
                      already_applied=applied_sources(default_runs_dir()))
    print_plan(plan)
    print(f"saved {len(entries)} decision(s) to {args.scan}", file=sys.stderr)
    return 0


def cmd_undo(args) -> int:
    from tagmatch.organize.apply import undo_counts, undo_run
    from tagmatch.organize.journal import default_runs_dir, find_run

    info = find_run(default_runs_dir(), args.run)
    if info.in_flight:
        err(f"run {info.id} was cut short; {len(info.in_flight)} operation(s) were in flight:")
        for o in info.in_flight:
            err(f"  #{o.i} {o.src} -> {o.dst} ({'staged' if o.ready else 'started'})")
    results = []
    for r in undo_run(info):
        results.append(r)
        flight = " [was in flight]" if r.was_in_flight else ""
        if r.status == "undone":
            if not args.quiet:
                back = "" if r.op.entry.get("mode") == "copy" else f" -> {r.op.src}"
                print(visible(f"undone {r.op.dst}{back} ({r.message}){flight}"))
        else:
            err(f"refused #{r.op.i} {r.op.dst}: {r.message}{flight}")
    undone, refused = undo_counts(results)
    print(f"run {info.id}: {undone} undone, {refused} refused", file=sys.stderr)
    return 1 if refused and not undone else 0


def cmd_runs(args) -> int:
    from tagmatch.organize.journal import default_runs_dir, find_run, list_runs

    runs_dir = default_runs_dir()
    if args.run:
        info = find_run(runs_dir, args.run)
        h = info.header
        dest = f" to {h['dest']}" if h.get("dest") else ""
        print(visible(f"run {info.id}  {h.get('time')}  {h.get('mode')}{dest}  status {info.status}"))
        print(f"scan {visible(h.get('scan'))}\nfolder {visible(info.dir)}")
        for o in info.ops:
            print(f"#{o.i:<4} {o.state:<9} {visible(o.src)}\n       -> {visible(o.dst)}"
                  + (f"\n       {visible(o.reason)}" if o.reason else ""))
            for name, new in (o.entry.get("new_tags") or {}).items():
                print(f"       {visible(name)}: {show((o.entry.get('old_tags') or {}).get(name))} -> {show(new)}")
        return 0
    runs = list_runs(runs_dir)
    if not runs:
        print(f"no runs in {runs_dir}", file=sys.stderr)
        return 0
    for r in runs:
        print(visible(f"{r.id}  {r.when}  {r.header.get('n_ops', len(r.ops)):>4} ops  {r.status:<13} "
                      f"{r.counts or '-'}  ({r.how})"))
    return 0


def cmd_review(args) -> int:
    """Open the TUI's Review screen on a scan (decisions are saved into the scan JSON), or its
    Duplicates screen on a dupes report (keeper choices are saved into the report)."""
    from tagmatch.dupes.report import load_report
    from tagmatch.organize.naming import check_template

    load_report(args.scan)  # a bad file is reported here, before the screen takes over
    check_template(args.template)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):  # a UI with no keyboard would wait for ever
        raise TagmatchError("review needs a terminal (stdin and stdout); in a script, use "
                            "`tagmatch decide` and `tagmatch apply` instead")
    return run_tui(args.scan, template=args.template, dest=args.dest)


def cmd_keys(args) -> int:
    """List the TUI's key bindings by id, with the keys the config file gives them."""
    from tagmatch.config import config_path, keymap, load_config
    from tagmatch.tui.app import binding_table

    rows = binding_table()
    mine = keymap(load_config(), {r[0] for r in rows})
    width = max(len(r[0]) for r in rows)
    for bid, keys, what in rows:
        shown = visible(mine.get(bid, keys))  # the config file's text
        print(f"{bid.ljust(width)}  {shown:<28} {what}" + ("  (from the config)" if bid in mine else ""))
    print(f"remap in {config_path()}: a [keys] table of id = \"keys\" (comma-separated)", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    """The terminal UI in a browser (textual-serve): each page load starts its own app."""
    import ipaddress
    import shlex

    from textual_serve.server import Server

    if args.scan is not None:
        from tagmatch.dupes.report import load_report

        load_report(args.scan)  # a bad file is reported here, not in every browser
    command = shlex.join([sys.executable, "-m", "tagmatch.tui", *([str(args.scan.absolute())] if args.scan else [])])
    try:
        local = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        local = args.host == "localhost"
    if not local:
        err(f"serving on {args.host}: anyone who can reach port {args.port} there can rename, retag and move "
            "your files as you can; there is no login (see the README)")
    err(f"open http://{args.host}:{args.port} in a browser; Ctrl-C stops the server")
    Server(command, host=args.host, port=args.port, title="tagmatch").serve()
    return 0


def run_tui(scan: Path | None = None, **kw) -> int:
    from tagmatch.tui.app import TagmatchApp

    TagmatchApp(scan, **kw).run()
    return 0

"""What every command shares: stderr messages, rich progress bars for the jobs' steps, Ctrl-C that
stops after the current item, and the plan's printout. Text that came from a file (tags, file names,
paths, messages quoting them) is printed through `visible`, so its control characters are shown,
not obeyed by the terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from tagmatch.errors import TagmatchError
from tagmatch.fsutil import rel
from tagmatch.textsafe import visible


PROG = "tagmatch"


def console():
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
        err("stopping after the current item (Ctrl-C again to abort)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop.is_set
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def err(msg: str) -> None:
    """One line on stderr; `msg` often quotes a path or a tag, so it is made `visible` whole."""
    print(f"{PROG}: {visible(msg)}", file=sys.stderr)


def store_arg(arg: Path | None) -> Path:
    from tagmatch.store.shards import default_store_path

    return Path(arg) if arg else default_store_path()


def expand_sources(sources: list[Path]) -> list[Path]:
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


@contextmanager
def progress_bars(quiet: bool):
    """Yield an `on_progress` for the jobs (tagmatch.progress.Progress events): one rich bar per stage (done/total, rate, ETA) and each
    file's error on its own line; with `quiet`, only the errors."""
    if quiet:
        def errors_only(p):
            if p.error:
                err(f"{p.item}: {p.error}")
        yield errors_only
        return
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console(), transient=False) as prog:
        tasks: dict[str, int] = {}

        def on_progress(p):
            if p.stage not in tasks:
                tasks[p.stage] = prog.add_task(p.stage, total=p.total, info="")
            info = escape(visible(p.info or Path(p.item).name[:40]))  # the column reads rich markup
            prog.update(tasks[p.stage], completed=p.done, total=p.total, info=info)
            if p.error:
                prog.console.print(f"{PROG}: {visible(p.item)}: {visible(p.error)}", markup=False, highlight=False,
                                   soft_wrap=True)  # one line, however wide the terminal
        yield on_progress


def show(values) -> str:
    """Tag values as printed: '; '-separated, each `visible`."""
    return "(none)" if not values else "; ".join(visible(v) for v in values)


def print_plan(plan) -> None:
    """The plan as the user reviews it: one block per file, then what is skipped and why."""
    import os

    paths = [str(op.src) for op in plan.ops] + [str(op.dst) for op in plan.ops if not plan.dest]
    base = Path(os.path.commonpath([os.path.dirname(p) for p in paths])) if paths else Path.cwd()
    for op in plan.ops:
        dst = rel(str(op.dst), plan.dest) if plan.dest else rel(str(op.dst), base)
        why = op.why if "confidence" in op.why or op.confidence is None else f"{op.why}, confidence {op.confidence:.2f}"
        print(f"{plan.verb} {visible(rel(str(op.src), base))}\n  -> {visible(dst)}   ({visible(why)})")
        added = [f"{visible(c.name)}: {show(c.new)}" for c in op.tag_changes if c.old is None]
        if added:
            print("     + " + " | ".join(added))
        for c in op.tag_changes:
            if c.old is not None:
                print(f"     {'~' if c.new else '-'} {visible(c.name)}: {show(c.old)} -> {show(c.new)}")
        if op.art_from:
            print("     + cover art from the reference")
    for sk in plan.skipped:
        print(f"skip {visible(rel(sk.path, base))}   ({visible(sk.reason)})")


def carry_out(plan, args, *, scan: str, id3v23: bool = False) -> int:
    """Run an approved plan as a journaled, undoable run, with a progress bar."""
    import os

    from tagmatch.organize.apply import TEST_DELAY_ENV, RunOutcome, apply_plan, start_run
    from tagmatch.organize.journal import default_runs_dir

    run = start_run(plan, default_runs_dir(), scan=scan, id3v23=id3v23)
    delay = float(os.environ.get(TEST_DELAY_ENV) or 0)  # test-only: lets a test kill the run midway
    try:
        with progress_bars(args.quiet) as on_progress, graceful_interrupt() as stopped:
            results = list(apply_plan(plan, run, id3v23=id3v23, should_stop=stopped, delay_s=delay,
                                      on_progress=on_progress))
    except KeyboardInterrupt:
        err(f"run {run.id} stopped mid-operation; `tagmatch undo {run.id}` puts everything back")
        raise
    outcome = RunOutcome.of(run.id, results, len(plan.ops))
    print(outcome.line() + (f"; undo with: tagmatch undo {run.id}" if outcome.done else ""), file=sys.stderr)
    return 1 if outcome.failed and not outcome.done else 0

"""The Review screen's `w` (apply the accepted files) and `U` (undo this scan's last run).

A mixin of ReviewScreen, apart from the decisions: these change the user's files, in a worker
thread behind a confirmation, as `tagmatch apply` / `tagmatch undo` do.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.widgets import ProgressBar, Static
from textual.worker import get_current_worker

from tagmatch.errors import TagmatchError
from tagmatch.fsutil import rel
from tagmatch.organize.apply import undo_counts, undo_run
from tagmatch.organize.journal import applied_sources, find_run, list_runs
from tagmatch.organize.plan import Plan, build_plan
from tagmatch.tui.common import ConfirmScreen, carry_out


class ApplyAndUndoRun:
    """Needs the screen's doc, scan_path, template, dest, base, runs_dir, busy, last_run_id,
    and its _idle, _title, _refresh_applied and _fill."""

    def action_apply(self) -> None:
        if not self._idle():
            return
        try:
            plan = build_plan(self.doc, template=self.template, dest=self.dest,
                              already_applied=applied_sources(self.runs_dir))
        except TagmatchError as exc:
            self.notify(str(exc), severity="error")
            return
        if not plan.ops:
            self.notify(f"nothing to apply: accept files first ({len(plan.skipped)} skipped)", severity="warning")
            return
        base = plan.dest
        lines = [f"{plan.verb} {rel(op.src, self.base)}\n  -> {rel(op.dst, base or self.base)}"
                 + ("  (retag)" if op.retags else "") for op in plan.ops]
        title = f"Apply? {plan.summary} ({len(plan.skipped)} skipped; undoable)"

        def answered(yes: bool | None) -> None:
            if yes:
                self._begin("applying", len(plan.ops))
                self.apply_worker(plan)

        self.app.push_screen(ConfirmScreen(title, "\n".join(lines), yes="Apply"), answered)

    def _begin(self, what: str, total: int) -> None:
        self.busy = what
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=total, progress=0)
        bar.display = True
        self.query_one("#review-title", Static).update(self._title())

    def _progress(self, n: int) -> None:
        self.query_one("#progress", ProgressBar).update(progress=n)

    def _end(self, message: str, severity: str = "information") -> None:
        self.busy = ""
        self.query_one("#progress", ProgressBar).display = False
        self._refresh_applied()
        self._fill()
        self.query_one("#review-title", Static).update(self._title())
        self.notify(message, severity=severity, timeout=10)

    @work(thread=True, exclusive=True, exit_on_error=False, group="files")
    def apply_worker(self, plan: Plan) -> None:
        """Carry the plan out as a journaled run (off the UI thread); stops between operations
        when the worker is cancelled (the app quits)."""
        worker = get_current_worker()
        msg, severity, run_id, _ = carry_out(plan, str(self.scan_path.absolute()),
                                          lambda p: self.app.call_from_thread(self._progress, p.done),
                                          lambda: worker.is_cancelled)
        if run_id:
            self.last_run_id = run_id
        self.app.call_from_thread(self._end, msg if run_id else f"apply {msg}", severity)

    def _own_run(self) -> str | None:
        """The run to undo: the last applied here, else the latest not-undone run of this scan."""
        if self.last_run_id:
            return self.last_run_id
        mine = [r for r in list_runs(self.runs_dir) if r.header.get("scan") == str(self.scan_path.absolute())
                and r.status not in ("undone", "empty", "failed")]
        return mine[-1].id if mine else None

    def action_undo_run(self) -> None:
        if not self._idle():
            return
        try:
            run_id = self._own_run()
            if run_id is None:
                raise TagmatchError("no run of this scan to undo (see the Runs screen for others)")
            info = find_run(self.runs_dir, run_id)
        except TagmatchError as exc:
            self.notify(str(exc), severity="warning")
            return
        n = info.count("done") + len(info.in_flight)
        body = "\n".join(f"{rel(o.dst, self.base)}\n  -> {rel(o.src, self.base)}" for o in info.ops
                         if o.state in ("done", "in-flight"))

        def answered(yes: bool | None) -> None:
            if yes:
                self._begin("undoing", n)
                self.undo_worker(info.id)

        self.app.push_screen(ConfirmScreen(f"Undo run {info.id} ({n} operation(s))?", body, yes="Undo"), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="files")
    def undo_worker(self, run_id: str) -> None:
        try:
            results = []
            for r in undo_run(find_run(self.runs_dir, run_id)):
                results.append(r)
                self.app.call_from_thread(self._progress, len(results))
        except (TagmatchError, OSError) as exc:
            self.app.call_from_thread(self._end, f"undo failed: {exc}", "error")
            return
        undone, refused = undo_counts(results)
        if not refused:
            self.last_run_id = None
        msg = f"run {run_id}: {undone} undone, {refused} refused" + "".join(
            f"\n{Path(r.op.dst).name}: {r.message}" for r in results if r.status != "undone")
        self.app.call_from_thread(self._end, msg, "warning" if refused else "information")

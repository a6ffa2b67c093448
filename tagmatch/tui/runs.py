"""The Runs screen: past apply runs (as `tagmatch runs` lists them), and undo (`tagmatch undo`)."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tagmatch.organize.apply import undo_counts, undo_run
from tagmatch.errors import TagmatchError
from tagmatch.organize.journal import default_runs_dir, find_run, list_runs
from tagmatch.tui.common import ConfirmScreen, TableKeys, run_summary


class RunsScreen(TableKeys, Screen):
    """Newest run first; `u` undoes the highlighted one after a confirm."""

    BINDINGS = [
        Binding("u", "undo", "Undo run", id="runs.undo"),
        Binding("r", "reload", "Reload", id="runs.reload"),
        Binding("escape", "app.pop_screen", "Back", id="runs.back"),
        Binding("q", "app.quit", "Quit", id="runs.quit"),
        Binding("j", "move(1)", "Down", show=False, id="runs.down"),
        Binding("k", "move(-1)", "Up", show=False, id="runs.up"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Static("Runs", id="runs-title", markup=False)
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("Run", "Time", "Ops", "Status", "How"):
            table.add_column(label, key=label.lower())
        self.action_reload()
        table.focus()

    def action_reload(self) -> None:
        runs_dir = default_runs_dir()
        table = self.query_one(DataTable)
        table.clear()
        runs = list_runs(runs_dir)
        for r in reversed(runs):
            table.add_row(*run_summary(r), key=r.id)
        self.query_one("#runs-title", Static).update(
            f"Runs in {runs_dir}: {len(runs)}" + ("" if runs else " (none yet: apply a reviewed scan)"))

    def action_undo(self) -> None:
        table = self.query_one(DataTable)
        if self.busy or not table.row_count:
            return
        run_id = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        try:
            info = find_run(default_runs_dir(), run_id)
        except TagmatchError as exc:
            self.notify(str(exc), severity="error")
            return
        n = info.count("done") + len(info.in_flight)
        if not n:
            self.notify(f"run {run_id} has nothing to undo ({info.status})")
            return
        body = "\n".join(f"{o.dst}\n  -> {o.src}" for o in info.ops if o.state in ("done", "in-flight"))

        def answered(yes: bool | None) -> None:
            if yes:
                self.busy = True
                self.undo_worker(run_id)

        self.app.push_screen(ConfirmScreen(f"Undo run {run_id} ({n} operation(s))?", body, yes="Undo"), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="files")
    def undo_worker(self, run_id: str) -> None:
        try:
            results = list(undo_run(find_run(default_runs_dir(), run_id)))
        except (TagmatchError, OSError) as exc:
            self.app.call_from_thread(self._done, f"undo failed: {exc}", "error")
            return
        undone, refused = undo_counts(results)
        msg = f"run {run_id}: {undone} undone, {refused} refused" + "".join(
            f"\n{Path(r.op.dst).name}: {r.message}" for r in results if r.status != "undone")
        self.app.call_from_thread(self._done, msg, "warning" if refused else "information")

    def _done(self, message: str, severity: str) -> None:
        self.busy = False
        self.action_reload()
        self.notify(message, severity=severity, timeout=10)

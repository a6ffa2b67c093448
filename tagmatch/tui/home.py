"""The Home screen (`tagmatch` with no arguments): the store, recent runs, and where to go."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from tagmatch.errors import TagmatchError
from tagmatch.journal import default_runs_dir, list_runs
from tagmatch.plan import load_scan
from tagmatch.store import default_store_path
from tagmatch.tui.common import HelpScreen, run_summary

RECENT = 5


class HomeScreen(Screen):
    AUTO_FOCUS = None  # letters are keys here until `o` focuses the scan path box
    BINDINGS = [
        Binding("o", "open", "Open scan"),
        Binding("r", "runs", "Runs"),
        Binding("question_mark", "help", "Keys"),
        Binding("q", "app.quit", "Quit"),
        Binding("escape", "blur", "Leave the box", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="home"):
            yield Static("tagmatch: match messy audio files to a tagged reference library", id="home-title",
                         markup=False)
            yield Static("", id="store", markup=False)
            yield Static("", id="recent", markup=False)
            yield Static("Scan JSON to review (from `tagmatch scan DIR --json FILE`), then Enter:",
                         markup=False)
            yield Input(placeholder="path/to/scan.json", id="scan-path")
        yield Footer()

    def on_mount(self) -> None:
        path = default_store_path()
        if path.exists():
            self.query_one("#store", Static).update(f"Store {path}: loading...")
            self.load_store(path)
        else:
            self.query_one("#store", Static).update(f"No store yet at {path}: run `tagmatch index LIBRARY`.")
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        """Runs may have changed on another screen: list them again."""
        try:
            runs = list_runs(default_runs_dir())
        except TagmatchError as exc:
            runs, err = [], str(exc)
        else:
            err = ""
        lines = [f"Runs: {len(runs)}" + (" (r lists them all, to undo one)" if runs else " (none yet)")]
        lines += ["  " + "  ".join(run_summary(r)[:4]) for r in runs[::-1][:RECENT]]
        self.query_one("#recent", Static).update("\n".join(lines) + (f"\n{err}" if err else ""))

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load_store(self, path: Path) -> None:
        """Store.load reads every vector: off the UI thread."""
        from tagmatch.store import Store

        try:
            s = Store.load(path)
            text = f"Store {path}: {len(s.tracks)} tracks, {s.hours:.2f} h, model {s.model_id}"
        except Exception as exc:  # a broken store is reported, not fatal to the home screen
            text = f"Store {path}: cannot load ({exc})"
        self.app.call_from_thread(self.query_one("#store", Static).update, text)

    def action_open(self) -> None:
        self.query_one("#scan-path", Input).focus()

    def action_blur(self) -> None:
        self.set_focus(None)

    def action_runs(self) -> None:
        from tagmatch.tui.runs import RunsScreen

        self.app.push_screen(RunsScreen())

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen("Keys", "o    type a scan JSON path; Enter opens its review\n"
                                                "Esc  leave the path box\nr    past runs (undo one)\nq    quit"))

    @on(Input.Submitted, "#scan-path")
    def _open(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip()).expanduser()
        try:
            doc = load_scan(path)
        except TagmatchError as exc:
            self.notify(str(exc), severity="error")
            return
        self.set_focus(None)
        self.app.open_review(doc, path)

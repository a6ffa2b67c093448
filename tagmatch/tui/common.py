"""Pieces the TUI screens share: the yes/no modal and short path and run descriptions."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Static

from tagmatch.organize.journal import RunInfo


class ConfirmScreen(ModalScreen[bool]):
    """Ask before anything touches the user's files; dismisses with True (y/Enter) or False."""

    BINDINGS = [Binding("y,enter", "answer(True)", "Yes", id="confirm.yes"),
                Binding("n,escape", "answer(False)", "No", id="confirm.no")]

    def __init__(self, title: str, body: str = "", yes: str = "Yes") -> None:
        super().__init__()
        self.title_text, self.body, self.yes = title, body, yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="dialog-title", markup=False)
            if self.body:
                with VerticalScroll(id="dialog-body"):
                    yield Static(self.body, markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Static("[b]y[/b]/Enter: yes    [b]n[/b]/Esc: no", id="dialog-keys")
                yield Button(self.yes, variant="primary", id="yes", compact=True)
                yield Button("Cancel", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TableKeys:
    """j/k/g/G (the screen's `move`, `top`, `bottom` actions) on its one DataTable."""

    def action_move(self, step: int) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + step)))

    def action_top(self) -> None:
        self.query_one(DataTable).move_cursor(row=0)

    def action_bottom(self) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(row=max(0, table.row_count - 1))


class HoldsDocument:
    """A screen that edits a scan or a dupes report holds its lock (fsutil.document_lock) while
    it is open, so a `decide` or another review meanwhile is refused instead of saving over it."""

    document_lock = None  # the entered lock, set by the app before the screen is pushed

    def hold(self, path: Path) -> None:
        """Take the document's lock (TagmatchError with one line when another tagmatch has it)."""
        from tagmatch.fsutil import document_lock

        lock = document_lock(path)
        lock.__enter__()
        self.document_lock = lock

    def on_unmount(self) -> None:
        if self.document_lock is not None:
            self.document_lock.__exit__(None, None, None)
            self.document_lock = None


class FormScreen(ModalScreen[list[str] | None]):
    """A few labelled text fields with defaults (a folder to index, a number of steps): Enter
    submits all of them, Tab moves between them, Esc cancels (dismisses with None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="form.cancel")]

    def __init__(self, title: str, fields: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text, self.fields = title, fields

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="dialog-title", markup=False)
            for n, (label, value) in enumerate(self.fields):
                yield Static(label, classes="form-label", markup=False)
                yield Input(value=value, id=f"field-{n}", compact=True)
            yield Static("Enter: go    Tab: next field    Esc: cancel", id="dialog-keys", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss([self.query_one(f"#field-{n}", Input).value for n in range(len(self.fields))])

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """A screen's keys, over it; any of Esc, ?, q, Enter closes it."""

    BINDINGS = [Binding("escape,question_mark,q,enter", "dismiss", "Close", id="help.close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="dialog-title", markup=False)
            yield Static(self.text, markup=False)
            yield Static("Esc or ? closes", id="dialog-keys", markup=False)


def run_summary(r: RunInfo) -> tuple[str, str, str, str, str]:
    """(id, time, ops, status, how) as `tagmatch runs` shows them."""
    return (r.id, r.when, str(r.header.get("n_ops", len(r.ops))), r.status + (f" ({r.counts})" if r.counts else ""),
            r.how)


def carry_out(plan, scan: str, on_progress, cancelled, done_word: str = "done") -> tuple[str, str, str | None, int]:
    """Run an approved plan as a journaled run (call it in a worker thread), as the CLI's
    `apply --yes` / `dupes --quarantine --yes` do, `on_progress` getting each operation's Progress:
    (message, severity, run id or None, files done)."""
    from tagmatch.organize.apply import RunOutcome, apply_plan, start_run
    from tagmatch.errors import TagmatchError
    from tagmatch.organize.journal import default_runs_dir

    try:
        run = start_run(plan, default_runs_dir(), scan=scan)
        results = []
        for r in apply_plan(plan, run, should_stop=cancelled, on_progress=on_progress):
            results.append(r)
    except (TagmatchError, OSError) as exc:
        return f"failed: {exc}", "error", None, 0
    outcome = RunOutcome.of(run.id, results, len(plan.ops))
    msg = outcome.line(done_word) + "".join(f"\n{Path(r.src).name}: {r.message}" for r in outcome.failed[:3])
    return msg, "warning" if outcome.failed or outcome.left else "information", run.id, outcome.done


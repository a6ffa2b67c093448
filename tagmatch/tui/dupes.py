"""The Duplicates screen: a dupes report's groups, the keeper of each, and moving the extra copies aside.

A front end to what `tagmatch dupes` does: "keep this one" is `DupesReport.set_keeper`, saved at
once (as `dupes --from R.json --keep PATH --json R.json`), and moving aside is
`dupes.check_quarantine` + `dupes.quarantine_plan` run with `apply.apply_plan` as a journaled run
(as `dupes --from R.json --quarantine DIR --yes`), so `tagmatch undo` and the Runs screen undo it.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, ProgressBar, Static
from textual.worker import get_current_worker

from tagmatch.dupes.quarantine import check_quarantine, quarantine_plan
from tagmatch.dupes.reference import reference_of
from tagmatch.store.shards import default_store_path
from tagmatch.dupes.keeper import keeper_reason
from tagmatch.dupes.report import DupesReport
from tagmatch.errors import TagmatchError
from tagmatch.fsutil import common_folder, rel
from tagmatch.organize.plan import Plan
from tagmatch.tui.common import ConfirmScreen, FormScreen, HelpScreen, HoldsDocument, TableKeys, carry_out

WIDE, DETAIL_W = 140, 46  # from this width on the detail pane sits on the right (the table needs more than Review's)
QUARANTINE_NAME = "tagmatch-quarantine"
# (label, key, width); the file column (width None) takes what is left
COLUMNS = (("#", "group", 2), ("Kind", "kind", 4), (" ", "keep", 1), ("File", "file", None),
           ("Fmt kb/s", "format", 10), ("Length", "length", 6), ("Shares", "shares", 16))

HELP = """\
j k g G   down, up, first, last (arrows work too)
K, Enter  keep the highlighted file: the other files of its
          group are the ones moved aside (saved at once)
m         move every duplicate group's extra copies to a
          folder outside the scanned ones: asks for it,
          lists the moves, asks again; nothing is deleted
r         past runs: undo a move (or `tagmatch undo`)
?         this help     Esc  back     q  quit
Partial overlaps are never moved, so they have no keeper.
"Shares" is measured against the group's first file."""


def length(seconds: float | None) -> str:
    if not seconds:
        return ""
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def quality(f: dict, long: bool = False) -> str:
    """'flac 644' (kb/s) for the table, 'flac 644 kb/s' for the detail pane."""
    kbps = f"{f['bitrate'] // 1000}" + (" kb/s" if long else "") if f.get("bitrate") else ""
    return f"{f.get('format') or '?'} {kbps}".strip()


def shares(f: dict, long: bool = False) -> str:
    """'12.0s at +3.5s' for the table, 'shares 12.0 s at +3.5 s' for the detail pane."""
    if f.get("overlap_s") is None:
        return ""
    s = " s" if long else "s"
    return ("shares " if long else "") + f"{f['overlap_s']:.1f}{s} at {f.get('offset_s') or 0:+.1f}{s}"


def fit(path: str, width: int | None) -> str:
    """Cut from the left: the file name is what tells copies apart."""
    return path if not width or len(path) <= width else "…" + path[len(path) - width + 1:]


def tag_line(tags: dict | None) -> str:
    def one(v) -> str:
        return "; ".join(map(str, v)) if isinstance(v, list) else str(v or "")

    tags = tags or {}
    title, artist, album = one(tags.get("title")), one(tags.get("artist")), one(tags.get("album"))
    if not (title or artist or album):
        return "no tags"
    return " - ".join(x for x in (artist, title) if x) + (f" ({album})" if album else "")


def default_quarantine(doc: DupesReport, base: Path) -> Path:
    """A folder beside the scanned ones (inside none of them), for the folder prompt."""
    roots = [Path(r) for r in doc.roots]
    for cand in (base / QUARANTINE_NAME, base.parent / QUARANTINE_NAME):
        if not any(cand == r or cand.is_relative_to(r) for r in roots):
            return cand
    return base.parent / QUARANTINE_NAME


class DupesScreen(HoldsDocument, TableKeys, Screen):
    """One row per file of every group; the detail pane shows the highlighted file's group."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    BINDINGS = [
        # priority: Enter would otherwise "select" the table row
        Binding("K,enter", "keep", "Keep", id="dupes.keep", priority=True),
        Binding("m", "move_aside", "Move aside", id="dupes.move"),
        Binding("r", "runs", "Runs", id="dupes.runs"),
        Binding("question_mark", "help", "Keys", id="dupes.help"),
        Binding("q", "app.quit", "Quit", id="dupes.quit"),
        Binding("j", "move(1)", "Down", show=False, id="dupes.down"),
        Binding("k", "move(-1)", "Up", show=False, id="dupes.up"),
        Binding("g", "top", "First", show=False, id="dupes.first"),
        Binding("G", "bottom", "Last", show=False, id="dupes.last"),
        Binding("escape", "back", "Back", show=False, id="dupes.back"),
    ]

    def __init__(self, doc: DupesReport, path: Path) -> None:
        super().__init__()
        self.doc, self.path = doc, Path(path)
        self.groups: list[dict] = doc.groups
        roots = doc.roots
        self.base = (Path(os.path.commonpath(roots)) if roots
                     else common_folder([f["path"] for g in self.groups for f in g["files"]]) or Path.cwd())
        self.library = {h.get("path"): h for h in doc.library or []}
        self.busy = ""  # "moving" while a worker runs
        self._widths: tuple[int, ...] | None = None

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="dupes-title", markup=False)
        with Horizontal(id="dupes-body"):
            yield DataTable(id="dupes-files", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="dupes-detail-box"):
                yield Static(id="dupes-detail", markup=False)
        yield ProgressBar(id="dupes-progress", show_eta=False)
        yield Footer(compact=True)

    def _to_move(self) -> int:
        return sum(f["path"] != g["keeper"] and os.path.exists(f["path"])
                   for g in self.groups if g.get("kind") == "duplicate" for f in g["files"])

    def _title(self) -> str:
        n_dup = sum(g.get("kind") == "duplicate" for g in self.groups)
        return (f"{self.path.name}: {n_dup} duplicate groups, {len(self.groups) - n_dup} partial overlaps, "
                f"{self._to_move()} files to move aside" + (f"  [{self.busy}...]" if self.busy else ""))

    def on_mount(self) -> None:
        self._columns(self.app.size.width)
        self.query_one(DataTable).focus()

    def on_resize(self, event) -> None:
        self._columns(event.size.width)

    def _columns(self, width: int) -> None:
        """Fixed widths that fit the table's share of the screen; the file column gets the rest."""
        table_w = width - (DETAIL_W + 1 if width >= WIDE else 0)
        fixed = sum(w for _, _, w in COLUMNS if w)
        room = max(16, table_w - 2 - 2 * len(COLUMNS) - fixed)  # scrollbar, cell padding
        widths = tuple(w or room for _, _, w in COLUMNS)
        if widths == self._widths:
            return
        self._widths = widths
        table = self.query_one(DataTable)
        keep = self._current()
        table.clear(columns=True)
        for (label, key, _), w in zip(COLUMNS, widths):
            table.add_column(label, key=key, width=w)
        for gi, g in enumerate(self.groups):
            for fi in range(len(g["files"])):
                table.add_row(*self._cells(gi, fi), key=f"{gi}:{fi}")
        if keep is not None:
            table.move_cursor(row=table.get_row_index(f"{keep[0]}:{keep[1]}"))
        self._update_detail()

    # ---- rows and detail -----------------------------------------------------------------------
    def _cells(self, gi: int, fi: int) -> list[Text]:
        g = self.groups[gi]
        f = g["files"][fi]
        dup = g.get("kind") == "duplicate"
        gone = not os.path.exists(f["path"])
        return [Text(str(gi + 1), style="" if fi == 0 else "dim"),
                Text("dup" if dup else "part", style="" if dup else "yellow"),
                Text("*" if dup and f["path"] == g["keeper"] else " ", style="bold green"),
                Text(fit(rel(f["path"], self.base), self._widths and self._widths[3]),
                     style="dim strike" if gone else ""),
                Text(quality(f)), Text(length(f.get("duration_s"))), Text(shares(f))]

    def _redraw(self, groups) -> None:
        table = self.query_one(DataTable)
        for gi in groups:
            for fi in range(len(self.groups[gi]["files"])):
                for (_, key, _), value in zip(COLUMNS, self._cells(gi, fi)):
                    table.update_cell(f"{gi}:{fi}", key, value)
        self.query_one("#dupes-title", Static).update(self._title())
        self._update_detail()

    def _current(self) -> tuple[int, int] | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        gi, fi = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value.split(":")
        return int(gi), int(fi)

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_detail()

    def _update_detail(self) -> None:
        cur = self._current()
        self.query_one("#dupes-detail", Static).update(self.detail_text(*cur) if cur else Text("no duplicates found"))

    def detail_text(self, gi: int, fi: int) -> Text:
        """The highlighted file's group: every member's facts, which one is kept and why."""
        g = self.groups[gi]
        dup = g.get("kind") == "duplicate"
        t = Text()
        t.append(f"Group {gi + 1} of {len(self.groups)}: ", style="bold")
        t.append(f"{'duplicate' if dup else 'partial overlap'}, {len(g['files'])} files\n")
        for n, f in enumerate(g["files"]):
            kept = dup and f["path"] == g["keeper"]
            t.append(">" if n == fi else " ", style="bold")
            t.append("* " if kept else "  ", style="bold green")
            t.append(rel(f["path"], self.base) + "\n", style="bold" if n == fi else "")
            facts = [quality(f, long=True), length(f.get("duration_s")), tag_line(f.get("tags"))]
            if shares(f):
                facts.append(shares(f, long=True))
            t.append("    " + ", ".join(x for x in facts if x) + "\n", style="dim")
            if f["path"] in self.library:
                t.append(f"    in the library: {Path(self.library[f['path']]['library_path']).name}\n",
                         style="cyan")
            if not os.path.exists(f["path"]):
                t.append("    not there any more (moved aside?)\n", style="yellow")
        if not dup:
            t.append("a shared stretch only: never moved, so no keeper to choose\n", style="yellow")
            return t
        pick, why = keeper_reason(g["files"])
        if pick == g["keeper"]:
            t.append(f"* kept by the keeper rule: {why}\n", style="green")
        else:
            t.append(f"* kept by your choice; the rule would keep {rel(pick, self.base)} ({why})\n", style="green")
        if g["keeper"] != g["files"][0]["path"]:
            t.append(f"shares: measured against {rel(g['files'][0]['path'], self.base)}\n", style="dim")
        return t

    # ---- keys ----------------------------------------------------------------------------------
    def _idle(self) -> bool:
        if self.busy:
            self.notify(f"{self.busy}: wait until it finishes", severity="warning")
        return not self.busy

    def action_keep(self) -> None:
        """The highlighted file becomes its group's keeper, saved to the report at once."""
        cur = self._current()
        if cur is None or not self._idle():
            return
        gi, fi = cur
        try:
            self.doc.set_keeper(gi, self.groups[gi]["files"][fi]["path"])
        except TagmatchError as exc:
            self.notify(str(exc), severity="warning")
            return
        try:
            self.doc.save(self.path)
        except (OSError, TagmatchError) as exc:
            self.notify(f"could not save {self.path}: {exc}", severity="error", timeout=10)
        self._redraw([gi])

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen("Duplicates keys", HELP))

    def action_runs(self) -> None:
        from tagmatch.tui.runs import RunsScreen

        self.app.push_screen(RunsScreen())

    def on_screen_resume(self) -> None:
        """A run may have been undone on the Runs screen: files are back."""
        if self._widths is not None:
            self._redraw(range(len(self.groups)))

    # ---- moving aside --------------------------------------------------------------------------
    def action_move_aside(self) -> None:
        if self._idle():
            form = FormScreen("Move the extra copies to which folder?",
                              [("A folder outside every scanned one (paths below it are kept; nothing is deleted):",
                                str(default_quarantine(self.doc, self.base)))])
            self.app.push_screen(form, self._folder_given)

    def _folder_given(self, fields: list[str] | None) -> None:
        folder = (fields or [""])[0].strip()
        if not folder:
            return
        try:
            reference = reference_of(default_store_path())  # its files are never moved
            q = check_quarantine(self.doc, folder, reference)
            plan = quarantine_plan(self.doc, q, reference)
        except TagmatchError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        if not plan.ops:
            self.notify("nothing to move" + (f" ({len(plan.skipped)} skipped)" if plan.skipped else ""),
                        severity="warning")
            return
        lines = [f"move {rel(op.src, self.base)}\n  -> {rel(op.dst, q)}" for op in plan.ops]
        lines += [f"skip {rel(s.path, self.base)} ({s.reason})" for s in plan.skipped]
        title = f"Move {len(plan.ops)} file(s) to {q}? (keepers stay; undoable)"

        def answered(yes: bool | None) -> None:
            if yes:
                self._begin(len(plan.ops))
                self.move_worker(plan)

        self.app.push_screen(ConfirmScreen(title, "\n".join(lines), yes="Move"), answered)

    def _begin(self, total: int) -> None:
        self.busy = "moving"
        bar = self.query_one("#dupes-progress", ProgressBar)
        bar.update(total=total, progress=0)
        bar.display = True
        self.query_one("#dupes-title", Static).update(self._title())

    def _progress(self, n: int) -> None:
        self.query_one("#dupes-progress", ProgressBar).update(progress=n)

    def _end(self, message: str, severity: str = "information") -> None:
        self.busy = ""
        self.query_one("#dupes-progress", ProgressBar).display = False
        self._redraw(range(len(self.groups)))
        self.notify(message, severity=severity, timeout=10)

    @work(thread=True, exclusive=True, exit_on_error=False, group="files")
    def move_worker(self, plan: Plan) -> None:
        """Carry the moves out as a journaled run, as `tagmatch dupes --quarantine DIR --yes` does
        (off the UI thread; stops between files when the worker is cancelled)."""
        worker = get_current_worker()
        msg, severity, run_id, done = carry_out(plan, f"dupes --quarantine {plan.dest}",
                                                lambda p: self.app.call_from_thread(self._progress, p.done),
                                                lambda: worker.is_cancelled, done_word="moved")
        if done:
            msg += f"\nundo: r (Runs) or `tagmatch undo {run_id}`"
        self.app.call_from_thread(self._end, msg if run_id else f"move {msg}", severity)

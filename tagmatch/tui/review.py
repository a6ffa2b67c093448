"""The Review screen: walk a scan's suggestions, decide, apply, undo.

Every decision goes through `plan.set_decision` and is saved to the scan JSON at once (so a
restart loses nothing, and `tagmatch apply SCAN` sees the same decisions); applying builds the
plan with `plan.build_plan` and runs it with `apply.apply_plan`, exactly as `tagmatch apply`.
What a row and the detail pane show is in review_entry; `w` and `U` are in review_apply.
"""

from __future__ import annotations

import copy
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, ProgressBar, Static

from tagmatch.errors import TagmatchError
from tagmatch.fsutil import common_folder, rel
from tagmatch.organize.journal import applied_sources, default_runs_dir
from tagmatch.organize.naming import DEFAULT_TEMPLATE
from tagmatch.organize.plan import (PlannedOp, clear_decision, preview, replace_decision, resulting_tags,
                                    set_decision)
from tagmatch.organize.scandoc import ScanDoc
from tagmatch.tui.common import HelpScreen, HoldsDocument, TableKeys
from tagmatch.tui.evidence import EvidencePane
from tagmatch.tui.edit import Edit, EditScreen
from tagmatch.tui.review_apply import ApplyAndUndoRun
from tagmatch.tui.review_entry import (SURE, candidates, chosen, chosen_candidate, entry_detail, name_of, norm_path,
                                       row_cells, status_text)

WIDE, DETAIL_W = 110, 46  # from this width on, the detail pane (this wide) sits right of the table
EVIDENCE_MIN_ROWS = 30  # and from this height on, the evidence pane is shown without asking (`v`)
STATUS_W = 11
COLUMNS = ((" ", "mark"), ("File", "file"), ("Suggestion", "suggestion"), ("Conf", "conf"), ("Status", "status"))

HELP = """\
a, Enter  accept the suggestion (matched files only)
x         reject
1 2 3     accept that alternative instead
space     mark / unmark the row
A         accept the marked rows (none marked: the unreviewed
          matches with confidence >= 0.9 that are shown)
e         edit tags / new path by hand (an unknown file too)
u         undo the last decision (an A batch at once)
/         filter rows by text (Enter keeps, Esc clears)
s         sort: file, suggestion, confidence, status, scan
          order (a click on a column header sorts by it)
j k g G   down, up, first, last (arrows work too)
w         apply the accepted files (lists them, asks first)
U         undo this scan's last run (asks first)
Esc       back to Home        q  quit
Decisions are saved to the scan JSON at once."""


class ReviewTable(DataTable):
    """The file list. Enter accepts (DataTable's own Enter would 'select', and a click on the
    highlighted row would too: a decision should take a key)."""

    BINDINGS = [Binding("enter", "screen.accept", "Accept", show=False, id="review.enter_accepts")]


class ReviewScreen(HoldsDocument, ApplyAndUndoRun, TableKeys, Screen):
    """One scan's files, a detail pane for the highlighted one, and the keys to decide."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    BINDINGS = [
        Binding("a", "accept", "Accept", id="review.accept"),
        Binding("x", "reject", "Reject", id="review.reject"),
        Binding("e", "edit", "Edit", id="review.edit"),
        Binding("1", "alternative(1)", "Alt 1", show=False, id="review.alt1"),
        Binding("2", "alternative(2)", "Alt 2", show=False, id="review.alt2"),
        Binding("3", "alternative(3)", "Alt 3", show=False, id="review.alt3"),
        Binding("space", "mark", "Mark", key_display="␣", id="review.mark"),
        Binding("A", "accept_all", "All", id="review.accept_all"),
        Binding("u", "undo_decision", "Undo", id="review.undo_decision"),
        Binding("w", "apply", "Apply", id="review.apply"),
        Binding("U", "undo_run", "Undo run", id="review.undo_run"),
        # `/` is listed in ? help, not in the footer: the footer keeps q at 80 columns
        Binding("v", "evidence", "Evidence", id="review.evidence"),
        Binding("slash", "filter", "Filter", show=False, id="review.filter"),
        Binding("s", "sort", "Sort", show=False, id="review.sort"),
        Binding("question_mark", "help", "Keys", id="review.help"),
        Binding("q", "app.quit", "Quit", id="review.quit"),
        Binding("j", "move(1)", "Down", show=False, id="review.down"),
        Binding("k", "move(-1)", "Up", show=False, id="review.up"),
        Binding("g", "top", "First", show=False, id="review.top"),
        Binding("G", "bottom", "Last", show=False, id="review.bottom"),
        Binding("escape", "escape", "Back", show=False, id="review.escape"),
    ]

    def __init__(self, doc: ScanDoc, scan_path: Path, *, template: str = DEFAULT_TEMPLATE,
                 dest: Path | None = None) -> None:
        super().__init__()
        self.doc, self.scan_path = doc, Path(scan_path)
        self.template, self.dest = template, (Path(dest).absolute() if dest else None)
        self.files: list[dict] = doc.files
        self.base = common_folder([str(f.get("path")) for f in self.files])
        self.marked: set[int] = set()
        self.undo_stack: list[list[tuple[int, dict | None]]] = []  # one entry per key press
        self.filter_text = ""
        self.sort_by: str | None = None  # a COLUMNS key; None: the scan's order
        self.sort_reverse = False
        self.busy = ""  # what a worker is doing ("applying", "undoing"), "" when idle
        self.last_run_id: str | None = None
        self.applied: dict[str, tuple[str, str]] = {}
        self._previews: dict[tuple[int, int], PlannedOp | str] = {}
        self._widths: tuple[int, ...] | None = None

    @property
    def runs_dir(self) -> Path:
        return default_runs_dir()

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="review-title", markup=False)
        with Horizontal(id="review-body"):
            yield ReviewTable(id="files", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="detail-box"):
                yield EvidencePane(self.doc.store or None, id="evidence")  # first: what `v` is for
                yield Static(id="detail", markup=False)
        yield Input(placeholder="filter: text in the file name or suggestion (Enter: keep, Esc: clear)",
                    id="filter")
        yield ProgressBar(id="progress", show_eta=False)
        yield Footer(compact=True)

    def _title(self) -> str:
        counts = {"accepted": 0, "rejected": 0}
        for f in self.files:
            s = (f.get("decision") or {}).get("status")
            if s in counts:
                counts[s] += 1
        order = f", by {self.sort_by}{' (reversed)' if self.sort_reverse else ''}" if self.sort_by else ""
        return (f"Review {self.scan_path.name}: {len(self.files)} files, {counts['accepted']} accepted, "
                f"{counts['rejected']} rejected{order}" + (f"  [{self.busy}...]" if self.busy else ""))

    def on_mount(self) -> None:
        self._refresh_applied()
        self._columns(self.app.size.width)
        width, height = self.app.size
        self.set_class(width >= WIDE and height >= EVIDENCE_MIN_ROWS, "-evidence")  # room for it: shown
        self.query_one(ReviewTable).focus()

    def action_evidence(self) -> None:
        """Show or hide the evidence pane (spectrograms and similarity of the highlighted file)."""
        self.set_class(not self.has_class("-evidence"), "-evidence")
        self._update_detail()

    def on_resize(self, event) -> None:
        self._columns(event.size.width)

    def _columns(self, width: int) -> None:
        """Fixed column widths that fit the table's share of the screen (no sideways scroll)."""
        table_w = width - (DETAIL_W + 1 if width >= WIDE else 0)
        room = max(20, table_w - 2 - 10 - 1 - 4 - STATUS_W)  # scrollbar, cell padding, fixed columns
        widths = (1, room * 2 // 5, room - room * 2 // 5, 4, STATUS_W)
        if self._widths == widths:
            return
        self._widths = widths
        table = self.query_one(ReviewTable)
        keep = self._current()
        table.clear(columns=True)
        for (label, key), w in zip(COLUMNS, widths):
            table.add_column(label, key=key, width=w)
        self._fill(keep)

    # ---- rows ----------------------------------------------------------------------------------
    def _refresh_applied(self) -> None:
        try:
            self.applied = applied_sources(self.runs_dir)
        except TagmatchError as exc:
            self.applied = {}
            self.notify(str(exc), severity="error")
        self._previews.clear()

    def _status(self, i: int) -> Text:
        return status_text(self.files[i], self.applied)

    def _cells(self, i: int) -> list:
        return row_cells(self.files[i], i in self.marked, self.base, self.applied)

    def _visible(self, i: int) -> bool:
        if not self.filter_text:
            return True
        entry = self.files[i]
        hay = f"{rel(str(entry.get('path')), self.base)} {name_of(candidates(entry)[chosen(entry)])}".lower()
        return self.filter_text.lower() in hay

    def _sort_value(self, i: int):
        f = self.files[i]
        if self.sort_by == "file":
            return Path(f["path"]).name.lower()
        if self.sort_by == "suggestion":
            return name_of(chosen_candidate(f)).lower()
        if self.sort_by == "conf":
            return (chosen_candidate(f) or {}).get("confidence") or -1.0
        return self._status(i).plain

    def _order(self) -> list[int]:
        """Row order: the scan's, or by the sort column (a decision does not move its row: the
        order is made again on the next sort or filter)."""
        rows = list(range(len(self.files)))
        if self.sort_by:
            rows.sort(key=self._sort_value, reverse=self.sort_reverse)
        return rows

    def _fill(self, keep: int | None = None) -> None:
        """(Re)build the table: the rows that pass the filter; the cursor stays on its file."""
        table = self.query_one(ReviewTable)
        keep = self._current() if keep is None else keep
        table.clear()
        for i in self._order():
            if self._visible(i):
                table.add_row(*self._cells(i), key=str(i))
        if keep is not None and self._visible(keep):
            table.move_cursor(row=table.get_row_index(str(keep)))
        self._update_detail()

    def _redraw(self, rows) -> None:
        table = self.query_one(ReviewTable)
        rows = set(rows)
        for key in [k for k in self._previews if k[0] in rows]:  # a decision's edits change the preview
            del self._previews[key]
        for i in rows:
            if str(i) in table.rows:
                for (_, key), value in zip(COLUMNS, self._cells(i)):
                    table.update_cell(str(i), key, value)
        self.query_one("#review-title", Static).update(self._title())
        self._update_detail()

    def _current(self) -> int | None:
        table = self.query_one(ReviewTable)
        if not table.row_count:
            return None
        return int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    # ---- detail pane -----------------------------------------------------------------------------
    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_detail()

    def _preview(self, i: int, choice: int) -> PlannedOp | str:
        if (i, choice) not in self._previews:
            try:
                self._previews[i, choice] = preview(self.files[i], choice, template=self.template, dest=self.dest)
            except TagmatchError as exc:
                self._previews[i, choice] = str(exc)
        return self._previews[i, choice]

    def _update_detail(self) -> None:
        i = self._current()
        self.query_one("#detail", Static).update(self.detail_text(i) if i is not None else Text("no rows"))
        if i is not None and self.has_class("-evidence"):
            self.query_one(EvidencePane).show(self.files[i], chosen_candidate(self.files[i]), chosen(self.files[i]))

    def detail_text(self, i: int) -> Text:
        """What the highlighted file would become: tag diff, new path, alternatives, evidence."""
        return entry_detail(self.files[i], self.base, self.dest, self.applied,
                            lambda choice: self._preview(i, choice))

    # ---- decisions -------------------------------------------------------------------------------
    def _idle(self) -> bool:
        if self.busy:
            self.notify(f"{self.busy}: wait until it finishes", severity="warning")
        return not self.busy

    def _decide(self, changes: list[tuple[int, str, int]], tags: dict | None = None,
                new_path: str | None = None) -> None:
        """Record (row, 'accepted'|'rejected', choice) decisions as one undoable step, and save
        (`tags` and `new_path`, the edit form's, go to every row of `changes`)."""
        undo: list[tuple[int, dict | None]] = []
        errors = []
        for i, status, choice in changes:
            entry = self.files[i]
            before = copy.deepcopy(entry.get("decision"))
            try:
                set_decision(self.doc, entry["path"], status, choice=choice, tags=tags, new_path=new_path)
            except TagmatchError as exc:
                errors.append(str(exc))
                continue
            undo.append((i, before))
        for e in errors[:3]:
            self.notify(e, severity="error")
        if undo:
            self.undo_stack.append(undo)
            self._save()
            self._redraw(i for i, _ in undo)

    def _save(self) -> None:
        try:
            self.doc.save(self.scan_path)
        except (OSError, TagmatchError) as exc:
            self.notify(f"could not save {self.scan_path}: {exc}", severity="error", timeout=10)

    def _acceptable(self, i: int) -> bool:
        status = self.files[i].get("status")
        if status != "match":
            self.notify(f"only matched files can be accepted ({rel(self.files[i]['path'], self.base)} is "
                        f"{status}); x rejects it", severity="warning")
        return status == "match"

    def action_accept(self) -> None:
        i = self._current()
        if i is not None and self._idle() and self._acceptable(i):
            self._decide([(i, "accepted", 0)])

    def action_alternative(self, n: int) -> None:
        i = self._current()
        if i is not None and self._idle() and self._acceptable(i):
            self._decide([(i, "accepted", n)])

    def action_edit(self) -> None:
        """Type the tags or the new path by hand (the form shows what the file would get now);
        saving accepts the file with those overrides, an undoable step like any decision."""
        i = self._current()
        if i is None or not self._idle():
            return
        entry = self.files[i]
        name = rel(str(entry.get("path")), self.base)
        if entry.get("status") not in ("match", "unknown"):
            self.notify(f"{name} has status {entry.get('status')}: it cannot be applied, so not edited",
                        severity="warning")
            return
        d = entry.get("decision") or {}
        old = d if d.get("status") == "accepted" else {}
        choice, overrides = chosen(entry), old.get("tags") or {}
        op = self._preview(i, choice)
        src = Path(norm_path(str(entry.get("path"))))
        path = rel(op.dst, self.dest or src.parent) if isinstance(op, PlannedOp) else (old.get("path") or src.name)
        what = "tags by hand: the library lacks it" if entry.get("status") == "unknown" else \
            f"from {name_of(candidates(entry)[choice])}"
        try:
            base, current = resulting_tags(entry, choice), resulting_tags(entry, choice, overrides)
        except TagmatchError as exc:
            self.notify(str(exc), severity="error")
            return

        def saved(edit: Edit | None) -> None:
            if edit is not None:
                new_path = old.get("path") if edit.path is None else edit.path
                self._decide([(i, "accepted", choice)], tags=edit.tags, new_path=new_path or None)

        self.app.push_screen(EditScreen(f"Edit {name} ({what})", base, overrides, current, path), saved)

    def action_reject(self) -> None:
        i = self._current()
        if i is not None and self._idle():
            self._decide([(i, "rejected", 0)])

    def action_mark(self) -> None:
        i = self._current()
        if i is None:
            return
        self.marked ^= {i}
        self._redraw([i])
        self.action_move(1)

    def action_accept_all(self) -> None:
        """Marked rows; with none marked, the unreviewed matches at or above SURE (visible rows)."""
        if not self._idle():
            return
        if self.marked:
            rows = sorted(self.marked)
            skipped = [i for i in rows if self.files[i].get("status") != "match"]
            rows = [i for i in rows if i not in skipped]
            if skipped:
                self.notify(f"{len(skipped)} marked file(s) not matched: left alone", severity="warning")
            old_marks, self.marked = self.marked, set()
            self._redraw(old_marks)
        else:
            rows = [i for i, f in enumerate(self.files)
                    if self._visible(i) and f.get("status") == "match" and not f.get("decision")
                    and ((f.get("match") or {}).get("confidence") or 0) >= SURE]
        if not rows:
            self.notify("nothing to accept (mark rows with space)")
            return
        self._decide([(i, "accepted", 0) for i in rows])
        self.notify(f"accepted {len(rows)} file(s)")

    def action_undo_decision(self) -> None:
        if not self._idle():
            return
        if not self.undo_stack:
            self.notify("no decision to undo")
            return
        step = self.undo_stack.pop()
        for i, before in step:
            if before is None:
                clear_decision(self.doc, self.files[i]["path"])
            else:
                replace_decision(self.files[i], before)
        self._save()
        self._redraw(i for i, _ in step)

    # ---- moving and filtering --------------------------------------------------------------------
    def action_sort(self) -> None:
        """Cycle the order: file, suggestion, confidence (lowest first: the doubtful ones), status,
        then the scan's own order again."""
        cycle = [None, "file", "suggestion", "conf", "status"]
        self._sort(cycle[(cycle.index(self.sort_by) + 1) % len(cycle)], reverse=False)

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column's header sorts by it; a second click reverses."""
        key = event.column_key.value
        if key != "mark":
            self._sort(key, reverse=self.sort_by == key and not self.sort_reverse)

    def _sort(self, by: str | None, reverse: bool) -> None:
        self.sort_by, self.sort_reverse = by, reverse
        self.query_one("#review-title", Static).update(self._title())
        self._fill()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._fill()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        event.input.display = bool(self.filter_text)
        self.query_one(ReviewTable).focus()

    def action_escape(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""  # Changed refills the table
            box.display = False
            self.query_one(ReviewTable).focus()
        elif len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen("Review keys", HELP))

"""The Textual app: `tagmatch review SCAN` opens the Review screen (the Duplicates screen for a dupes
report), bare `tagmatch` the Home screen."""

from __future__ import annotations

from pathlib import Path

import textual_image.widget  # noqa: F401  (it asks the terminal about images as it loads: it must load before
#   the app takes the terminal over, or the answers arrive as key presses; the evidence pane uses it)
from textual.app import App

from tagmatch.dupes.report import DupesReport, load_report
from tagmatch.errors import TagmatchError
from tagmatch.organize.naming import DEFAULT_TEMPLATE
from tagmatch.organize.scandoc import ScanDoc

CSS = """
#review-title, #runs-title, #dupes-title { height: 1; background: $primary-background; padding: 0 1; }
#review-body { layout: vertical; height: 1fr; }
#files { height: 1fr; }
#detail-box { height: 9; border-top: solid $primary; padding: 0 1; }
ReviewScreen.-wide #review-body { layout: horizontal; }
ReviewScreen.-wide #detail-box { height: 1fr; width: 46; border-top: none; border-left: solid $primary; }
ReviewScreen.-evidence #detail-box { height: 2fr; }
#evidence { display: none; }
ReviewScreen.-evidence #evidence { display: block; }
#filter { display: none; dock: bottom; margin-bottom: 1; }
#progress { display: none; dock: bottom; margin-bottom: 1; padding: 0 1; }
#runs { height: 1fr; }
#dupes-body { layout: vertical; height: 1fr; }
#dupes-files { height: 1fr; }
#dupes-detail-box { height: 9; border-top: solid $primary; padding: 0 1; }
DupesScreen.-wide #dupes-body { layout: horizontal; }
DupesScreen.-wide #dupes-detail-box { height: 1fr; width: 46; border-top: none; border-left: solid $primary; }
#dupes-progress { display: none; dock: bottom; margin-bottom: 1; padding: 0 1; }
#home { padding: 0 1; }
#home Static { margin-bottom: 1; }
#home-title { text-style: bold; }
#scans { height: auto; max-height: 12; margin-bottom: 1; }
#job { padding: 0 1; }
#job-title { text-style: bold; margin-bottom: 1; }
#job-bar { margin: 1 0; }
#job-loss { height: 4; margin-top: 1; }
#job-errors { height: 1fr; min-height: 3; border: round $error; }
#job-summary { margin-top: 1; text-style: bold; }
.form-label { color: $text-muted; }
ConfirmScreen, HelpScreen, FormScreen { align: center middle; }
#dialog { width: 90%; max-width: 100; height: auto; max-height: 90%; border: thick $warning;
          background: $surface; padding: 0 1; }
#dialog-title { text-style: bold; margin-bottom: 1; }
#dialog-body { height: auto; max-height: 14; }
#dialog-keys { width: 1fr; color: $text-muted; }
#dialog-buttons { height: 1; margin-top: 1; }
#dialog-buttons Button { margin-left: 2; }
EditScreen { align: center middle; }
#dialog.edit-form { border: thick $accent; }
.edit-row { height: 1; }
.edit-path { margin-top: 1; margin-bottom: 1; }
.edit-label { width: 12; color: $text-muted; }
.edit-row:focus-within .edit-label { color: $text; text-style: bold; }
.edit-row Input { width: 1fr; background: $boost; }
"""


def binding_table() -> list[tuple[str, str, str]]:
    """(id, default keys, what it does) of every key of every screen: what the config file's
    [keys] table can remap, and what `tagmatch keys` prints."""
    from tagmatch.tui import common, dupes, edit, home, progress, review, runs

    classes = [home.HomeScreen, review.ReviewScreen, review.ReviewTable, edit.EditScreen, dupes.DupesScreen,
               runs.RunsScreen, progress.JobScreen, common.ConfirmScreen, common.FormScreen, common.HelpScreen]
    rows = []
    for cls in classes:
        for b in cls.BINDINGS:
            if b.id:
                rows.append((b.id, b.key, b.description or b.action))
    return rows


class TagmatchApp(App):
    """Open on a scan's review when given one, else on the Home screen."""

    CSS = CSS
    ENABLE_COMMAND_PALETTE = False  # its footer key would crowd out the screen's keys at 80 columns
    TITLE = "tagmatch"

    def __init__(self, scan_path: Path | None = None, *, template: str = DEFAULT_TEMPLATE,
                 dest: Path | None = None) -> None:
        super().__init__()
        self.scan_path, self.template, self.dest = scan_path, template, dest

    def on_mount(self) -> None:
        from tagmatch.config import keymap, load_config
        from tagmatch.tui.home import HomeScreen

        try:
            self.set_keymap(keymap(load_config(), {row[0] for row in binding_table()}))
        except TagmatchError as exc:  # a bad config file must not lock the user out: defaults
            self.notify(f"{exc}; using the default keys", severity="error", timeout=10)

        if self.scan_path is not None:
            try:
                self.open_document(self.scan_path)
                return
            except TagmatchError as exc:  # gone since the CLI checked it: say so, show Home
                self.notify(str(exc), severity="error")
        self.push_screen(HomeScreen())

    def open_document(self, path: Path) -> None:
        """A scan opens its review, a duplicates report its groups (TagmatchError: neither)."""
        doc = load_report(path)
        (self.open_dupes if isinstance(doc, DupesReport) else self.open_review)(doc, Path(path))

    def open_review(self, doc: ScanDoc, scan_path: Path) -> None:
        from tagmatch.tui.review import ReviewScreen

        screen = ReviewScreen(doc, Path(scan_path), template=self.template, dest=self.dest)
        screen.hold(scan_path)  # TagmatchError: open in another tagmatch
        self.push_screen(screen)

    def open_dupes(self, doc: DupesReport, path: Path) -> None:
        from tagmatch.tui.dupes import DupesScreen

        screen = DupesScreen(doc, Path(path))
        screen.hold(path)
        self.push_screen(screen)

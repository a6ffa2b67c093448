"""The Textual app: `tagmatch review SCAN` opens the Review screen, bare `tagmatch` the Home screen."""

from __future__ import annotations

from pathlib import Path

from textual.app import App

from tagmatch.errors import TagmatchError
from tagmatch.naming import DEFAULT_TEMPLATE
from tagmatch.plan import load_scan

CSS = """
#review-title, #runs-title { height: 1; background: $primary-background; padding: 0 1; }
#review-body { layout: vertical; height: 1fr; }
#files { height: 1fr; }
#detail-box { height: 9; border-top: solid $primary; padding: 0 1; }
ReviewScreen.-wide #review-body { layout: horizontal; }
ReviewScreen.-wide #detail-box { height: 1fr; width: 46; border-top: none; border-left: solid $primary; }
#filter { display: none; dock: bottom; margin-bottom: 1; }
#progress { display: none; dock: bottom; margin-bottom: 1; padding: 0 1; }
#runs { height: 1fr; }
#home { padding: 1 2; }
#home Static { margin-bottom: 1; }
#home-title { text-style: bold; }
ConfirmScreen, HelpScreen { align: center middle; }
#dialog { width: 90%; max-width: 100; height: auto; max-height: 90%; border: thick $warning;
          background: $surface; padding: 0 1; }
#dialog-title { text-style: bold; margin-bottom: 1; }
#dialog-body { height: auto; max-height: 14; }
#dialog-keys { width: 1fr; color: $text-muted; }
#dialog-buttons { height: 1; margin-top: 1; }
#dialog-buttons Button { margin-left: 2; }
"""


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
        from tagmatch.tui.home import HomeScreen

        if self.scan_path is not None:
            try:
                self.open_review(load_scan(self.scan_path), self.scan_path)
                return
            except TagmatchError as exc:  # gone since the CLI checked it: say so, show Home
                self.notify(str(exc), severity="error")
        self.push_screen(HomeScreen())

    def open_review(self, doc: dict, scan_path: Path) -> None:
        from tagmatch.tui.review import ReviewScreen

        self.push_screen(ReviewScreen(doc, Path(scan_path), template=self.template, dest=self.dest))

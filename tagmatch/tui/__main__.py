"""`python -m tagmatch.tui [DOCUMENT]`: the terminal UI itself, with no check for a terminal;
what `tagmatch serve` runs for each browser (textual-serve gives it a web driver, not a tty)."""

import sys
from pathlib import Path

from tagmatch.tui.app import TagmatchApp

TagmatchApp(Path(sys.argv[1]) if len(sys.argv) > 1 else None).run()

"""The Review screen's evidence pane: the highlighted file's matched fragment beside the
reference's aligned span, as spectrograms, and the per-window similarity against the background
(tagmatch.match.evidence), drawn with textual-image's half-block cells, which every terminal
shows (tmux, the browser of `tagmatch serve`), two pixels a cell.

Computed in a worker (the model and the store are loaded once, FRAGMENT_S of each file read), so
the table never waits; pictures are kept for the files already shown.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.containers import Vertical
from textual.widgets import Static
from textual_image.widget import HalfcellImage

IMAGE_ROWS = 10  # terminal rows of the picture: query 2/5, reference 2/5, similarity strip 1/5


class EvidencePane(Vertical):
    """What the audio says, for one (file, candidate) at a time."""

    DEFAULT_CSS = """
    EvidencePane { height: auto; margin-bottom: 1; }
    EvidencePane #evidence-caption { height: auto; color: $text-muted; }
    EvidencePane HalfcellImage { height: 10; width: 1fr; }
    """

    def __init__(self, store_path: str | None, **kw) -> None:
        super().__init__(**kw)
        self.store_path = Path(store_path) if store_path else None
        self._pictures: dict[tuple[str, int], object] = {}  # (file, choice) -> Picture or error text
        self.key: tuple[str, int] | None = None
        self.ready = False  # the picture of `key` is drawn (tests wait for it)

    def compose(self):
        yield Static("", id="evidence-caption", markup=False)
        yield HalfcellImage(None)

    def show(self, entry: dict, candidate: dict | None, choice: int) -> None:
        """Draw the evidence that `entry`'s file holds `candidate` (None: nothing to draw)."""
        caption = self.query_one("#evidence-caption", Static)
        if candidate is None:
            self.key, self.ready = None, True
            caption.update("evidence: no candidate to compare")
            self.query_one(HalfcellImage).image = None
            return
        self.key, self.ready = (entry["path"], choice), False
        if self.key in self._pictures:
            self._draw(self.key)
            return
        caption.update("evidence: reading the audio...")
        self._compute(self.key, entry["path"], candidate)

    @work(thread=True, exclusive=True, group="evidence", exit_on_error=False)
    def _compute(self, key: tuple[str, int], path: str, candidate: dict) -> None:
        from tagmatch.errors import TagmatchError
        from tagmatch.jobs import evidence_job

        try:
            result = evidence_job(Path(path), candidate, self.store_path)
        except TagmatchError as exc:
            result = str(exc)
        self.app.call_from_thread(self._computed, key, result)

    def _computed(self, key: tuple[str, int], result) -> None:
        self._pictures[key] = result
        if key == self.key:
            self._draw(key)

    def _draw(self, key: tuple[str, int]) -> None:
        from PIL import Image

        from tagmatch.match.picture import rgb

        pic = self._pictures[key]
        caption = self.query_one("#evidence-caption", Static)
        image = self.query_one(HalfcellImage)
        if isinstance(pic, str):
            caption.update(f"evidence: {pic}")
            image.image = None
        else:
            width = max(8, self.size.width or 40)
            image.image = Image.fromarray(rgb(pic, width, IMAGE_ROWS * 2))
            end = pic.start_s + len(pic.query_mel) * pic.frame_s
            caption.update(f"{pic.start_s:.0f}-{end:.0f} s: query / reference at {pic.offset_s:+.1f} s / "
                           f"similarity, {pic.agreeing:.0%} above background" + (f"; {pic.note}" if pic.note else ""))
        self.ready = True

"""The Review screen's edit form (`e`): a file's tags and new path, typed by hand.

The form only works out which overrides the typed values make; the Review screen records them with
`plan.set_decision`, as `tagmatch decide --set/--unset/--path` does, so the CLI can do all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tagmatch.organize.plan import VALUE_SEP, Values, split_values
from tagmatch.organize.tags import TAG_NAMES

EDIT_TAGS = tuple(n for n in TAG_NAMES if not n.startswith("musicbrainz_"))  # the ones people type
KEYS = (f"Tab/Shift+Tab: move   Enter or Ctrl+S: save   Esc: cancel\n"
        f"'{VALUE_SEP}' between values   empty: remove the tag (path: the template)")


@dataclass(frozen=True)
class Edit:
    """What the form saved: `tags`, the file's whole new set of overrides (None removes a tag);
    `path`, None when left as it was, '' to go back to the template, else the explicit path."""

    tags: dict[str, Values | str | None] = field(default_factory=dict)
    path: str | None = None


def _text(values: Values | None) -> str:
    return VALUE_SEP.join(values or [])


class EditScreen(ModalScreen[Edit | None]):
    """One Input per common tag, prefilled with what the file would get now, and one for the path.

    `base`: the tags the file would get with no overrides (an emptied or retyped field is compared
    with it, so a field typed back to the reference's value stores nothing); `overrides`: the
    decision's current ones (kept for untouched fields and for tags the form does not show);
    `current`: base with the overrides (the prefill); `path`: the destination relative to
    --dest or the file's folder."""

    BINDINGS = [Binding("ctrl+s", "save", "Save"), Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, base: Mapping[str, Values], overrides: Mapping, current: Mapping[str, Values],
                 path: str) -> None:
        super().__init__()
        self.title_text, self.base, self.overrides = title, dict(base), dict(overrides)
        self.initial = {name: _text(current.get(name)) for name in EDIT_TAGS}
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="edit-form"):
            yield Static(self.title_text, id="dialog-title", markup=False)
            for name in EDIT_TAGS:
                with Horizontal(classes="edit-row"):
                    yield Label(name, classes="edit-label")
                    yield Input(self.initial[name], id=f"edit-{name}", compact=True)
            with Horizontal(classes="edit-row edit-path"):
                yield Label("new path", classes="edit-label")
                yield Input(self.path, id="edit-path", compact=True)
            yield Static(KEYS, id="dialog-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(f"#edit-{EDIT_TAGS[0]}", Input).focus()

    def result(self) -> Edit:
        """The overrides the fields make: untouched fields keep theirs; a changed one stores its
        values, or nothing when they equal what the file gets anyway (`base`)."""
        tags = {k: v for k, v in self.overrides.items() if k not in EDIT_TAGS}
        for name in EDIT_TAGS:
            text = self.query_one(f"#edit-{name}", Input).value
            if text == self.initial[name]:
                if name in self.overrides:
                    tags[name] = self.overrides[name]
            elif (new := split_values(text)) != (self.base.get(name) or None):
                tags[name] = new
        path = self.query_one("#edit-path", Input).value.strip()
        return Edit(tags, None if path == self.path.strip() else path)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_save(self) -> None:
        self.dismiss(self.result())

    def action_cancel(self) -> None:
        self.dismiss(None)

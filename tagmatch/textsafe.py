"""Text from files (tags, file names, paths) as it may be shown on a terminal.

A tag or a file name can hold any character, and a terminal obeys some of them: ESC starts
sequences that clear the screen or set the window title, CR and LF forge lines, and Unicode's
bidi overrides (U+202E) make a name read backwards. `visible` writes each such character as
repr() escapes it (`\\x1b`, `\\r`, `\\u202e`), so the user sees it instead of the terminal acting
on it; every other character (accents, CJK, emoji) is kept as is. Everything the CLI prints that
came from a file goes through it.
"""

from __future__ import annotations

import unicodedata

# Bidi embeddings, overrides, isolates and marks. All are category Cf; named so the intent is plain.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Cc: C0 (ESC, CR, LF, TAB...), DEL and C1 (0x80-0x9f, CSI 0x9b among them). Cf: format characters
# (bidi controls, zero-width characters). Zl/Zp: U+2028/U+2029, which some terminals break lines
# at. Cs: lone surrogates (an undecodable byte of a file name), which cannot be printed at all.
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Zero-width (non-)joiners are Cf too, but text needs them (emoji sequences such as the family
# emoji, Indic and Persian spelling) and no terminal acts on them.
KEPT = frozenset("\u200c\u200d")


def hidden(ch: str) -> bool:
    """Whether a terminal (or a file manager) would act on `ch` rather than show it."""
    return ch not in KEPT and (ch in BIDI_CONTROLS or unicodedata.category(ch) in ESCAPED_CATEGORIES)


def _shown(ch: str) -> str:
    if not hidden(ch):
        return ch
    return repr(ch)[1:-1]  # \r, \n, \t, \x1b, \x9b, \u202e, \U000e0001


def visible(text: str) -> str:
    """`text` with every control or format character written as its escape (`\\x1b`, `\\u202e`)."""
    text = str(text)
    if text.isprintable():  # the usual case; isprintable() is False for every category escaped here
        return text
    return "".join(map(_shown, text))

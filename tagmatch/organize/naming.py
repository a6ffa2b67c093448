"""File names from tags: a beets-like path template, sanitised for every OS, and collision suffixes.

A template is a relative path of `/`-separated components with `$field` or `${field}` (and `$$`
for a dollar). Field values never create folders (a `/` in "AC/DC" becomes `_`). Each component
is made legal on Windows, macOS and Linux at once. `pathvalidate` (platform "universal") supplies
the rules it keeps up to date: which characters are illegal (`<>:"/\\|?*`, control characters,
each becoming `_`), the reserved device names (CON, NUL, COM0-9, LPT0-9, COM¹..., CLOCK$) and a
byte cut that never splits a UTF-8 character. Our own code adds what it lacks: NFC, whitespace
runs as one space, no leading dots (so never `.` or `..`), trailing dots/spaces stripped again
after the cut, CONIN$/CONOUT$, reserved names followed by a space ("NUL .txt"), the `_` before
the extension, and at most 200 bytes of UTF-8 in the end (ext4 allows 255; the rest leaves room
for a ` (n)` suffix and temp-file names).
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Collection, Mapping, Sequence

from pathvalidate import ReservedNameError, ValidationError, sanitize_filename, validate_filename
from pathvalidate.handler import ReservedNameHandler

from tagmatch.errors import TagmatchError
from tagmatch.textsafe import hidden

DEFAULT_TEMPLATE = "$albumartist/$album/$track $title"
MAX_COMPONENT_BYTES = 200
UNKNOWN_ARTIST, UNKNOWN_ALBUM = "Unknown Artist", "Unknown Album"

FIELDS = {
    "title": "title (falls back on the file's name)",
    "artist": f"artist (falls back on '{UNKNOWN_ARTIST}')",
    "albumartist": "album artist (falls back on the artist)",
    "album": f"album (falls back on '{UNKNOWN_ALBUM}')",
    "track": "track number, 2 digits ('' when unknown)",
    "tracknumber": "track number as tagged",
    "disc": "disc number ('' when unknown)",
    "discnumber": "disc number as tagged",
    "year": "first 4 digits of the date",
    "date": "date as tagged",
    "genre": "genre",
}
_FIELD_RE = re.compile(r"\$(?:\{(\w+)\}|(\w+)|(\$))")
_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")
_MORE_RESERVED = ("CONIN$", "CONOUT$")  # console devices pathvalidate 3.3 does not list


def check_template(template: str) -> None:
    """Raise `TagmatchError` naming the first unknown field (before anything is planned)."""
    for m in _FIELD_RE.finditer(template):
        name = m.group(1) or m.group(2)
        if name and name not in FIELDS:
            raise TagmatchError(f"unknown template field ${name}; known: "
                                + ", ".join(f"${f}" for f in FIELDS))
    if not template.strip(" /"):
        raise TagmatchError("empty template")


def _first(tags: Mapping, name: str) -> str:
    v = tags.get(name)
    if v is None:
        return ""
    return ", ".join(x for x in ([v] if isinstance(v, str) else v) if x).strip()


def _number(text: str, width: int) -> str:
    m = re.match(r"\s*(\d+)", text)
    return str(int(m.group(1))).zfill(width) if m else ""


def template_fields(tags: Mapping[str, "str | Sequence[str] | None"], src: Path) -> dict[str, str]:
    """Field values for a file given its (new) tags; fallbacks as documented in `FIELDS`."""
    artist = _first(tags, "artist") or UNKNOWN_ARTIST
    date = _first(tags, "date")
    year = re.match(r"\s*(\d{4})", date)
    return {
        "title": _first(tags, "title") or Path(src).stem,
        "artist": artist,
        "albumartist": _first(tags, "albumartist") or artist,
        "album": _first(tags, "album") or UNKNOWN_ALBUM,
        "track": _number(_first(tags, "tracknumber"), 2),
        "tracknumber": _first(tags, "tracknumber"),
        "disc": _number(_first(tags, "discnumber"), 1),
        "discnumber": _first(tags, "discnumber"),
        "year": year.group(1) if year else "",
        "date": date,
        "genre": _first(tags, "genre"),
    }


def _truncate_utf8(s: str, max_bytes: int) -> str:
    """At most `max_bytes` of UTF-8, never cutting a character in half."""
    return s.encode("utf-8")[:max(max_bytes, 0)].decode("utf-8", "ignore")


def _is_reserved(head: str) -> bool:
    """Whether Windows reserves `head` (the part before the first dot) as a device name."""
    try:
        validate_filename(head, platform="universal", additional_reserved_names=_MORE_RESERVED)
    except ReservedNameError:
        return True
    except ValidationError:
        pass
    return False


def _unhidden(name: str) -> str:
    """`name` with "_" for each character a file manager would act on rather than show: bidi
    overrides (U+202E makes "gpj.exe" read "exe.jpg"), C1 controls, zero-width and other format
    characters (not the joiners emoji need). pathvalidate handles C0 controls and DEL."""
    return name if name.isprintable() else "".join("_" if c > "\x7f" and hidden(c) else c for c in name)


def sanitise_component(name: str, max_bytes: int = MAX_COMPONENT_BYTES) -> str:
    """One path component legal everywhere; '' when nothing is left (callers drop or replace it)."""
    if max_bytes < 1:
        return ""  # pathvalidate would read max_len <= 0 as its platform limit (260)
    # NFC and one space for tabs/newlines: pathvalidate does neither (it would write "_" for a tab).
    # Leading dots go before the cut so a hidden-file or "../" prefix never uses up the budget.
    s = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", name))
    s = _unhidden(s).strip(" .")
    if not s:
        return ""
    # Illegal characters -> "_", cut to max_bytes. Reserved names are ours to handle (as_is):
    # pathvalidate's handler finds "NUL" but not "NUL .txt", and its "_" can overrun max_len.
    s = sanitize_filename(s, "_", platform="universal", max_len=max_bytes, fs_encoding="utf-8",
                          reserved_name_handler=ReservedNameHandler.as_is)
    s = s.rstrip(" .")  # pathvalidate fixes only the first fault it finds, so a cut can leave these
    head, dot, rest = s.partition(".")
    if s and _is_reserved(head.rstrip(" ")):
        s = _truncate_utf8(head.rstrip(" "), max_bytes - 1 - len((dot + rest).encode())) + "_" + dot + rest
    return s


def sanitise_filename(stem: str, ext: str, max_bytes: int = MAX_COMPONENT_BYTES) -> str:
    """`stem` + lower-cased `ext`, the stem cut so the whole name fits `max_bytes`."""
    ext = sanitise_component(ext.lower(), max_bytes - 2) if ext else ""  # room for "." and a stem
    ext = "." + ext if ext else ""
    stem = sanitise_component(stem, max_bytes - len(ext.encode("utf-8"))) or "_"
    return stem + ext


def render(template: str, fields: Mapping[str, str], ext: str) -> Path:
    """A relative path from a template: empty folder components are dropped, the file name keeps
    `ext` (lower-cased); '..' and absolute paths cannot escape the base (dots are stripped)."""
    def value(m: re.Match) -> str:
        if m.group(3):
            return "$"
        v = fields[m.group(1) or m.group(2)]
        return v.replace("/", "_").replace("\\", "_")

    parts = [_FIELD_RE.sub(value, p) for p in template.split("/")]
    *folders, name = parts
    folders = [sanitise_component(f) or "_" for f in folders if f.strip()]  # empty fields drop a level
    stem = sanitise_component(name) or sanitise_component(fields.get("title", "")) or "_"
    return Path(*folders, sanitise_filename(stem, ext))


def destination(template: str, tags: Mapping, src: Path, base: Path) -> Path:
    """Where a file with these (new) tags goes: the rendered template under `base`."""
    return Path(base) / render(template, template_fields(tags, src), Path(src).suffix.lstrip("."))


def user_path(path: str, src: Path, base: Path) -> Path:
    """An explicit new path from a review decision: used as given when absolute, else under `base`
    with each component sanitised; the file keeps its extension (added, lower-cased, when the
    given name has another one)."""
    p = Path(path)
    if p.is_absolute():  # the user's own folders, as named; only what no name should hold goes
        p = Path(p.anchor, *(_unhidden(x) for x in p.parts[1:]))
        if p.name in ("", ".", ".."):  # "/" or "/a/..": no file name given
            p = p / "_"
    else:
        parts = [c for c in (sanitise_component(x) for x in p.parts) if c] or ["_"]
        p = Path(base, *parts)
    ext = Path(src).suffix.lower()
    return p if p.suffix.lower() == ext else p.with_name(p.name + ext)


def _key(p: Path) -> str:
    return unicodedata.normalize("NFC", os.path.normpath(str(p))).casefold()


def free_path(path: Path, taken: Collection[str] = (), own: Path | None = None) -> Path:
    """`path`, or `name (1).ext`, `name (2).ext`...: the first that neither exists nor is in
    `taken` (keys from `path_key`, case-insensitive so case-insensitive disks never collide).
    `own` is the file being renamed: its current name is free for it."""
    stem, ext = path.stem, path.suffix
    start = 1
    if m := re.fullmatch(r"(.*) \((\d+)\)", stem):  # already suffixed: count on, not "x (1) (1)"
        stem, start = m.group(1), int(m.group(2)) + 1
    for n in [0, *range(start, start + 10000)]:
        cand = path if n == 0 else path.with_name(f"{stem} ({n}){ext}")
        if _key(cand) in taken:
            continue
        if own is not None and os.path.normpath(cand) == os.path.normpath(own):
            return cand
        if os.path.lexists(cand):
            if own is not None and _samefile(cand, own):
                return cand
            continue
        return cand
    raise TagmatchError(f"no free name for {path}")


def _samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


path_key = _key

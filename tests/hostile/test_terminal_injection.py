"""Text from files reaches the terminal with its control characters shown, never obeyed: a title
or a file name holding an escape sequence cannot clear the screen, set the window title or forge
lines (tagmatch.textsafe.visible, used by everything the CLI prints)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tagmatch.cli import main
from tagmatch.cli.output import err
from tagmatch.textsafe import visible

HOSTILE_TITLE = "Song\x1b]0;pwned\x07\x1b[2J"
SHOWN_TITLE = r"Song\x1b]0;pwned\x07\x1b[2J"
HOSTILE_ARTIST = "Band\u202eevil"
SHOWN_ARTIST = r"Band\u202eevil"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


@pytest.mark.parametrize("raw, shown", [
    ("\x1b[2J", r"\x1b[2J"),                              # ESC: clear the screen
    ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),            # OSC: set the window title
    ("ok\rforged\nline\ttab", r"ok\rforged\nline\ttab"),  # CR/LF forge lines
    ("gpj.\u202eexe", r"gpj.\u202eexe"),                   # right-to-left override
    ("\u2066x\u2069\u200e\u200f\u061c", r"\u2066x\u2069\u200e\u200f\u061c"),  # isolates and marks
    ("del\x7f", r"del\x7f"),
    ("csi\x9b31m", r"csi\x9b31m"),                         # C1 CSI, a one-byte ESC [
    ("zero\u200bwidth\ufeff", r"zero\u200bwidth\ufeff"),   # other format characters (Cf)
    ("bad\udc80byte", r"bad\udc80byte"),                   # an undecodable file name byte
])
def test_visible_escapes_control_and_format_characters(raw, shown):
    assert visible(raw) == shown
    assert visible(raw).isprintable()


@pytest.mark.parametrize("text", ["Motörhead – 東京 🎵", "AC/DC - Back in Black", "Ünïcödé café", "",
                                  "a\u00a0b", "عربي", "नमस्ते", "👩\u200d👩\u200d👧", "می\u200cخواهم"])
def test_visible_leaves_other_text_unchanged(text):
    assert visible(text) == text


def test_visible_takes_paths():
    assert visible(Path("/music/a\x1bb.mp3")) == r"/music/a\x1bb.mp3"


def test_error_lines_show_control_characters(capsys):
    err(f"not found: /music/{HOSTILE_TITLE}.mp3")
    assert capsys.readouterr().err == f"tagmatch: not found: /music/{SHOWN_TITLE}.mp3\n"


def _assert_shown(text: str, *visible_forms: str) -> None:
    for ch in RAW:
        assert ch not in text, f"raw {ch!r} printed: {text!r}"
    for form in visible_forms:
        assert form in text, f"{form!r} not in {text!r}"


@pytest.fixture
def hostile_scan(manifest_scan_path, messy) -> tuple[Path, Path]:
    """The manifest scan, with a matched file renamed to hold an OSC title sequence and its match's
    title and artist holding escape sequences and a bidi override: (scan path, that file)."""
    doc = json.loads(manifest_scan_path.read_text(encoding="utf-8"))
    entry = next(f for f in doc["files"] if f["status"] == "match")
    old = Path(entry["path"])
    new = old.with_name(f"file\x1b]0;pwned\x07{old.suffix}")
    shutil.move(old, new)
    entry["path"] = str(new)
    entry["match"]["tags"].update(title=HOSTILE_TITLE, artist=HOSTILE_ARTIST)
    manifest_scan_path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return manifest_scan_path, new


def test_decide_apply_runs_and_undo_print_tags_and_names_visibly(hostile_scan, tmp_path, env, capsys):
    scan, bad = hostile_scan
    out = tmp_path / "out"
    shown_name = r"file\x1b]0;pwned\x07"

    assert main(["decide", str(scan), str(bad), "--accept", "--dest", str(out)]) == 0
    printed = capsys.readouterr()
    _assert_shown(printed.out + printed.err, SHOWN_TITLE, SHOWN_ARTIST, shown_name)
    # the scan document itself keeps the text exactly as it was
    entry = next(f for f in json.loads(scan.read_text(encoding="utf-8"))["files"] if f["path"] == str(bad))
    assert entry["match"]["tags"]["title"] == HOSTILE_TITLE

    assert main(["apply", str(scan), "--dest", str(out)]) == 0  # dry run
    printed = capsys.readouterr()
    _assert_shown(printed.out + printed.err, SHOWN_TITLE, SHOWN_ARTIST, shown_name, "Dry run")
    assert not out.exists()

    assert main(["apply", str(scan), "--dest", str(out), "--yes", "-q"]) == 0
    capsys.readouterr()

    assert main(["runs"]) == 0
    listing = capsys.readouterr().out
    _assert_shown(listing)
    run_id = listing.split()[0]

    assert main(["runs", run_id]) == 0
    printed = capsys.readouterr().out
    _assert_shown(printed, SHOWN_TITLE, SHOWN_ARTIST, shown_name)  # source name, new tags, new path's artist
    assert f"\n       -> {out}/Band_evil/" in printed  # the new path's artist folder: no U+202E in a name

    assert main(["undo", run_id]) == 0
    printed = capsys.readouterr()
    _assert_shown(printed.out + printed.err, "/Band_evil/")  # the copy's path, made in a legal name

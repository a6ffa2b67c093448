"""Path templates and sanitising: names that are legal everywhere and never collide."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from pathvalidate import validate_filename

from tagmatch.errors import TagmatchError
from tagmatch.organize.naming import (DEFAULT_TEMPLATE, MAX_COMPONENT_BYTES, check_template, destination, free_path,
                             path_key, render, sanitise_component, sanitise_filename, template_fields, user_path)
from tagmatch.textsafe import hidden

TAGS = {"title": ["Neon Orchard"], "artist": ["Kosmo Dial"], "album": ["Signal Garden"], "tracknumber": ["3/12"]}


def dest(tags, src="/m/x.MP3", base="/out", template=DEFAULT_TEMPLATE) -> str:
    return str(destination(template, tags, Path(src), Path(base)))


def test_default_template_pads_the_track_and_lowercases_the_extension():
    assert dest(TAGS) == "/out/Kosmo Dial/Signal Garden/03 Neon Orchard.mp3"


def test_fallbacks_for_missing_album_track_albumartist_and_title():
    assert dest({"title": "T", "artist": "A"}) == "/out/A/Unknown Album/T.mp3"
    assert dest({**TAGS, "albumartist": ["Various Artists"]}).startswith("/out/Various Artists/Signal Garden/")
    assert dest({}, src="/m/my song.flac") == "/out/Unknown Artist/Unknown Album/my song.flac"


def test_other_fields_and_dollar_escape():
    tags = {**TAGS, "date": "2021-04-01", "discnumber": "2/2", "genre": "Electronic"}
    assert dest(tags, template="$genre/${year} $album/$disc-$track $$ $title") == \
        "/out/Electronic/2021 Signal Garden/2-03 $ Neon Orchard.mp3"
    assert dest({"title": "T"}, template="$year/$title") == "/out/T.mp3"  # empty folders are dropped


def test_multi_valued_fields_are_joined():
    assert dest({"title": "T", "artist": ["A", "B"]}) == "/out/A, B/Unknown Album/T.mp3"


def test_unknown_fields_and_empty_templates_are_refused():
    with pytest.raises(TagmatchError, match=r"\$bogus"):
        check_template("$artist/$bogus")
    with pytest.raises(TagmatchError):
        check_template(" / ")


@pytest.mark.parametrize("raw,clean", [
    ('AC/DC: "Live" <at> the |Pipe|? *', "AC_DC_ _Live_ _at_ the _Pipe__ _"),
    ("tab\there\x00nul\x1f", "tab here_nul_"),
    ("  .hidden name. ", "hidden name"),
    ("...", ""),
    ("CON", "CON_"), ("nul.txt", "nul_.txt"), ("com1", "com1_"), ("Lpt9 .x", "Lpt9_.x"),
    ("Console", "Console"),
])
def test_sanitise_component(raw, clean):
    assert sanitise_component(raw) == clean


def test_values_never_create_folders_and_cannot_escape_the_base():
    p = dest({"title": "../../etc/passwd", "artist": "..", "album": "a/b"}, base="/out")
    assert p == "/out/_/a_b/_.._etc_passwd.mp3"
    rel = render("../$artist/./$album/$title", template_fields({"title": "t", "artist": "..", "album": "."}, Path("x.mp3")), "mp3")
    assert ".." not in rel.parts and not rel.is_absolute()
    assert all(c not in ("", ".", "..") for c in rel.parts)


def test_reserved_names_with_the_extension():
    assert sanitise_filename("AUX", "MP3") == "AUX_.mp3"
    assert dest({"title": "nul", "artist": "con", "album": "PRN"}) == "/out/con_/PRN_/nul_.mp3"


def test_nfc_normalisation():
    nfd = unicodedata.normalize("NFD", "Café Ærøskøbing")
    out = sanitise_component(nfd)
    assert out == unicodedata.normalize("NFC", "Café Ærøskøbing") and unicodedata.is_normalized("NFC", out)


def test_long_names_are_cut_on_character_boundaries_and_keep_the_extension():
    title = "Ünïcödé 東京 " * 60
    name = sanitise_filename(title, "FLAC")
    assert len(name.encode("utf-8")) <= MAX_COMPONENT_BYTES and name.endswith(".flac")
    name.encode("utf-8").decode("utf-8")  # still valid UTF-8
    assert not name[:-5].endswith((" ", "."))
    folder = sanitise_component("x" * 500)
    assert len(folder) == MAX_COMPONENT_BYTES


@pytest.mark.parametrize("raw,clean", [
    ("COM0", "COM0_"), ("lpt0.mp3", "lpt0_.mp3"), ("COM\u00b9", "COM\u00b9_"), ("LPT\u00b3 .x", "LPT\u00b3_.x"),
    ("CLOCK$", "CLOCK$_"),  # known to pathvalidate, not to our old list
    ("conin$", "conin$_"), ("CONOUT$.txt", "CONOUT$_.txt"),  # ours: pathvalidate 3.3 lacks them
    ("COM10", "COM10"), ("Clock", "Clock"), ("CON_", "CON_"), ("nul.nul", "nul_.nul"),
])
def test_reserved_names_from_pathvalidate_and_ours(raw, clean):
    assert sanitise_component(raw) == clean


def test_exactly_the_characters_pathvalidate_rejects_become_underscores():
    replaced = {chr(c) for c in range(128) if chr(c) != "_" and sanitise_component(f"a{chr(c)}b") == "a_b"}
    assert replaced == set('<>:"/\\|?*\x7f') | {chr(c) for c in range(32)} - set("\t\n\v\f\r")
    assert sanitise_component("a\t\n\v\f\r b") == "a b"  # whitespace runs stay one space (ours)


def test_dot_names_never_survive():  # pathvalidate keeps "." and ".." as they are; we do not
    assert [sanitise_component(x) for x in (".", "..", "../x", ". .")] == ["", "", "_x", ""]


def test_whitespace_only_names_are_empty():  # pathvalidate's rule: only-whitespace is no name
    assert [sanitise_component(x) for x in ("\u00a0", "\u3000 ", "\x1f")] == ["", "", ""]
    assert user_path("\u3000/Song", Path("/m/x.mp3"), Path("/out")) == Path("/out/Song.mp3")


def test_reserved_suffix_still_fits_the_byte_limit():  # pathvalidate's own "_" would overrun it
    out = sanitise_component("NUL." + "x" * 300)
    assert len(out.encode("utf-8")) <= MAX_COMPONENT_BYTES and out.endswith("x")
    assert len(sanitise_filename("AUX", "e" * 300).encode("utf-8")) <= MAX_COMPONENT_BYTES  # even an absurd extension


@pytest.mark.parametrize("raw", [
    'AC/DC: "Live" <at> the |Pipe|? *', "  .hidden name. ", "CON", "Lpt9 .x", "com\u00b2.MP3", "x.",
    unicodedata.normalize("NFD", "Caf\u00e9 ") * 80, "\u6771" * 100 + " .", "a\x00\x1f\x7fb", "..\\..\\boot.ini",
])
def test_every_sanitised_name_is_valid_for_pathvalidate(raw):
    for name in (sanitise_component(raw), sanitise_filename(raw, "MP3")):
        validate_filename(name, platform="universal", max_len=MAX_COMPONENT_BYTES, fs_encoding="utf-8",
                          additional_reserved_names=["CONIN$", "CONOUT$"])
        assert unicodedata.is_normalized("NFC", name) and name not in (".", "..")


def test_free_path_adds_suffixes_and_never_picks_a_taken_or_existing_name(tmp_path):
    (tmp_path / "a.mp3").write_bytes(b"1")
    assert free_path(tmp_path / "a.mp3") == tmp_path / "a (1).mp3"
    taken = {path_key(tmp_path / "A (1).MP3")}  # case-insensitively taken by another file of the plan
    assert free_path(tmp_path / "a.mp3", taken) == tmp_path / "a (2).mp3"
    assert free_path(tmp_path / "b.mp3", taken) == tmp_path / "b.mp3"
    (tmp_path / "c (4).mp3").write_bytes(b"3")
    assert free_path(tmp_path / "c (4).mp3") == tmp_path / "c (5).mp3"  # not "c (4) (1)"


def test_free_path_lets_a_file_keep_its_own_name(tmp_path):
    own = tmp_path / "a.mp3"
    own.write_bytes(b"1")
    assert free_path(own, own=own) == own
    (tmp_path / "b.mp3").write_bytes(b"2")
    assert free_path(tmp_path / "b.mp3", own=own) == tmp_path / "b (1).mp3"


def test_user_path_relative_absolute_and_extension(tmp_path):
    src = Path("/m/x.MP3")
    assert user_path("Mine/Song", src, Path("/out")) == Path("/out/Mine/Song.mp3")
    assert user_path("../up:here.mp3", src, Path("/out")) == Path("/out/up_here.mp3")
    assert user_path("/abs/Name.v2", src, Path("/out")) == Path("/abs/Name.v2.mp3")


def test_names_never_hold_bidi_overrides_or_hidden_controls():
    tags = {"title": ["gpj.\u202eexe"], "artist": ["A\u202eB\x9b"], "album": ["x\u2067\u200b"]}
    dst = destination(DEFAULT_TEMPLATE, tags, Path("/m/a.mp3"), Path("/out"))
    assert all(not hidden(c) for c in str(dst)), dst
    assert dst.parts[-3:-1] == ("A_B_", "x__")
    assert "\u202e" not in user_path("/abs/new\u202efile\x1b", Path("a.mp3"), Path("/b")).name
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # zero-width joiners are kept
    assert sanitise_component(family) == family

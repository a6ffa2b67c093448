"""Tags on real files of every format we write: round trips, art, and the failures `write_tags` reports.

That a failure leaves the user's file byte for byte is apply's job (it writes a staged copy):
tests/organize/test_apply.py proves it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf

from tagmatch.errors import TagWriteError
from tagmatch.organize.tags import Picture, read_pictures, read_tag_values, read_tags, write_tags
from helpers import FORMATS, make_tone

ID3_FORMATS = ("mp3", "wav", "aiff")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(64, 160))


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tones")
    return {fmt: make_tone(d / f"tone.{fmt}") for fmt in FORMATS}


@pytest.fixture
def fresh(tones, tmp_path):
    def copy(fmt: str, name: str | None = None) -> Path:
        return Path(shutil.copy(tones[fmt], tmp_path / (name or f"t.{fmt}")))
    return copy


FULL = {
    "title": ["Señora Lluvia — 雨 ☂"], "artist": ["Ana Nuñez", "Björk Guðmundsdóttir"],
    "album": ["Café Nocturne"], "albumartist": ["Various Ärtists"], "tracknumber": ["3/12"],
    "discnumber": ["1/2"], "date": ["2018-05-03"], "genre": ["Jazz", "Folk"],
    "musicbrainz_trackid": ["1f9df192-a621-4f54-8850-2c5373b7eac9"],
    "musicbrainz_albumid": ["8c3e2a2e-0a3c-4f7b-9a7c-5f7c1b5d3f10"],
    "musicbrainz_artistid": ["a74b1b7f-71a5-4011-9441-d0b5e4122711", "b10bbbfc-cf9e-42e0-be17-e2c3e1d2600d"],
    "musicbrainz_albumartistid": ["89ad4ac3-39f7-470e-963a-56509c546377"],
    "musicbrainz_releasegroupid": ["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"],
    "musicbrainz_releasetrackid": ["11111111-2222-3333-4444-555555555555"],
}


def expected(values: dict, v23: bool) -> dict:
    """ID3v2.3 has no multi-valued frames: values come back joined with '/'."""
    return {k: (["/".join(v)] if v23 and len(v) > 1 else v) for k, v in values.items()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_tag_unicode_and_multi_value(fresh, fmt):
    f = fresh(fmt)
    after = write_tags(f, FULL)
    assert read_tag_values(f) == after == FULL
    assert read_tags(f)["artist"] == "Ana Nuñez; Björk Guðmundsdóttir"  # the store / scan JSON form


@pytest.mark.parametrize("fmt", ID3_FORMATS)
def test_id3_v23_round_trip(fresh, fmt):
    f = fresh(fmt)
    write_tags(f, FULL, id3v23=True)
    import mutagen

    assert mutagen.File(str(f)).tags.version[:2] == (2, 3)
    assert read_tag_values(f) == expected(FULL, v23=True)


def test_v23_keeps_the_sort_order_frames(fresh):
    import mutagen
    from mutagen.id3 import TSOP

    f = fresh("mp3")
    write_tags(f, {"title": "x"})
    m = mutagen.File(str(f))
    m.tags.add(TSOP(encoding=3, text=["Beatles, The"]))
    m.save()
    write_tags(f, {"artist": "The Beatles"}, id3v23=True)
    assert mutagen.File(str(f)).tags["TSOP"].text == ["Beatles, The"]


def test_id3_default_is_v24_and_v23_option_writes_v23(fresh):
    from mutagen.id3 import ID3

    a, b = fresh("mp3", "a.mp3"), fresh("mp3", "b.mp3")
    write_tags(a, {"title": "x"})
    write_tags(b, {"title": "x"}, id3v23=True)
    assert ID3(str(a)).version[:2] == (2, 4) and ID3(str(b)).version[:2] == (2, 3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tags_not_named_are_kept_and_none_deletes(fresh, fmt):
    f = fresh(fmt)
    write_tags(f, {"title": "Old", "genre": "Rock", "date": "1999"})
    write_tags(f, {"title": "New", "genre": None})
    assert read_tag_values(f) == {"title": ["New"], "date": ["1999"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_audio_stream_is_untouched(fresh, fmt):
    f = fresh(fmt)
    if fmt == "m4a":
        import av

        def decode(p):
            with av.open(str(p)) as c:
                return b"".join(bytes(pk) for pk in c.demux(audio=0))
    else:
        def decode(p):
            return sf.read(str(p), dtype="int32")[0].tobytes()
    before = decode(f)
    write_tags(f, FULL, add_pictures=[Picture(PNG, "image/png")])
    assert decode(f) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_art_added_only_when_the_file_has_none(fresh, fmt):
    f = fresh(fmt)
    write_tags(f, {"title": "a"}, add_pictures=[Picture(JPEG, "image/jpeg")])
    (p,) = read_pictures(f)
    assert p.data == JPEG
    write_tags(f, {"title": "b"}, add_pictures=[Picture(PNG, "image/png")])
    assert [x.data for x in read_pictures(f)] == [JPEG]  # the file's own art is kept
    assert read_tag_values(f)["title"] == ["b"]


def test_write_tags_refuses_unknown_names_and_formats(fresh, tmp_path):
    f = fresh("flac")
    with pytest.raises(TagWriteError, match="unknown tag names"):
        write_tags(f, {"composer": "x"})
    txt = tmp_path / "notes.mp3"
    txt.write_text("not audio at all\n")
    with pytest.raises(TagWriteError):
        write_tags(txt, {"title": "x"})


@pytest.mark.parametrize("content", [b"", b"\x00" * 4096, b"ID3\x04\x00\x00\x00\x00\x00\x7fgarbage" * 50,
                                     b"fLaC\x00\x00\x00\x22" + b"\xff" * 100])
def test_corrupt_files_raise_a_tag_write_error_naming_them(tmp_path, content):
    for ext in ("mp3", "flac", "m4a"):
        f = tmp_path / f"bad.{ext}"
        f.write_bytes(content)
        with pytest.raises(TagWriteError) as info:
            write_tags(f, {"title": "x"})
        assert info.value.path == str(f) and info.value.reason
        f.unlink()


def test_truncated_real_file_is_refused_or_validly_retagged(fresh):
    f = fresh("flac")
    f.write_bytes(f.read_bytes()[:3000])
    try:
        write_tags(f, {"title": "x"})
    except TagWriteError as exc:
        assert exc.reason
    else:
        assert read_tag_values(f)["title"] == ["x"]


@pytest.mark.parametrize("fmt,changes", [("m4a", {"tracknumber": "A1"}), ("mp3", {"date": "sometime in spring"})])
def test_values_the_format_cannot_hold_fail_verification(fresh, fmt, changes):
    f = fresh(fmt)
    with pytest.raises(TagWriteError):
        write_tags(f, {**changes, "title": "changed"})


def test_fixture_library_tags_read_as_before(fixture_dir, manifest):
    for e in manifest["library"][:4]:
        tags = read_tags(fixture_dir / e["path"])
        assert tags["title"] == e["title"] and tags["artist"] == e["artist"]
        assert tags["tracknumber"] == e["tracknumber"]

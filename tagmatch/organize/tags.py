"""Tags: the one place that maps tagmatch's tag names to each format (mutagen), reading and writing.

Our names: title, artist, album, albumartist, tracknumber, discnumber, date, genre, plus
MusicBrainz ids. ID3 (MP3, WAV, AIFF) uses frames, MP4 uses atoms, Vorbis comments (FLAC, Ogg
Vorbis, Opus) use the names directly. Every mutagen call goes through `_guard`, which turns
mutagen's many exception types into `TagReadError` / `TagWriteError(path, reason)`.

Values are lists of strings (multi-valued fields are real lists, never "a; b" strings), except in
`read_tags`, which keeps the older one-string-per-tag form the store and the scan JSON use.
ID3v2.3 has no multi-valued frames: there values are joined with "/" (what Picard and mutagen
do). `write_tags` re-reads what it wrote and raises unless every tag reads back as intended.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from tagmatch.errors import TagmatchError, TagReadError, TagWriteError

__all__ = ["TAG_NAMES", "Picture", "TagReadError", "TagWriteError", "read_tags", "read_tag_values",
           "read_pictures", "write_tags", "tag_kind", "is_read_only"]

TAG_NAMES = ("title", "artist", "album", "albumartist", "tracknumber", "discnumber", "date", "genre",
             "musicbrainz_trackid", "musicbrainz_albumid", "musicbrainz_artistid",
             "musicbrainz_albumartistid", "musicbrainz_releasegroupid", "musicbrainz_releasetrackid")

ID3_FRAMES = {
    "title": "TIT2", "artist": "TPE1", "album": "TALB", "albumartist": "TPE2",
    "tracknumber": "TRCK", "discnumber": "TPOS", "date": "TDRC", "genre": "TCON",
    "musicbrainz_trackid": "UFID:http://musicbrainz.org",
    "musicbrainz_albumid": "TXXX:MusicBrainz Album Id",
    "musicbrainz_artistid": "TXXX:MusicBrainz Artist Id",
    "musicbrainz_albumartistid": "TXXX:MusicBrainz Album Artist Id",
    "musicbrainz_releasegroupid": "TXXX:MusicBrainz Release Group Id",
    "musicbrainz_releasetrackid": "TXXX:MusicBrainz Release Track Id",
}
_FF = "----:com.apple.iTunes:"
MP4_ATOMS = {
    "title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "albumartist": "aART",
    "tracknumber": "trkn", "discnumber": "disk", "date": "\xa9day", "genre": "\xa9gen",
    "musicbrainz_trackid": _FF + "MusicBrainz Track Id",
    "musicbrainz_albumid": _FF + "MusicBrainz Album Id",
    "musicbrainz_artistid": _FF + "MusicBrainz Artist Id",
    "musicbrainz_albumartistid": _FF + "MusicBrainz Album Artist Id",
    "musicbrainz_releasegroupid": _FF + "MusicBrainz Release Group Id",
    "musicbrainz_releasetrackid": _FF + "MusicBrainz Release Track Id",
}
_KEEP_IN_V23 = ("TSOP", "TSOA", "TSOT")  # artist/album/title sort order
Values = list[str]
Changes = Mapping[str, "Sequence[str] | str | None"]  # None (or no value) deletes the tag


@dataclass(frozen=True)
class Picture:
    """Embedded art, format-neutral. `type` is the ID3/FLAC picture type (3 = front cover)."""

    data: bytes
    mime: str = "image/jpeg"
    type: int = 3
    desc: str = ""


# ---- the mutagen wrapper --------------------------------------------------------------------
@contextmanager
def _guard(path, error: type[TagmatchError], what: str) -> Iterator[None]:
    """Every mutagen call runs in here: any exception becomes `error(path, reason)`."""
    try:
        yield
    except (TagReadError, TagWriteError):
        raise
    except Exception as exc:  # mutagen raises MutagenError subclasses, OSError, struct/value errors...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(path, f"{what}: {reason}") from exc


def _open(path, error: type[TagmatchError] = TagReadError):
    import mutagen

    with _guard(path, error, "cannot read tags"):
        f = mutagen.File(str(path))
    if f is None:
        raise error(path, "cannot read tags: not an audio format mutagen knows")
    return f


def tag_kind(f) -> str | None:
    """'id3', 'mp4' or 'vorbis' for the formats we write; None for the rest (read-only to us)."""
    from mutagen.aiff import AIFF
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3FileType
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    if isinstance(f, (ID3FileType, WAVE, AIFF)):
        return "id3"
    if isinstance(f, MP4):
        return "mp4"
    if isinstance(f, (FLAC, OggVorbis, OggOpus)):
        return "vorbis"
    return None


# ---- reading --------------------------------------------------------------------------------
def _clean(values) -> Values | None:
    out = [str(v) for v in values if str(v) != ""]
    return out or None


def _id3_get(tags, key: str) -> Values | None:
    frame = tags.get(key)
    if frame is None:
        return None
    if key.startswith("UFID:"):
        return _clean([frame.data.decode("utf-8", "replace")])
    return _clean(getattr(frame, "text", []) or [])


def _mp4_get(tags, atom: str) -> Values | None:
    raw = tags.get(atom)
    if not raw:
        return None
    out = []
    for v in raw:
        if isinstance(v, tuple):  # trkn / disk: (number, total)
            n, total = (tuple(v) + (0, 0))[:2]
            if n or total:
                out.append(f"{n}/{total}" if total else str(n))
        elif isinstance(v, bytes):  # freeform atoms
            out.append(v.decode("utf-8", "replace"))
        else:
            out.append(str(v))
    return _clean(out)


def _values(f, kind: str | None) -> dict[str, Values]:
    tags, out = f.tags, {}
    if tags is None:
        return out
    for name in TAG_NAMES:
        if kind == "id3":
            value = _id3_get(tags, ID3_FRAMES[name])
        elif kind == "mp4":
            value = _mp4_get(tags, MP4_ATOMS[name])
        else:  # Vorbis comments and APEv2 use plain names
            try:
                raw = tags.get(name) or tags.get(name.upper())
            except Exception:
                raw = None
            value = _clean(raw if isinstance(raw, list) else [raw]) if raw else None
        if value:
            out[name] = value
    return out


def read_tag_values(path: Path | str) -> dict[str, Values]:
    """Our tags of any file mutagen reads, every value a list; absent tags are absent."""
    f = _open(path)
    with _guard(path, TagReadError, "cannot read tags"):
        return _values(f, tag_kind(f))


def read_tags(path: Path | str) -> dict[str, str]:
    """One string per tag (multiple values joined with '; '): the form the store and scan JSON keep."""
    return {k: "; ".join(v) for k, v in read_tag_values(path).items()}


def _flac_picture(data: bytes) -> Picture:
    from mutagen.flac import Picture as FlacPicture

    p = FlacPicture(data)
    return Picture(p.data, p.mime or "image/jpeg", int(p.type), p.desc or "")


def _pictures(f, kind: str | None) -> list[Picture]:
    from mutagen.flac import FLAC
    from mutagen.mp4 import MP4Cover

    tags, out = f.tags, []
    if isinstance(f, FLAC):
        out += [Picture(p.data, p.mime or "image/jpeg", int(p.type), p.desc or "") for p in f.pictures]
    if tags is None:
        return out
    if kind == "id3":
        out += [Picture(a.data, a.mime or "image/jpeg", int(a.type), a.desc or "") for a in tags.getall("APIC")]
    elif kind == "mp4":
        for c in tags.get("covr", []):
            mime = "image/png" if getattr(c, "imageformat", None) == MP4Cover.FORMAT_PNG else "image/jpeg"
            out.append(Picture(bytes(c), mime))
    elif kind == "vorbis":
        out += [_flac_picture(base64.b64decode(b)) for b in tags.get("metadata_block_picture", [])]
        mimes = tags.get("coverartmime", [])
        out += [Picture(base64.b64decode(b), mimes[0] if mimes else "image/jpeg")
                for b in tags.get("coverart", [])]
    return out


def read_pictures(path: Path | str) -> list[Picture]:
    """Embedded art of a file (ID3 APIC, FLAC pictures, Vorbis METADATA_BLOCK_PICTURE, MP4 covr)."""
    f = _open(path)
    with _guard(path, TagReadError, "cannot read pictures"):
        return _pictures(f, tag_kind(f))


# ---- writing --------------------------------------------------------------------------------
def _as_values(v) -> Values | None:
    if v is None:
        return None
    return _clean([v] if isinstance(v, str) else list(v))


def _num_pair(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(\d*)\s*)?", text)
    if not m:
        raise ValueError(f"{text!r} is not a number or n/total (MP4 stores numbers only)")
    return int(m.group(1)), int(m.group(2) or 0)


def _id3_date_digits(text: str, v23: bool) -> str:
    """ID3 dates compared as digits; v2.3 keeps year, day+month (TDAT) and hour+minute (TIME)."""
    d = re.sub(r"\D", "", text)
    if v23:
        d = d[:4] + (d[4:8] if len(d) >= 8 else "") + (d[8:12] if len(d) >= 12 else "")
    return d


def _canonical(kind: str, name: str, values: Values | None, v23: bool) -> Values | None:
    """What `values` read back as after writing them to a file of this kind."""
    if not values:
        return None
    if kind == "mp4" and name in ("tracknumber", "discnumber"):
        n, total = _num_pair(values[0])
        return [f"{n}/{total}" if total else str(n)] if n or total else None
    if kind == "id3":
        if ID3_FRAMES[name].startswith("UFID:"):
            return values[:1]
        if v23 and len(values) > 1:
            return ["/".join(values)]
    return list(values)


def _same(kind: str, name: str, got: Values | None, want: Values | None, v23: bool) -> bool:
    if kind == "id3" and name == "date" and got and want and len(got) == len(want) == 1:
        g, w = _id3_date_digits(got[0], v23), _id3_date_digits(want[0], v23)
        return bool(w) and g[:len(w)] == w and not g[len(w):].strip("0")
    return got == want


def _set_id3(tags, name: str, values: Values | None) -> None:
    from mutagen.id3 import TXXX, UFID, Frames

    key = ID3_FRAMES[name]
    tags.delall(key)
    if values is None:
        return
    if key.startswith("UFID:"):
        tags.add(UFID(owner=key[5:], data=values[0].encode("utf-8")))
    elif key.startswith("TXXX:"):
        tags.add(TXXX(encoding=3, desc=key[5:], text=values))
    else:
        tags.add(Frames[key](encoding=3, text=values))


def _set_mp4(tags, name: str, values: Values | None) -> None:
    from mutagen.mp4 import MP4FreeForm

    atom = MP4_ATOMS[name]
    if atom in tags:
        del tags[atom]
    if values is None:
        return
    if atom in ("trkn", "disk"):
        tags[atom] = [_num_pair(values[0])]
    elif atom.startswith("----"):
        tags[atom] = [MP4FreeForm(v.encode("utf-8")) for v in values]
    else:
        tags[atom] = list(values)


def _set_vorbis(tags, name: str, values: Values | None) -> None:
    if name in tags:
        del tags[name]
    if values is not None:
        tags[name] = list(values)


def _add_pictures(f, kind: str, pictures: Sequence[Picture]) -> None:
    from mutagen.flac import FLAC
    from mutagen.flac import Picture as FlacPicture
    from mutagen.id3 import APIC
    from mutagen.mp4 import MP4Cover

    for p in pictures:
        if kind == "id3":
            f.tags.add(APIC(encoding=3, mime=p.mime, type=p.type, desc=p.desc, data=p.data))
        elif kind == "mp4":
            fmt = MP4Cover.FORMAT_PNG if p.mime == "image/png" else MP4Cover.FORMAT_JPEG
            f.tags["covr"] = list(f.tags.get("covr", [])) + [MP4Cover(p.data, imageformat=fmt)]
        else:
            fp = FlacPicture()
            fp.data, fp.mime, fp.type, fp.desc = p.data, p.mime, p.type, p.desc
            if isinstance(f, FLAC):
                f.add_picture(fp)
            else:  # Ogg Vorbis / Opus carry FLAC picture blocks, base64-encoded
                block = base64.b64encode(fp.write()).decode("ascii")
                f.tags["metadata_block_picture"] = list(f.tags.get("metadata_block_picture", [])) + [block]


def _stream(f) -> tuple:
    info = getattr(f, "info", None)
    return (round(getattr(info, "length", 0) or 0, 3), getattr(info, "sample_rate", None),
            getattr(info, "channels", None))


def write_tags(path: Path | str, changes: Changes, *, add_pictures: Sequence[Picture] = (),
               id3v23: bool = False) -> dict[str, Values]:
    """Write `changes` (name -> values, None deletes) into `path` IN PLACE, then verify.

    Callers pass a temporary copy (as `tagmatch.organize.apply` stages one): mutagen rewrites files in place, so a failure
    midway must never hit the user's file. Tags not named in `changes` are kept. `add_pictures` are
    embedded only when the file has no art. After saving, the file is re-read: every tag must read
    back as intended, existing art and the audio stream parameters must be unchanged; otherwise
    `TagWriteError`. Returns the tags as read back.
    """
    unknown = set(changes) - set(TAG_NAMES)
    if unknown:
        raise TagWriteError(path, f"unknown tag names: {', '.join(sorted(unknown))}")
    f = _open(path, TagWriteError)
    kind = tag_kind(f)
    if kind is None:
        raise TagWriteError(path, f"cannot write tags to {type(f).__name__} files")
    wanted = {k: _as_values(v) for k, v in changes.items()}
    with _guard(path, TagWriteError, "cannot write tags"):
        before, pics_before, stream_before = _values(f, kind), _pictures(f, kind), _stream(f)
        if f.tags is None:
            f.add_tags()
        setter = {"id3": _set_id3, "mp4": _set_mp4, "vorbis": _set_vorbis}[kind]
        for name, values in wanted.items():
            setter(f.tags, name, values)
        added = list(add_pictures) if add_pictures and not pics_before else []
        _add_pictures(f, kind, added)
        v23 = id3v23 and kind == "id3"
        if kind == "id3":
            if v23:
                # update_to_v23 drops v2.4-only frames; sort orders are the user's data and every
                # player reads them in v2.3 too (Picard keeps them the same way)
                kept = [fr for k in _KEEP_IN_V23 for fr in f.tags.getall(k)]
                f.tags.update_to_v23()
                for fr in kept:
                    f.tags.add(fr)
                f.save(v2_version=3, v23_sep="/")
            else:
                f.save(v2_version=4)
        else:
            f.save()
        expected = {n: _canonical(kind, n, wanted[n] if n in wanted else before.get(n), v23) for n in TAG_NAMES}
    g = _open(path, TagWriteError)
    with _guard(path, TagWriteError, "cannot re-read tags after writing"):
        after, pics_after, stream_after = _values(g, kind), _pictures(g, kind), _stream(g)
    bad = [n for n in TAG_NAMES if not _same(kind, n, after.get(n), expected[n], v23)]
    if bad:
        n = bad[0]
        raise TagWriteError(path, f"verification failed: {n} reads back as {after.get(n)!r}, "
                                  f"expected {expected[n]!r}")
    if pics_after != (pics_before or added):
        raise TagWriteError(path, "verification failed: embedded art changed")
    if stream_after != stream_before:
        raise TagWriteError(path, f"verification failed: audio stream changed {stream_before} -> {stream_after}")
    return after


def is_read_only(path: Path | str) -> bool:
    """A file the user marked read-only (no write bit at all) or we may not write: never retag it.

    The mode bits count even for root, who could write anyway: read-only is the user's intent.
    """
    st = os.stat(path)
    return not (st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) or not os.access(path, os.W_OK)


# ---- stream facts ---------------------------------------------------------------------------
LOSSLESS = ("flac", "wav", "aiff", "alac", "wavpack", "ape", "tta")


def stream_info(path: Path | str) -> dict:
    """Format, codec facts and duration as mutagen reads them from the header (no decoding):
    {"format", "lossless", "bitrate" (bit/s), "sample_rate", "channels", "duration_s"}.
    Raises TagReadError for files mutagen cannot parse."""
    f = _open(path)
    info = getattr(f, "info", None)
    fmt = type(f).__name__.lower()
    fmt = {"mp3": "mp3", "easymp3": "mp3", "flac": "flac", "oggvorbis": "vorbis", "oggopus": "opus",
           "wave": "wav", "aiff": "aiff", "wavpack": "wavpack", "monkeysaudio": "ape"}.get(fmt, fmt)
    if fmt in ("mp4", "easymp4"):
        codec = str(getattr(info, "codec", "") or "")
        fmt = "alac" if codec.startswith("alac") else "aac"
    length = float(getattr(info, "length", 0) or 0)
    bitrate = int(getattr(info, "bitrate", 0) or 0)
    if not bitrate and length > 0:  # Opus headers carry none: the file's average
        bitrate = int(Path(path).stat().st_size * 8 / length)
    return {"format": fmt, "lossless": fmt in LOSSLESS, "bitrate": bitrate,
            "sample_rate": getattr(info, "sample_rate", None), "channels": getattr(info, "channels", None),
            "duration_s": round(length, 3)}

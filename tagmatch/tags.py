"""Tags: the one place that maps tagmatch's tag names to each format's frames (mutagen).

Our names: title, artist, album, albumartist, tracknumber, discnumber, date, genre, plus
MusicBrainz ids. ID3 (MP3, WAV, AIFF) uses frames, MP4 uses atoms, Vorbis-style formats (FLAC,
Ogg, Opus) use the names directly.
"""

from __future__ import annotations

from pathlib import Path

from tagmatch.errors import TagmatchError

TAG_NAMES = ("title", "artist", "album", "albumartist", "tracknumber", "discnumber", "date", "genre",
             "musicbrainz_trackid", "musicbrainz_albumid", "musicbrainz_artistid")

ID3_FRAMES = {
    "title": "TIT2", "artist": "TPE1", "album": "TALB", "albumartist": "TPE2",
    "tracknumber": "TRCK", "discnumber": "TPOS", "date": "TDRC", "genre": "TCON",
    "musicbrainz_trackid": "UFID:http://musicbrainz.org",
    "musicbrainz_albumid": "TXXX:MusicBrainz Album Id",
    "musicbrainz_artistid": "TXXX:MusicBrainz Artist Id",
}
MP4_ATOMS = {
    "title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "albumartist": "aART",
    "tracknumber": "trkn", "discnumber": "disk", "date": "\xa9day", "genre": "\xa9gen",
    "musicbrainz_trackid": "----:com.apple.iTunes:MusicBrainz Track Id",
    "musicbrainz_albumid": "----:com.apple.iTunes:MusicBrainz Album Id",
    "musicbrainz_artistid": "----:com.apple.iTunes:MusicBrainz Artist Id",
}


class TagReadError(TagmatchError):
    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(reason)


def _id3_value(tags, frame_id: str) -> str | None:
    if frame_id.startswith("UFID:"):
        frame = tags.get(frame_id)
        return frame.data.decode("ascii", "replace") if frame is not None else None
    frame = tags.get(frame_id)
    if frame is None or not getattr(frame, "text", None):
        return None
    return "; ".join(str(t) for t in frame.text)


def _mp4_value(tags, atom: str) -> str | None:
    v = tags.get(atom)
    if not v:
        return None
    v = v[0]
    if isinstance(v, tuple):  # (number, total)
        return str(v[0]) if v[0] else None
    if isinstance(v, bytes):  # freeform atoms
        return v.decode("utf-8", "replace")
    return str(v)


def read_tags(path: Path | str) -> dict[str, str]:
    """Read our tag names from any supported file; missing tags are absent from the dict."""
    import mutagen
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4Tags

    try:
        f = mutagen.File(str(path))
    except Exception as exc:  # mutagen raises MutagenError and plain OSErrors
        raise TagReadError(path, f"cannot read tags: {exc}") from exc
    if f is None or f.tags is None:
        return {}
    tags, out = f.tags, {}
    for name in TAG_NAMES:
        if isinstance(tags, ID3):
            value = _id3_value(tags, ID3_FRAMES[name])
        elif isinstance(tags, MP4Tags):
            value = _mp4_value(tags, MP4_ATOMS[name])
        else:  # Vorbis comments (FLAC, Ogg Vorbis, Opus) and APEv2 use plain names
            try:
                raw = tags.get(name) or tags.get(name.upper())
            except Exception:
                raw = None
            value = "; ".join(str(v) for v in raw) if isinstance(raw, list) and raw else (str(raw) if raw else None)
        if value:
            out[name] = value
    return out

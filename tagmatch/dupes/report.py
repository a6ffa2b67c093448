"""The dupes report: the document `tagmatch dupes --json` writes and the review reads, and the
edits the review makes to it (a group's keeper).

One type (`DupesReport`), one writer (`save`), one reader (`read`, one-line errors). Version 1:

```
{"version": 1, "roots": ["<searched folder>", ...], "groups": [
  {"kind": "duplicate" | "partial", "keeper": "<path>", "files": [
    {"path", "format", "lossless", "bitrate", "sample_rate", "channels", "duration_s", "size",
     "tags": {...}, "overlap_s": <audio shared with the group's first file>, "offset_s": ...}]}],
 "library": [{"path", "library_path", "library_tags", "kind", "overlap_s", "offset_s"}]}  # --against-library
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tagmatch.errors import TagmatchError

if TYPE_CHECKING:
    from tagmatch.dupes.find import Group, LibraryHit
    from tagmatch.organize.scandoc import ScanDoc
    from tagmatch.store.shards import Store


DUPES_VERSION = 1
KINDS = ("duplicate", "partial")


def _same_file(a: str | Path, b: str | Path) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _check_group(g, where: str) -> None:
    if not isinstance(g, dict) or g.get("kind") not in KINDS:
        raise TagmatchError(f"{where}: kind is none of {', '.join(KINDS)}")
    files = g.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str) for f in files):
        raise TagmatchError(f"{where}: 'files' is not a list of files with paths")
    if not isinstance(g.get("keeper"), str):
        raise TagmatchError(f"{where} has no keeper")


@dataclass
class DupesReport:
    """Groups of files holding the same recording (or parts of one), found under `roots`."""

    roots: list[str]
    groups: list[dict]
    library: list[dict] | None = None  # files already in the reference library, with what they match
    version: int = DUPES_VERSION
    extra: dict = field(default_factory=dict)  # top-level keys this version does not use, kept

    @classmethod
    def from_json(cls, doc, source: str = "report") -> "DupesReport":
        from tagmatch.fsutil import document_version

        if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
            raise TagmatchError(f"{source} is not a tagmatch dupes report (no 'groups' list)")
        version = document_version(doc, source, "dupes report", DUPES_VERSION, "search again")
        roots = doc.get("roots") or []
        if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
            raise TagmatchError(f"{source}: 'roots' is not a list of folders")
        for n, g in enumerate(doc["groups"]):
            _check_group(g, f"{source}: group {n + 1}")
        library = doc.get("library")
        if library is not None and not (isinstance(library, list) and all(isinstance(h, dict) for h in library)):
            raise TagmatchError(f"{source}: 'library' is not a list")
        extra = {k: v for k, v in doc.items() if k not in ("version", "roots", "groups", "library")}
        return cls(roots, doc["groups"], library, version, extra)

    @classmethod
    def read(cls, path: Path | str) -> "DupesReport":
        from tagmatch.fsutil import read_json

        return cls.from_json(read_json(path), str(path))

    def to_json(self) -> dict:
        doc = {"version": DUPES_VERSION, "roots": self.roots, **self.extra, "groups": self.groups}
        return doc if self.library is None else {**doc, "library": self.library}

    def save(self, path: Path | str) -> None:
        """Write atomically, formatted as `dupes --json` writes it."""
        from tagmatch.fsutil import atomic_write_text, json_text

        atomic_write_text(Path(path), json_text(self.to_json(), indent=1) + "\n")

    def find_group(self, path: str | Path) -> int:
        """Index of the group holding `path`: its duplicate group when it has one (a file may also
        be in a partial pair), else the first group naming it."""
        hits = [i for i, g in enumerate(self.groups) if any(_same_file(f["path"], path) for f in g["files"])]
        if not hits:
            raise TagmatchError(f"{path} is in no group of the report")
        return next((i for i in hits if self.groups[i].get("kind") == "duplicate"), hits[0])

    def set_keeper(self, group_index: int, path: str | Path) -> None:
        """Make `path` the keeper of duplicate group `group_index` (the user's choice over the rule).
        The files' overlap_s/offset_s stay measured against the group's first file, the one the
        rule proposed: they describe the audio, which a new keeper does not change."""
        if not 0 <= group_index < len(self.groups):
            raise TagmatchError(f"no group {group_index + 1} in the report ({len(self.groups)} groups)")
        g = self.groups[group_index]
        if g.get("kind") != "duplicate":
            raise TagmatchError(f"group {group_index + 1} is a partial overlap: none of it is moved, so it has no keeper")
        member = next((f["path"] for f in g["files"] if _same_file(f["path"], path)), None)
        if member is None:
            raise TagmatchError(f"{path} is not in group {group_index + 1}")
        g["keeper"] = member


def file_facts(path: str, tags: dict, size: int) -> dict:
    """What the report shows per file; a header mutagen cannot parse leaves the codec fields empty."""
    from tagmatch.organize.tags import TagReadError, stream_info

    try:
        info = stream_info(path)
    except TagReadError:
        info = {"format": Path(path).suffix.lower().lstrip("."), "lossless": False, "bitrate": None,
                "sample_rate": None, "channels": None, "duration_s": None}
    return {"path": path, **info, "size": size, "tags": tags}


def dupes_doc(groups: list[Group], store: Store, infos: dict[int, dict], roots: list[Path],
              library_hits: list[LibraryHit] = (), library: Store | None = None) -> DupesReport:
    """The report of these groups. Per file, overlap_s is the audio it shares with the keeper, and
    offset_s the time in the keeper that this file's start lines up with (negative: the file starts
    before the keeper does). Files in no group are not listed."""
    out_groups = []
    for g in groups:
        files = []
        for m in g.members:
            ov = g.overlaps.get(m)
            files.append({**infos[m], "overlap_s": ov.overlap_s if ov else None,
                          "offset_s": 0.0 - ov.offset_s if ov else 0.0})
        out_groups.append({"kind": g.kind, "keeper": infos[g.members[0]]["path"], "files": files})
    hits = None
    if library is not None:
        hits = [{"path": infos[h.track]["path"], "library_path": library.tracks[h.library_track].path,
                 "library_tags": library.tracks[h.library_track].tags, "kind": h.overlap.kind,
                 "overlap_s": h.overlap.overlap_s, "offset_s": h.overlap.offset_s}
                for h in library_hits]
    return DupesReport([str(r) for r in roots], out_groups, hits)


def load_report(path: Path | str) -> DupesReport | ScanDoc:
    """The document `tagmatch review FILE` opens: a DupesReport when it has "groups", else a
    ScanDoc. A file that is neither raises TagmatchError (one line)."""
    from tagmatch.fsutil import read_json
    from tagmatch.organize.scandoc import ScanDoc

    doc = read_json(path)
    if isinstance(doc, dict) and "groups" in doc:
        return DupesReport.from_json(doc, str(path))
    return ScanDoc.from_json(doc, str(path))

"""The dupes report: the JSON document `tagmatch dupes --json` writes and the review reads, and
the edits the review makes to it (a group's keeper)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tagmatch.errors import TagmatchError

if TYPE_CHECKING:
    from tagmatch.dupes.find import Group, LibraryHit
    from tagmatch.store.shards import Store


DUPES_VERSION = 1


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
              library_hits: list[LibraryHit] = (), library: Store | None = None) -> dict:
    """The JSON report: {"version", "roots", "groups": [{"kind", "keeper", "files": [...]}], "library"}.

    Per file, overlap_s is the audio it shares with the keeper, and offset_s the time in the keeper
    that this file's start lines up with (negative: the file starts before the keeper does). Files
    in no group are not listed."""
    out_groups = []
    for g in groups:
        files = []
        for m in g.members:
            ov = g.overlaps.get(m)
            files.append({**infos[m], "overlap_s": ov.overlap_s if ov else None,
                          "offset_s": 0.0 - ov.offset_s if ov else 0.0})
        out_groups.append({"kind": g.kind, "keeper": infos[g.members[0]]["path"], "files": files})
    doc = {"version": DUPES_VERSION, "roots": [str(r) for r in roots], "groups": out_groups}
    if library is not None:
        doc["library"] = [{"path": infos[h.track]["path"], "library_path": library.tracks[h.library_track].path,
                           "library_tags": library.tracks[h.library_track].tags, "kind": h.overlap.kind,
                           "overlap_s": h.overlap.overlap_s, "offset_s": h.overlap.offset_s}
                          for h in library_hits]
    return doc


def load_dupes(path: Path | str) -> dict:
    """Read and check a dupes report (as written by `tagmatch dupes --json`)."""
    from tagmatch.fsutil import read_json

    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("version") != DUPES_VERSION or not isinstance(doc.get("groups"), list):
        raise TagmatchError(f"{path} is not a tagmatch dupes report (version {DUPES_VERSION})")
    return doc


def load_report(path: Path | str) -> tuple[str, dict]:
    """("dupes", doc) for a dupes report (it has "groups"), else ("scan", doc): which screen
    `tagmatch review FILE` opens. A file that is neither raises TagmatchError (one line)."""
    from tagmatch.fsutil import read_json
    from tagmatch.organize.plan import load_scan

    doc = read_json(path)
    if isinstance(doc, dict) and "groups" in doc:
        return "dupes", load_dupes(path)
    return "scan", load_scan(path)


def save_dupes(doc: dict, path: Path | str) -> None:
    """Write a report back atomically, formatted as `dupes --json` writes it."""
    import json

    from tagmatch.fsutil import atomic_write_text

    atomic_write_text(Path(path), json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def _same_file(a: str | Path, b: str | Path) -> bool:
    import os

    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def find_group(doc: dict, path: str | Path) -> int:
    """Index of the group holding `path`: its duplicate group when it has one (a file may also be in
    a partial pair), else the first group naming it."""
    hits = [i for i, g in enumerate(doc["groups"]) if any(_same_file(f["path"], path) for f in g["files"])]
    if not hits:
        raise TagmatchError(f"{path} is in no group of the report")
    return next((i for i in hits if doc["groups"][i].get("kind") == "duplicate"), hits[0])


def set_keeper(doc: dict, group_index: int, path: str | Path) -> None:
    """Make `path` the keeper of duplicate group `group_index` (the user's choice over the rule).
    The files' overlap_s/offset_s stay measured against the group's first file, the one the rule
    proposed: they describe the audio, which a new keeper does not change."""
    groups = doc["groups"]
    if not 0 <= group_index < len(groups):
        raise TagmatchError(f"no group {group_index + 1} in the report ({len(groups)} groups)")
    g = groups[group_index]
    if g.get("kind") != "duplicate":
        raise TagmatchError(f"group {group_index + 1} is a partial overlap: none of it is moved, so it has no keeper")
    member = next((f["path"] for f in g["files"] if _same_file(f["path"], path)), None)
    if member is None:
        raise TagmatchError(f"{path} is not in group {group_index + 1}")
    g["keeper"] = member

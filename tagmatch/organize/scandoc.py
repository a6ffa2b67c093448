"""The scan document: what `tagmatch scan --json` writes and `review`, `decide` and `apply` read.

One type (`ScanDoc`), one writer (`ScanDoc.save`), one reader (`ScanDoc.read`) that checks the
shape and says in one line what is wrong. The JSON, version 2:

```
{"version": 2, "store": "<path>", "target": "<the scanned folder or file>", "files": [
  {"path": ..., "status": "match" | "unknown" | "error", "error": null | "<one line>",
   "match": null | {"path": <reference file>, "tags": {...}, "confidence": 0.93, "offset_s": 41.5,
                    "fragments_agreeing": 4, "fragments_total": 5, "score": 0.21, "margin": 0.17,
                    "verified": null | 0.31,    # correlation with the reference file (tagmatch.match.verify)
                    "significance": null | 9.8},  # and how many standard deviations above chance
   "alternatives": [<same shape as match>, ...],
   "stopped_at_s": null | 10.0,     # where reading stopped, sure of the answer; null: read it all
   "seen": null | {"size": ..., "mtime_ns": ..., "blake2b_edges": "..."},  # tagmatch.organize.seen
   "fingerprint": {"dim": 60, "int8": "<base64>"},  # its audio, for rejections (organize.rejections)
   "passed_over": ["<reference path>", ...],  # rejected before for this audio: not offered again
   "decision": {...}}]}             # added by the review (tagmatch.organize.plan.set_decision)
```

Version 1 is version 2 without "seen": such scans still open, and apply cannot tell whether
their files changed since. Entries stay plain dicts: they are the JSON contract that scripts read and edit, and keys this
version does not know are kept as they are on a round trip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tagmatch.errors import TagmatchError

SCAN_VERSION = 2
STATUSES = ("match", "unknown", "error")


def _norm(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_tags(tags, where: str) -> None:
    """Tags as scans and decisions hold them: name -> text, a list of texts, or null (removed)."""
    if not isinstance(tags, dict):
        raise TagmatchError(f"{where}: 'tags' is not an object")
    for name, v in tags.items():
        if not (v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
            raise TagmatchError(f"{where}: tag {name!r} is not text or a list of texts")


def _check_candidate(c, where: str) -> None:
    if not isinstance(c, dict) or not isinstance(c.get("path"), str):
        raise TagmatchError(f"{where} is not a candidate (no 'path')")
    _check_tags(c.get("tags", {}), where)
    for key in ("confidence", "offset_s"):
        if c.get(key) is not None and not _number(c[key]):
            raise TagmatchError(f"{where}: '{key}' is not a number")


def _check_decision(d, where: str) -> None:
    if not isinstance(d, dict):
        raise TagmatchError(f"{where}: 'decision' is not an object")
    choice = d.get("choice", 0)
    if not isinstance(choice, int) or isinstance(choice, bool) or choice < 0:
        raise TagmatchError(f"{where}: the decision's 'choice' is not 0 or an alternative's number")
    if d.get("tags") is not None:
        _check_tags(d["tags"], f"{where}, decision")
    if d.get("path") is not None and not isinstance(d["path"], str):
        raise TagmatchError(f"{where}: the decision's 'path' is not a path")


def _check_entry(f, where: str) -> None:
    """An entry's shape: what planning and the review rely on without looking again."""
    if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not f["path"]:
        raise TagmatchError(f"{where} has no 'path'")
    if f.get("status") not in STATUSES:
        raise TagmatchError(f"{where}: status {f.get('status')!r} is none of {', '.join(STATUSES)}")
    if f.get("match") is not None:
        _check_candidate(f["match"], f"{where}, match")
    alts = f.get("alternatives") or []
    if not isinstance(alts, list):
        raise TagmatchError(f"{where}: 'alternatives' is not a list")
    for k, a in enumerate(alts):
        _check_candidate(a, f"{where}, alternative {k + 1}")
    rec = f.get("seen")
    if rec is not None and not (isinstance(rec, dict) and isinstance(rec.get("size"), int)
                                and isinstance(rec.get("blake2b_edges"), str)):
        raise TagmatchError(f"{where}: 'seen' is not a record of size and hash")
    if f.get("decision") is not None:
        _check_decision(f["decision"], where)
    if f.get("error") is not None and not isinstance(f["error"], str):
        raise TagmatchError(f"{where}: 'error' is not text")
    passed = f.get("passed_over")
    if passed is not None and not (isinstance(passed, list) and all(isinstance(p, str) for p in passed)):
        raise TagmatchError(f"{where}: 'passed_over' is not a list of paths")
    if f.get("fingerprint") is not None and not isinstance(f["fingerprint"], dict):
        raise TagmatchError(f"{where}: 'fingerprint' is not an object")


@dataclass
class ScanDoc:
    """A scan: the store it was matched against, what was scanned, and one entry per file."""

    store: str
    files: list[dict]
    target: str | None = None
    version: int = SCAN_VERSION
    extra: dict = field(default_factory=dict)  # top-level keys this version does not use, kept

    @classmethod
    def from_json(cls, doc, source: str = "scan") -> "ScanDoc":
        """Check a parsed document; TagmatchError names `source` and the first fault."""
        from tagmatch.fsutil import document_version

        if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
            raise TagmatchError(f"{source} is not a tagmatch scan (no 'files' list)")
        version = document_version(doc, source, "scan", SCAN_VERSION, "scan again")
        for n, f in enumerate(doc["files"]):
            _check_entry(f, f"{source}: file {n + 1}")
        target = doc.get("target")
        if target is not None and not isinstance(target, str):
            raise TagmatchError(f"{source}: 'target' is not a path")
        extra = {k: v for k, v in doc.items() if k not in ("version", "store", "target", "files")}
        return cls(str(doc.get("store") or ""), doc["files"], target, version, extra)

    @classmethod
    def read(cls, path: Path | str) -> "ScanDoc":
        """Read and check a scan file (one-line TagmatchError for anything else)."""
        from tagmatch.fsutil import read_json

        return cls.from_json(read_json(path), str(path))

    def to_json(self) -> dict:
        doc: dict = {"version": self.version, "store": self.store}  # a version-1 scan stays one
        if self.target is not None:
            doc["target"] = self.target
        return {**doc, **self.extra, "files": self.files}

    def save(self, path: Path | str) -> None:
        """Write atomically (the old file or the new one, never half), as `scan --json` does."""
        from tagmatch.fsutil import atomic_write_text, json_text

        atomic_write_text(Path(path), json_text(self.to_json(), indent=1) + "\n")

    def entry(self, path: str | Path) -> dict:
        """The entry for a file path (TagmatchError when absent)."""
        key = _norm(path)
        for f in self.files:
            if _norm(f["path"]) == key:
                return f
        raise TagmatchError(f"not in the scan: {path}")

    @property
    def folder(self) -> str:
        """What was scanned: the target, else the folder the files share."""
        if self.target:
            return self.target
        return os.path.commonpath([os.path.dirname(f["path"]) for f in self.files]) if self.files else ""

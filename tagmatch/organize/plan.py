"""Plans: which files of a scan to change and how (new path, tag changes), as plain data.

Nothing here writes a user file; `apply.py` carries a plan out. The review's decisions live in the
scan JSON itself, as an optional key of each `files[]` entry (everything else stays as `scan`
wrote it):

    "decision": {"status": "accepted" | "rejected",
                 "choice": 0,            # 0 = the match, 1..3 = that alternative
                 "tags": {"genre": "Jazz", "date": null},   # overrides; null removes the tag
                 "path": "Some/Where.mp3"}                  # optional explicit new path

A file is accepted when its decision says so, or (no decision) when `min_confidence` is given and
its status is `match` at or above it. Error and rejected files are never touched, nor are unknown
files, except one accepted with tags or a path typed by hand (`hand_tagged`): the library lacks
the song, so it is retagged and renamed from those overrides alone (no reference, no art).
Tag values typed by a person hold several values separated by `VALUE_SEP` (as plans print them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from tagmatch.errors import TagmatchError
from tagmatch.organize.confine import outside, scan_root
from tagmatch.organize.seen import changed
from tagmatch.organize.naming import DEFAULT_TEMPLATE, check_template, destination, free_path, path_key, user_path
from tagmatch.organize.scandoc import ScanDoc
from tagmatch.organize.tags import TAG_NAMES, TagReadError, read_pictures, read_tag_values

MODES = ("move", "copy")
VALUE_SEP = "; "  # between the values of a multi-value tag, as printed and as typed
Values = list[str]


@dataclass(frozen=True)
class TagChange:
    name: str
    old: Values | None
    new: Values | None  # None: the tag is removed


@dataclass
class PlannedOp:
    """One accepted file: where it goes and what changes. `mode` 'move' renames in place (or moves
    under --dest); 'copy' leaves the original alone."""

    src: Path
    dst: Path
    mode: str
    tag_changes: list[TagChange]
    art_from: Path | None = None  # reference file whose art is embedded (the file has none)
    reference: str | None = None
    confidence: float | None = None
    why: str = ""

    @property
    def changes(self) -> dict[str, Values | None]:
        """name -> new values (None deletes): what `tags.write_tags` takes."""
        return {c.name: c.new for c in self.tag_changes}

    @property
    def retags(self) -> bool:
        return bool(self.tag_changes or self.art_from)


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str


@dataclass
class Plan:
    ops: list[PlannedOp] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    mode: str = "move"
    dest: Path | None = None
    template: str = DEFAULT_TEMPLATE

    @property
    def verb(self) -> str:
        """What each op does to its file, as plans print it: 'copy', 'move' (to --dest) or 'rename'."""
        return "rename" if self.mode == "move" and not self.dest else self.mode

    @property
    def summary(self) -> str:
        """'5 files: 4 to rename, 3 to retag', the line before a dry run's or a confirmation's end."""
        n_ren = sum(op.src != op.dst for op in self.ops)
        return f"{len(self.ops)} files: {n_ren} to {self.verb}, {sum(op.retags for op in self.ops)} to retag"


# ---- decisions ------------------------------------------------------------------------------
def _norm(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def split_values(text: str) -> Values | None:
    """Typed text -> tag values: split on VALUE_SEP, stripped, empties dropped; None (remove the
    tag) when nothing is left. A value that itself holds '; ' cannot be typed."""
    out = [v.strip() for v in text.split(VALUE_SEP.strip())]
    return [v for v in out if v] or None


def check_tag_names(names) -> None:
    bad = set(names) - set(TAG_NAMES)
    if bad:
        raise TagmatchError(f"unknown tag name(s): {', '.join(sorted(bad))} (known: {', '.join(TAG_NAMES)})")


def hand_tagged(entry: dict) -> bool:
    """An unknown file accepted with tags or a path given by hand: planned from those alone."""
    d = entry.get("decision") or {}
    return entry.get("status") == "unknown" and d.get("status") == "accepted" and bool(d.get("tags") or d.get("path"))


def _candidate(entry: dict, choice: int) -> dict | None:
    """The candidate whose tags a file gets: {} for an unknown file (the below-threshold guess is
    never used; only hand-typed tags count), None when `choice` does not exist."""
    if entry.get("status") == "unknown":
        return {}
    cands = [entry.get("match"), *(entry.get("alternatives") or [])]
    return cands[choice] if isinstance(choice, int) and 0 <= choice < len(cands) else None


def set_decision(scan_doc: ScanDoc, path: str | Path, status: str, *, choice: int = 0,
                 tags: Mapping[str, "str | Sequence[str] | None"] | None = None,
                 new_path: str | None = None) -> dict:
    """Record the review's verdict on one file in `scan_doc` (in place; the caller saves it).

    The TUI and `tagmatch decide` call this: `status` 'accepted' or 'rejected'; `choice` 0 for the
    match, 1..3 for an alternative; `tags` overrides the chosen reference's tags (None removes one);
    `new_path` overrides the template (relative to --dest or the file's folder). An unknown file
    can be accepted only with `tags` or `new_path` (tagged by hand). The decision is replaced, not
    merged. Returns it; `ScanDoc.save` writes the document back.
    """
    if status not in ("accepted", "rejected"):
        raise TagmatchError(f"decision status must be 'accepted' or 'rejected', not {status!r}")
    entry = scan_doc.entry(path)
    if status == "accepted" and entry.get("status") == "unknown":
        if choice != 0 or not (tags or new_path):
            raise TagmatchError(f"{entry['path']} is unknown (not in the library): it can only be "
                                "accepted with tags or a path given by hand")
    elif status == "accepted":
        n_alt = len(entry.get("alternatives") or [])
        if (choice == 0 and not entry.get("match")) or not 0 <= choice <= n_alt:
            raise TagmatchError(f"{entry['path']}: no candidate {choice} to accept")
    check_tag_names(tags or {})
    decision: dict = {"status": status, "choice": choice}
    if tags:
        decision["tags"] = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v)  # compact JSON
                            for k, v in tags.items()}
    if new_path:
        decision["path"] = str(new_path)
    replace_decision(entry, decision)
    return decision


def clear_decision(scan_doc: ScanDoc, path: str | Path) -> None:
    replace_decision(scan_doc.entry(path), None)


def replace_decision(entry: dict, decision: dict | None) -> None:
    """Put `decision` (None: none) on the entry, and keep the rejections file in step: a
    rejection is remembered by the file's audio, and forgotten when it is taken back
    (tagmatch.organize.rejections). The one way the review and `decide` change a decision."""
    from tagmatch.organize import rejections

    old = entry.get("decision") or {}
    if old.get("status") == "rejected" and (decision or {}).get("status") != "rejected":
        rejections.forget(entry, entry.get("match"))
    if decision is None:
        entry.pop("decision", None)
    else:
        if decision.get("status") == "rejected" and old.get("status") != "rejected":
            rejections.remember(entry, entry.get("match"))
        entry["decision"] = decision


# ---- planning --------------------------------------------------------------------------------
def _accept(entry: dict, min_confidence: float | None) -> tuple[int, str] | str:
    """(choice, why) when the file is accepted, else the reason it is skipped."""
    status, d = entry.get("status"), entry.get("decision") or {}
    if hand_tagged(entry):
        return 0, "tagged by hand in review"
    if status != "match":
        extra = " (never applied, even when accepted)" if d.get("status") == "accepted" else ""
        return f"status {status}{extra}"
    if d.get("status") == "rejected":
        return "rejected in review"
    if d.get("status") == "accepted":
        choice = d.get("choice", 0)
        return (choice, "accepted in review") if isinstance(choice, int) else f"bad choice {choice!r}"
    if d:
        return f"unknown decision status {d.get('status')!r}"
    if min_confidence is None:
        return "not reviewed"
    conf = (entry.get("match") or {}).get("confidence") or 0.0
    if conf >= min_confidence:
        return 0, f"confidence {conf:.2f} >= {min_confidence:g}"
    return f"confidence {conf:.2f} < {min_confidence:g}"


def _as_values(v) -> Values | None:
    if v is None:
        return None
    out = [str(x) for x in ([v] if isinstance(v, str) else v) if str(x) != ""]
    return out or None


def target_tags(candidate: dict, overrides: Mapping | None = None) -> dict[str, Values | None]:
    """The tags to give a file: the reference's (from the scan JSON), real multi-value lists where
    the reference file still has them (the JSON joins them with '; '), then the overrides.
    Tags the reference lacks are absent: the file keeps its own."""
    ref_values: dict[str, Values] = {}
    ref = candidate.get("path")
    if ref and Path(ref).is_file():
        try:
            ref_values = read_tag_values(ref)
        except TagReadError:
            pass
    out: dict[str, Values | None] = {}
    for name, v in (candidate.get("tags") or {}).items():
        if name not in TAG_NAMES or v is None:
            continue
        if isinstance(v, str) and name in ref_values and "; ".join(ref_values[name]) == v:
            out[name] = ref_values[name]
        elif (vals := _as_values(v)) is not None:
            out[name] = vals
    for name, v in (overrides or {}).items():
        if name in TAG_NAMES:
            out[name] = _as_values(v)
    return out


def _art_from(candidate: dict, src: Path) -> Path | None:
    ref = candidate.get("path")
    if not ref or not Path(ref).is_file():
        return None
    try:
        return Path(ref) if read_pictures(ref) and not read_pictures(src) else None
    except TagReadError:
        return None


def build_plan(scan_doc: ScanDoc, *, min_confidence: float | None = None, template: str = DEFAULT_TEMPLATE,
               dest: Path | None = None, mode: str | None = None,
               already_applied: Mapping[str, tuple[str, str]] | None = None) -> Plan:
    """Turn a scan (with decisions) into a plan. Reads tags, never writes.

    `mode` defaults to 'copy' with `dest`, else 'move' (rename in place). `already_applied`
    (from `journal.applied_sources`) maps sources done or in flight in earlier runs: skipped.
    """
    check_template(template)
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:  # also refuses nan
        raise TagmatchError(f"the minimum confidence is a number from 0 to 1, not {min_confidence}")
    mode = mode or ("copy" if dest else "move")
    if mode not in MODES:
        raise TagmatchError(f"mode must be one of {MODES}")
    dest = Path(dest).absolute() if dest else None
    plan = Plan(mode=mode, dest=dest, template=template)
    root = scan_root(scan_doc.folder)
    applied = already_applied or {}
    seen: set[str] = set()
    taken: set[str] = set()
    for entry in scan_doc.files:
        path = str(entry.get("path"))
        verdict = _accept(entry, min_confidence)
        if isinstance(verdict, str):
            plan.skipped.append(Skip(path, verdict))
            continue
        choice, why = verdict
        cand = _candidate(entry, choice)
        if cand is None:
            plan.skipped.append(Skip(path, f"accepted candidate {choice} does not exist"))
            continue
        if reason := outside(path, root):
            plan.skipped.append(Skip(path, f"refused, not a file of the scanned folder: {reason}"))
            continue
        src = Path(_norm(path))
        key = str(src)
        if key in seen:
            plan.skipped.append(Skip(path, "listed twice in the scan"))
            continue
        seen.add(key)
        if key in applied:
            run_id, state = applied[key]
            plan.skipped.append(Skip(path, f"already applied in run {run_id}" if state == "done" else
                                     f"in flight in interrupted run {run_id}: run `tagmatch undo {run_id}` first"))
            continue
        if isinstance(entry.get("seen"), dict) and src.is_file() and (reason := changed(src, entry["seen"])):
            plan.skipped.append(Skip(path, reason))
            continue
        op = _plan_op(src, cand, entry.get("decision") or {}, why, template, dest, mode, taken, root)
        if isinstance(op, str):
            plan.skipped.append(Skip(path, op))
            continue
        taken.add(path_key(op.dst))
        plan.ops.append(op)
    return plan


def _plan_op(src: Path, cand: dict, decision: dict, why: str, template: str, dest: Path | None, mode: str,
             taken: set[str], root: Path | None = None) -> PlannedOp | str:
    """One file's op (new path, tag changes, art), or the reason it has none. The new path must
    lie in `dest`, else in `root` (the scanned folder; the file's own folder when not given)."""
    if not src.is_file():
        return "file not found"
    if src.is_symlink():  # renaming the link or retagging its target would surprise: leave it
        return "a symbolic link"
    try:
        old = read_tag_values(src)
    except TagReadError as exc:
        return exc.reason
    target = target_tags(cand, decision.get("tags"))
    changes = [TagChange(n, old.get(n), v) for n, v in target.items() if old.get(n) != v]
    new_tags = {k: v for k, v in {**old, **target}.items() if v is not None}
    base = dest or src.parent
    dst = (user_path(decision["path"], src, base) if decision.get("path")
           else destination(template, new_tags, src, base))
    if reason := outside(dst, dest or root or src.parent):
        return f"refused, its new path is not in {'--dest' if dest else 'the scanned folder'}: {reason}"
    dst = free_path(dst, taken, own=src if mode == "move" else None)
    art = _art_from(cand, src)
    if dst == src and not changes and not art:
        return "already named and tagged"
    return PlannedOp(src, dst, mode, changes, art, cand.get("path"), cand.get("confidence"), why)


def preview(entry: dict, choice: int = 0, *, template: str = DEFAULT_TEMPLATE, dest: Path | None = None,
            mode: str | None = None) -> PlannedOp | str:
    """What accepting candidate `choice` of one scan entry would do (the review's detail pane):
    the op, or why there would be none. Reads tags, never writes."""
    cand = _candidate(entry, choice)
    if cand is None:
        return f"no candidate {choice}"
    mode = mode or ("copy" if dest else "move")
    dest = Path(dest).absolute() if dest else None
    return _plan_op(Path(_norm(str(entry.get("path")))), cand, entry.get("decision") or {}, "preview",
                    template, dest, mode, set())


def resulting_tags(entry: dict, choice: int = 0, overrides: Mapping | None = None) -> dict[str, Values]:
    """The tags a file ends up with once accepted: its own, then the candidate's, then `overrides`
    (what the review's edit form shows; with no overrides, what an emptied field is compared to).
    Reads tags, never writes."""
    try:
        old = read_tag_values(_norm(str(entry.get("path"))))
    except TagReadError:
        old = {}
    target = target_tags(_candidate(entry, choice) or {}, overrides)
    return {k: v for k, v in {**old, **target}.items() if v is not None}

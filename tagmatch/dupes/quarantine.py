"""Moving a report's extra copies aside: the quarantine folder's check and the plan of moves,
carried out (journaled, undoable) by `tagmatch.organize.apply`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tagmatch.dupes.reference import Reference
from tagmatch.errors import TagmatchError

if TYPE_CHECKING:
    from tagmatch.dupes.report import DupesReport


def check_quarantine(doc: DupesReport, qdir: Path | str, reference: Reference = Reference()) -> Path:
    """The quarantine folder, absolute. One inside a scanned folder is refused (the next search
    there would find the moved copies again), and one inside the reference library (they would
    be indexed as library tracks)."""
    q = Path(qdir).expanduser().absolute()
    for r in doc.roots:
        if any(p == Path(r) or p.is_relative_to(r) for p in (q, q.resolve())):
            raise TagmatchError(f"the quarantine folder {q} is inside a scanned folder ({r}); choose one outside it")
    folder = reference.folder_around(q)
    if folder is not None:
        raise TagmatchError(f"the quarantine folder {q} is inside the reference library ({folder}); "
                            "choose one outside it")
    return q


def quarantine_plan(doc: DupesReport, quarantine: Path, reference: Reference = Reference()):
    """Moves of every duplicate group's non-keepers into `quarantine`, keeping their path relative
    to the scanned folder they came from. Partial overlaps are never moved, nor is a file of the
    reference library (`reference`, read from its store, not from the document). The keeper is
    whatever the document says (edit it to choose another)."""
    from tagmatch.organize.confine import outside
    from tagmatch.organize.naming import free_path, path_key
    from tagmatch.organize.plan import Plan, PlannedOp, Skip

    roots = [Path(r) for r in doc.roots]
    quarantine = Path(quarantine).absolute()
    plan, taken = Plan(mode="move", dest=quarantine, template=""), set()
    for g in doc.groups:
        if g.get("kind") != "duplicate":
            continue
        paths = [f["path"] for f in g["files"]]
        if g["keeper"] not in paths:
            plan.skipped.append(Skip(g["keeper"], "the keeper is not one of its group's files: group left alone"))
            continue
        for p in paths:
            if p == g["keeper"]:
                continue
            src = Path(p)
            if reference.holds(src):
                plan.skipped.append(Skip(p, "refused, a file of the reference library: always kept"))
                continue
            root = next((r for r in roots if not outside(src, r)), None)
            if root is None:
                why = outside(src, roots[0]) if len(roots) == 1 else "it is in none of the scanned folders"
                plan.skipped.append(Skip(p, f"refused, not a file of the scanned folders: {why}"))
                continue
            if not src.exists():  # moved aside by an earlier run (or gone): nothing to move
                plan.skipped.append(Skip(p, "not there any more (moved aside already?)"))
                continue
            rel = Path(os.path.abspath(src)).relative_to(os.path.abspath(root))
            if len(roots) > 1:
                rel = Path(root.name) / rel
            dst = free_path(quarantine / rel, taken)
            taken.add(path_key(dst))
            plan.ops.append(PlannedOp(src, dst, "move", [], why=f"duplicate of {g['keeper']}"))
    return plan

"""Whether a path that a document names stays inside the folder the document claims.

A scan JSON or a dupes report is a file anyone can write: it names the files to rename, retag or
move and, in review decisions, where to. Each such path must lie inside the folder it belongs to
(the scan's target, `--dest`, a report's scanned folders, the quarantine folder), with no `..`
and no symbolic link below that folder: a link would let a path inside the folder write outside
it. The folder itself may be a link; the user named it.
"""

from __future__ import annotations

import os
from pathlib import Path


def outside(path: Path | str, root: Path | str) -> str | None:
    """Why `path` is not a path inside `root` (None when it is)."""
    if ".." in Path(path).parts:
        return f"its path {path} has a '..' component"
    p, r = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if p == r or not p.is_relative_to(r):
        return f"it lies outside {r}"
    here = r
    for part in p.relative_to(r).parts:
        here = here / part
        if here.is_symlink():
            return f"{here} is a symbolic link"
    if not p.resolve().is_relative_to(r.resolve()):  # a link swapped in while we looked
        return f"it lies outside {r}"
    return None


def scan_root(folder: str | Path) -> Path:
    """The folder a scan's files must lie in: its target, or the target's folder when a single
    file was scanned."""
    root = Path(folder).absolute()
    return root.parent if root.is_file() else root

"""The reference library as the duplicate finder must respect it: its files are always the
keepers, and a quarantine folder never lies inside it.

What is in the library is read from the reference store itself (never from a report, which may
come from anyone): its tracks' paths, and the folders it was indexed from (stores saved before
those were kept give the folders that hold its files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _key(path: str | Path) -> str:
    return os.path.normcase(os.path.realpath(path))


@dataclass(frozen=True)
class Reference:
    """The files and folders of the reference library; empty when there is no store."""

    store: Path | None = None
    files: frozenset[str] = frozenset()  # realpath'd
    folders: tuple[str, ...] = ()  # realpath'd

    def holds(self, path: str | Path) -> bool:
        """Whether `path` (or the file it links to) is one of the library's indexed files."""
        return _key(path) in self.files

    def folder_around(self, path: str | Path) -> str | None:
        """The library folder that `path` is inside (or is), if any."""
        p = _key(path)
        return next((f for f in self.folders if p == f or p.startswith(f.rstrip(os.sep) + os.sep)), None)


def reference_of(store_path: Path | None) -> Reference:
    """The library of the store at `store_path` (empty when there is none). A store that exists
    but cannot be read raises StoreError: its files could not be protected."""
    from tagmatch.store.shards import Store

    if store_path is None or not Path(store_path).exists():
        return Reference()
    store = Store.load(Path(store_path))
    files = frozenset(_key(t.path) for t in store.tracks)
    roots = store.roots or sorted({os.path.dirname(t.path) for t in store.tracks})
    return Reference(Path(store_path), files, tuple(sorted({_key(r) for r in roots})))

"""What a scan saw of each file, so that apply never retags other content as if it were it.

A scan entry records the file's size, modification time and a BLAKE2b hash of its first and last
MiB with the size (`"seen"`). Another song copied over the file changes its size or those bytes;
apply compares before it plans the file and refuses a changed one ("changed since the scan").
Hashing 2 MiB costs a few milliseconds where hashing a whole 40 MB FLAC would cost more than
matching it; a change that keeps the size and both ends (an edit in the middle of the audio,
with its modification time reset) is what this does not see. A new modification time alone (a
`touch`, a backup restore) is not a change of content.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

EDGE = 1 << 20  # bytes hashed at each end


def _edges_hash(f, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(size.to_bytes(8, "little"))
    h.update(f.read(EDGE))
    if size > EDGE:
        f.seek(max(EDGE, size - EDGE))
        h.update(f.read(EDGE))
    return h.hexdigest()


def seen(path: Path | str) -> dict | None:
    """The record of a file as it is now; None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blake2b_edges": _edges_hash(f, st.st_size)}
    except OSError:
        return None


def changed(path: Path | str, record: dict) -> str | None:
    """Why the file is not what `record` says the scan saw (None when it is)."""
    now = seen(path)
    if now is None:
        return "unreadable now"
    if now["size"] != record.get("size") or now["blake2b_edges"] != record.get("blake2b_edges"):
        return "changed since the scan: scan again"
    return None

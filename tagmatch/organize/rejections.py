"""Suggestions the user rejected, remembered by audio, so they do not come back.

A scan records each file's audio fingerprint: FINGERPRINT_WINDOWS of its first fragment's query
vectors, int8 (tagmatch.match.scan). When the review rejects a file's suggestion, the pair (that
fingerprint, the reference track's path) is appended to the rejections file; clearing or changing
the decision forgets it. A later scan leaves a reference out of a file's candidates when the file's
audio is the audio of a rejected pair (tagmatch.match.decide): the same file again, a renamed copy,
another encoding of it. The next candidate is offered instead.

The file: $TAGMATCH_REJECTIONS, else `rejections.jsonl` in the user data dir; one JSON line per
event, appended and fsynced ({"op": "reject" | "forget", "reference", "query", "fingerprint"}).
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FINGERPRINT_WINDOWS = 16
SAME_WINDOW = 0.9  # a fingerprint window is found in a query when some query window is this similar
SAME_AUDIO = 0.3  # and the query holds that audio when this share of the fingerprint's windows is found
ENV = "TAGMATCH_REJECTIONS"


def rejections_path() -> Path:
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("tagmatch")) / "rejections.jsonl"


def encode(vectors: np.ndarray) -> dict:
    """A file's fingerprint for the scan JSON: FINGERPRINT_WINDOWS of its (int8) query vectors,
    evenly spread over the first fragment."""
    v = np.asarray(vectors)
    idx = np.unique(np.linspace(0, len(v) - 1, min(FINGERPRINT_WINDOWS, len(v))).round().astype(int))
    return {"dim": int(v.shape[1]), "int8": base64.b64encode(np.ascontiguousarray(v[idx], np.int8).tobytes()).decode()}


def decode(fp) -> np.ndarray | None:
    """[shape=(n, dim)] float32 unit vectors of a fingerprint; None for anything malformed."""
    try:
        raw = np.frombuffer(base64.b64decode(fp["int8"], validate=True), np.int8)
        dim = int(fp["dim"])
        if dim <= 0 or not len(raw) or len(raw) % dim:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    v = raw.reshape(-1, dim).astype(np.float32)  # int8 unit vectors times a scale: normalised back
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


def same_audio(fingerprint: np.ndarray, vectors: np.ndarray) -> bool:
    """Whether the query `vectors` (unit, float) hold the audio of `fingerprint`."""
    if not len(fingerprint) or not len(vectors):
        return False
    found = (fingerprint @ np.asarray(vectors, np.float32).T).max(axis=1) >= SAME_WINDOW
    return float(found.mean()) >= SAME_AUDIO


def _append(event: dict) -> None:
    path = rejections_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()
        os.fsync(f.fileno())


def remember(entry: dict, candidate: dict | None) -> None:
    """The user rejected `candidate` for the scan entry (a file without a fingerprint, or no
    candidate, is not remembered)."""
    if candidate and isinstance(entry.get("fingerprint"), dict) and candidate.get("path"):
        _append({"op": "reject", "reference": candidate["path"], "query": entry.get("path"),
                 "fingerprint": entry["fingerprint"], "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def forget(entry: dict, candidate: dict | None) -> None:
    """The rejection of `candidate` for this entry is taken back (undone, cleared, accepted)."""
    if candidate and candidate.get("path"):
        _append({"op": "forget", "reference": candidate["path"], "query": entry.get("path")})


@dataclass
class Rejections:
    """The rejected pairs in force: reference path -> the fingerprints of the files it was rejected for."""

    by_reference: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_reference)

    def rejected(self, reference: str, vectors: np.ndarray) -> bool:
        """Whether `reference` was rejected for audio that `vectors` (a query's) hold."""
        return any(same_audio(fp, vectors) for fp in self.by_reference.get(reference, ()))

    @classmethod
    def load(cls, path: Path | None = None) -> "Rejections":
        """The file's pairs in force (later events win; unreadable lines are skipped)."""
        path = path or rejections_path()
        pairs: dict[tuple[str, str], np.ndarray | None] = {}
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except OSError:
            return cls()
        for line in lines:
            try:
                e = json.loads(line)
                key = (str(e["reference"]), str(e.get("query")))
            except (ValueError, KeyError, TypeError):
                continue
            if e.get("op") == "reject":
                fp = decode(e.get("fingerprint"))
                if fp is not None:
                    pairs[key] = fp
            elif e.get("op") == "forget":
                pairs.pop(key, None)
        out = cls()
        for (reference, _), fp in pairs.items():
            out.by_reference.setdefault(reference, []).append(fp)
        return out

"""The score calibration: the matcher's raw evidence (a margin per window) -> a 0..1 confidence.

A model file carries one; `tagmatch.train.calibrate` fits it on known and unknown songs so that
the default threshold (0.5) lets few unknown songs through. A library may have its own, refitted
from the user's review decisions (`tagmatch calibrate --from-decisions`, tagmatch.train.decisions)
and kept beside its store's shards as LIBRARY_FILE: scans against that store use it instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Maps the matcher's raw score (a margin of evidence per window) to a 0..1 confidence.

    confidence = sigmoid((raw - mid) / width); fitted on the dev corpus so that 0.5 is the
    default threshold between known and unknown songs (`tagmatch calibrate`). The defaults,
    for a model not calibrated yet, are about where the shipped model's fit lies.
    """

    mid: float = 0.02
    width: float = 0.004
    # The score the fit is for: "verified" (aligned, plus the check against the reference files),
    # "aligned" (the votes' best tracks scored along their alignment) or "votes" (a model file
    # whose calibration records no score, fitted before the other two existed). The matcher scores
    # as its model's calibration expects, so a model's threshold keeps its meaning until it is
    # calibrated again.
    score: str = "verified"

    def to_dict(self) -> dict:
        return {"mid": self.mid, "width": self.width, "score": self.score}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**{"score": "votes", **d})

    def confidence(self, raw: float) -> float:
        return float(1.0 / (1.0 + np.exp(-(raw - self.mid) / self.width)))


LIBRARY_FILE = "calibration.json"  # in a store folder: {"model_id", "calibration", "facts"}


def library_calibration(store_folder: Path | None, query_id: str) -> tuple[Calibration, dict] | None:
    """The calibration a store's own decisions gave, with its facts (how many decisions), when
    there is one for this model and query adapter (LoadedModel.query_id: a fine-tuned adapter
    scores otherwise); None otherwise (also for an unreadable file: the model's then)."""
    if store_folder is None:
        return None
    try:
        d = json.loads((Path(store_folder) / LIBRARY_FILE).read_text(encoding="utf-8"))
        if d.get("model_id") != query_id:
            return None
        c = d["calibration"]
        cal = Calibration(mid=float(c["mid"]), width=float(c["width"]), score=str(c["score"]))
        return (cal, dict(d.get("facts") or {})) if cal.width > 0 else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None

"""The score calibration: the matcher's raw evidence (a margin per window) -> a 0..1 confidence.

A model file carries one; `tagmatch.train.calibrate` fits it on known and unknown songs so that
the default threshold (0.5) lets few unknown songs through.
"""

from __future__ import annotations

from dataclasses import dataclass

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

"""Per-library calibration from the user's review decisions.

Every decided file of a scan is a labelled example of this user's music at the margin the
matcher gave it: an accepted match was right (1); a rejected one, a match passed over for an
alternative, or the best guess of an unknown file tagged by hand was not (0). The model's own
calibration (fitted on the dev corpus) is the prior: it enters the fit as PRIOR_WEIGHT examples
spread along its own curve (soft labels), so a few decisions move it a little and hundreds move
it to what they say. The result is kept in the store folder (tagmatch.model.calibration) and
used by every scan against that store.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from tagmatch.model.calibration import LIBRARY_FILE, Calibration

PRIOR_WEIGHT = 50.0  # the model's calibration counts as this many decisions
MIN_WIDTH = 0.002  # as tagmatch.train.calibrate: separable decisions must not make it a step


def decision_examples(docs) -> tuple[np.ndarray, np.ndarray]:
    """(margin, label) of every decided file of these scans (tagmatch.organize.scandoc.ScanDoc)."""
    margins, labels = [], []
    for doc in docs:
        for f in doc.files:
            d, match = f.get("decision") or {}, f.get("match") or {}
            margin = match.get("margin")
            if not isinstance(margin, (int, float)) or d.get("status") not in ("accepted", "rejected"):
                continue
            if d["status"] == "accepted" and f.get("status") == "match" and d.get("choice", 0) == 0:
                if d.get("tags"):
                    continue  # accepted with its tags edited: it says little about the match either way
                right = True
            else:
                right = False  # rejected, an alternative taken instead, or an unknown file tagged by hand
            margins.append(float(margin))
            labels.append(1.0 if right else 0.0)
    return np.array(margins, np.float64), np.array(labels, np.float64)


def fit_from_decisions(margin: np.ndarray, label: np.ndarray, prior: Calibration,
                       prior_weight: float = PRIOR_WEIGHT) -> Calibration:
    """The logistic P(right | margin) fitted on the decisions plus the prior's pseudo-examples."""
    from scipy.optimize import minimize

    grid = prior.mid + prior.width * np.linspace(-4.0, 4.0, 17)  # the prior's curve, sampled
    soft = 1.0 / (1.0 + np.exp(-(grid - prior.mid) / prior.width))
    m = np.concatenate([margin, grid])
    y = np.concatenate([label, soft])
    w = np.concatenate([np.ones(len(margin)), np.full(len(grid), prior_weight / len(grid))])

    def nll(p: np.ndarray) -> float:
        z = (m - p[0]) / math.exp(p[1])
        return float(np.sum(w * (np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y))))

    lo, hi = float(m.min()), float(m.max())
    res = minimize(nll, np.array([prior.mid, math.log(prior.width)]), method="L-BFGS-B",
                   bounds=[(lo, hi), (math.log(MIN_WIDTH), math.log(1.0))])
    return Calibration(mid=round(float(res.x[0]), 5), width=float(f"{math.exp(res.x[1]):.4g}"), score=prior.score)


def save_library_calibration(store_folder: Path, model_id: str, cal: Calibration, facts: dict) -> Path:
    """Write it where scans against that store find it (atomically)."""
    from tagmatch.fsutil import atomic_write_text

    path = Path(store_folder) / LIBRARY_FILE
    atomic_write_text(path, json.dumps({"model_id": model_id, "calibration": cal.to_dict(), "facts": facts},
                                       indent=1) + "\n")
    return path


def calibrate_from_decisions(docs, store_folder: Path, model) -> tuple[Calibration, dict]:
    """Fit this library's calibration from `docs`' decisions and save it beside the store."""
    margin, label = decision_examples(docs)
    cal = fit_from_decisions(margin, label, model.calibration)
    facts = {"decisions": int(len(label)), "right": int(label.sum()), "wrong": int(len(label) - label.sum()),
             "scans": len(docs), "prior": model.calibration.to_dict(), "prior_weight": PRIOR_WEIGHT,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    save_library_calibration(store_folder, model.query_id, cal, facts)
    return cal, facts


def describe_library_fit(cal: Calibration, facts: dict) -> str:
    prior = facts.get("prior") or {}
    return (f"this library's calibration: mid {cal.mid:.4f}, width {cal.width:.4g} (the model's: mid "
            f"{prior.get('mid', float('nan')):.4f}, width {prior.get('width', float('nan')):.4g}), from "
            f"{facts.get('decisions', 0)} decisions ({facts.get('right', 0)} right, {facts.get('wrong', 0)} wrong) "
            f"of {facts.get('scans', 0)} scans, the model's counting as {facts.get('prior_weight', PRIOR_WEIGHT):g}")

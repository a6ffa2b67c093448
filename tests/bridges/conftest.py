"""Fixtures of the bridge tests (beets, tagmatch serve)."""

from __future__ import annotations

import pytest
from helpers import manifest_scan


@pytest.fixture
def saved_scan(fixture_dir, manifest, messy, tmp_path, env) -> dict:
    """A scan in the scans folder, as Home lists it; the environment a served app gets."""
    scans = tmp_path / "scans"
    doc = manifest_scan(fixture_dir, manifest, messy)
    doc.target = str(messy)
    doc.save(scans / "messy-20261204-120000.json")
    return {"TAGMATCH_SCANS": str(scans), "TAGMATCH_RUNS": str(env), "TAGMATCH_STORE": str(tmp_path / "store"),
            "TAGMATCH_CONFIG": "/nonexistent/config.toml"}

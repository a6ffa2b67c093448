"""Shared test fixtures: the generated fixture library (made once, cached in fixtures/build)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "build"


@pytest.fixture(autouse=True)
def _own_scans_folder(tmp_path_factory, monkeypatch):
    """Scans without --json are kept in the user's data dir, keys come from the user's config:
    never the real ones in tests."""
    monkeypatch.setenv("TAGMATCH_SCANS", str(tmp_path_factory.mktemp("scans")))
    monkeypatch.setenv("TAGMATCH_CONFIG", "/nonexistent/tagmatch/config.toml")


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """The generated library + messy folder (generated on first use; see fixtures/README.md)."""
    spec = importlib.util.spec_from_file_location("fixtures_generate", ROOT / "fixtures" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.generate(FIXTURES)
    return FIXTURES


@pytest.fixture(scope="session")
def manifest(fixture_dir) -> dict:
    return json.loads((fixture_dir / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def model():
    from tagmatch.modelio import load_model

    return load_model()


@pytest.fixture(scope="session")
def library_store(fixture_dir, model, tmp_path_factory):
    """The fixture library indexed once with the default model: (store, store_path)."""
    from tagmatch.index import index_library

    store, report = index_library(fixture_dir / "library", None, model)
    assert not report.errors, report.errors
    path = tmp_path_factory.mktemp("store") / "store"
    store.save(path)
    return store, path


@pytest.fixture
def library_copy(fixture_dir, tmp_path) -> Path:
    """A private copy of the reference library that a test may change."""
    dst = tmp_path / "library"
    shutil.copytree(fixture_dir / "library", dst)
    return dst

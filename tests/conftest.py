"""Shared test fixtures: the generated fixture library (made once, cached in fixtures/build)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "build"

# Embed as `tagmatch index` and `scan` do, and as their worker processes do: with one XLA thread.
# With two, XLA splits the encoder's sums differently, and on some CPUs a vector lands one int8
# step away from the workers' (tests/test_parallel_index.py compares the stores bit for bit).
from tagmatch.threads import one_compute_thread  # noqa: E402

one_compute_thread()


@pytest.fixture(scope="session", autouse=True)
def _own_compile_cache(tmp_path_factory):
    """Compiled encoders are kept in the user cache dir: a folder of the test run's own instead
    (worker processes inherit it)."""
    import os

    os.environ["TAGMATCH_XLA_CACHE"] = str(tmp_path_factory.mktemp("xla"))


@pytest.fixture(autouse=True)
def _own_scans_folder(tmp_path_factory, monkeypatch):
    """Scans without --json are kept in the user's data dir, keys come from the user's config,
    rejections are remembered in the user's data dir: never the real ones in tests."""
    monkeypatch.setenv("TAGMATCH_SCANS", str(tmp_path_factory.mktemp("scans")))
    monkeypatch.setenv("TAGMATCH_CONFIG", "/nonexistent/tagmatch/config.toml")
    monkeypatch.setenv("TAGMATCH_REJECTIONS", str(tmp_path_factory.mktemp("rejections") / "rejections.jsonl"))


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
    from tagmatch.model.modelfile import load_model

    return load_model()


@pytest.fixture(scope="session")
def library_store(fixture_dir, model, tmp_path_factory):
    """The fixture library indexed once with the default model: (store, store_path)."""
    from tagmatch.store.index import index_library

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


# ---- shared by the TUI tests ----------------------------------------------------------------------
@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """Runs and store go to tmp (never the user's data dir); returns the runs dir."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("TAGMATCH_RUNS", str(runs))
    monkeypatch.setenv("TAGMATCH_STORE", "/nonexistent/tagmatch/store.joblib")
    return runs


@pytest.fixture
def messy(fixture_dir, tmp_path) -> Path:
    dst = tmp_path / "music" / "messy"
    shutil.copytree(fixture_dir / "messy", dst)
    return dst


@pytest.fixture
def manifest_scan_path(fixture_dir, manifest, messy, tmp_path, env) -> Path:
    """A scan of the messy copy built from the manifest (fixed confidences, no model)."""
    from helpers import manifest_scan

    path = tmp_path / "scan.json"
    manifest_scan(fixture_dir, manifest, messy).save(path)
    return path


# ---- the duplicates folder (test_dupes, test_tui_dupes) ------------------------------------------
@pytest.fixture(scope="module")
def dupes_dir(fixture_dir, tmp_path_factory) -> Path:
    """A folder mixing library pieces, messy copies and two made-up files."""
    import numpy as np
    import soundfile as sf

    from helpers import MESSY, P0, P1, P2, P6, P8, P9, SR
    from tagmatch.audio.decode import load_audio

    root = tmp_path_factory.mktemp("dupes") / "music"
    for rel in (P0, P1, P2, P6, P8, P9):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fixture_dir / rel, root / rel)
    (root / "messy").mkdir()
    for name in MESSY:
        shutil.copy2(fixture_dir / "messy" / name, root / "messy" / name)
    (root / "made").mkdir()
    quiet = load_audio(fixture_dir / P2, SR) * 10 ** (-10 / 20)
    sf.write(root / "made/quiet copy.flac", quiet, SR)
    # 12 s of piece 0, then 20 s of piece 1 (from its 10th second): it shares audio with both,
    # covering most of neither, so both are partial overlaps.
    a, b = load_audio(fixture_dir / P0, SR), load_audio(fixture_dir / P1, SR)
    sf.write(root / "made/medley.wav", np.concatenate([a[: 12 * SR], b[10 * SR : 30 * SR]]), SR)
    return root

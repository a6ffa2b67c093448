"""The query adapter: identity at the start, learns a systematic query-side distortion, lives in
the model file without changing the model id, and is what `embed_query` applies."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tagmatch.model.calibration import Calibration
from tagmatch.model.modelfile import default_model_path, load_model, set_projection, set_query_adapter
from tagmatch.train.adapter import AdapterConfig, fit_adapter
from tagmatch.model.adapter import apply_adapter, gelu


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_numpy_gelu_is_the_one_jax_trains_with():
    import jax

    x = np.linspace(-5, 5, 101, dtype=np.float32)
    np.testing.assert_allclose(gelu(x), np.asarray(jax.nn.gelu(x)), atol=1e-5)


def test_an_adapter_before_training_changes_nothing():
    rng = np.random.default_rng(0)
    z = unit(rng.standard_normal((50, 12)))
    params = fit_adapter(z, z, AdapterConfig(hidden=16, steps=0))
    np.testing.assert_allclose(apply_adapter(params, z), z, atol=1e-6)


def test_the_adapter_learns_to_undo_a_systematic_distortion():
    """Degraded = a fixed mixing of the clean vector plus noise: retrieval of each degraded
    vector's clean original among all of them must rise well above what it was."""
    rng = np.random.default_rng(1)
    dim, n = 16, 2048
    clean = unit(rng.standard_normal((n, dim)))
    mix = np.eye(dim) + 0.9 * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    degraded = unit(clean @ mix + 0.6 * unit(np.ones(dim)) + 0.1 * rng.standard_normal((n, dim)))

    def top1(q):
        return float(np.mean((q @ clean.T).argmax(1) == np.arange(n)))

    before = top1(degraded)
    params = fit_adapter(clean, degraded, AdapterConfig(hidden=64, steps=400, batch=512, learning_rate=3e-3))
    after = top1(apply_adapter(params, degraded))
    assert before < 0.7 and after > before + 0.2, (before, after)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.joblib"
    shutil.copy(default_model_path(), path)
    return path


def test_the_adapter_is_stored_without_changing_the_model_id(model_file):
    """Stores hold reference vectors, which the adapter does not touch: the id stays, the
    calibration (fitted for the old queries) is reset, and the query id says which queries."""
    set_query_adapter(model_file, None)
    plain = load_model(model_file)
    assert plain.query_adapter is None and plain.query_id == plain.model_id
    d = plain.dim
    adapter = {"W1": np.zeros((d, 4)), "b1": np.zeros(4), "W2": np.zeros((4, d)), "b2": np.full(d, 0.5)}
    set_query_adapter(model_file, adapter, note="test")
    adapted = load_model(model_file)
    assert adapted.model_id == plain.model_id
    assert adapted.query_id != plain.query_id and adapted.query_id.startswith(plain.model_id)
    assert adapted.calibration == Calibration()

    rng = np.random.default_rng(2)
    S = rng.standard_normal((400, adapted.feature_config.n_mels)).astype(np.float32)
    starts = np.arange(0, 400 - adapted.feature_config.window_frames - adapted.context_frames, 16)
    refs = adapted.embed_at(S, starts)
    np.testing.assert_allclose(refs, plain.embed_at(S, starts), atol=1e-6)  # references: untouched
    queries = adapted.embed_query(S, starts)
    np.testing.assert_allclose(queries, apply_adapter(adapter, refs), atol=1e-6)
    assert not np.allclose(queries, refs, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)


def test_a_new_projection_drops_the_adapter_fitted_for_the_old_vectors(model_file):
    m = load_model(model_file)
    d = m.dim
    set_query_adapter(model_file, {"W1": np.zeros((d, 4)), "b1": np.zeros(4), "W2": np.zeros((4, d)),
                                   "b2": np.zeros(d)})
    set_projection(model_file, None)
    assert load_model(model_file).query_adapter is None


def test_making_pairs_stops_when_asked_and_returns_what_it_has():
    from tagmatch.audio.features import FeatureConfig
    from tagmatch.model.encoder import ModelConfig
    from tagmatch.model.modelfile import untrained_model
    from tagmatch.train.adapter import training_pairs

    m = untrained_model(FeatureConfig(), ModelConfig())
    music = [np.random.default_rng(3).standard_normal(8000 * 10).astype(np.float32) * 0.1]
    clean, degraded = training_pairs(m, music, None, AdapterConfig(pairs=512), should_stop=lambda: True)
    assert clean.shape == degraded.shape == (0, m.dim)

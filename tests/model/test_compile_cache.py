"""The encoders' compiled code is kept on disk between processes (tagmatch.model.embedders.use_compile_cache)."""

import os
import subprocess
import sys

import numpy as np

EMBED = """
import sys
import numpy as np
from tagmatch.model.modelfile import load_model
m = load_model()
S = np.random.default_rng(0).standard_normal((2000, m.feature_config.n_mels)).astype(np.float32)
np.save(sys.argv[1], m.embed_at(S, np.arange(0, 1800, 20)))
"""


def _embed_in_new_process(tmp_path, cache: str | None, name: str) -> np.ndarray:
    """The shipped model's vectors of some log-mel, from a new process whose user cache dir is
    tmp_path/home-cache and whose $TAGMATCH_XLA_CACHE is `cache` (None: unset)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "home-cache")}
    env.pop("TAGMATCH_MODEL", None)
    env.pop("TAGMATCH_XLA_CACHE", None)
    if cache is not None:
        env["TAGMATCH_XLA_CACHE"] = cache
    out = tmp_path / f"{name}.npy"
    subprocess.run([sys.executable, "-c", EMBED, str(out)], env=env, check=True, timeout=300)
    return np.load(out)


def test_a_second_process_loads_the_compiled_encoder_and_gets_the_same_vectors(tmp_path):
    cache = tmp_path / "xla"
    cold = _embed_in_new_process(tmp_path, str(cache), "cold")
    entries = sorted(p.name for p in cache.glob("*-cache"))
    assert entries, "nothing was written to the compile cache"
    warm = _embed_in_new_process(tmp_path, str(cache), "warm")
    assert sorted(p.name for p in cache.glob("*-cache")) == entries  # found, not compiled again
    np.testing.assert_array_equal(warm, cold)


def test_by_default_in_the_user_cache_dir_and_off_keeps_none(tmp_path):
    off = _embed_in_new_process(tmp_path, "off", "off")
    assert not (tmp_path / "home-cache").exists()
    default = _embed_in_new_process(tmp_path, None, "default")
    assert list((tmp_path / "home-cache" / "tagmatch" / "xla").glob("*-cache"))
    np.testing.assert_array_equal(default, off)

"""Query sets: degraded copies made with real encoders, deterministic per (seed, condition, track)
and cached as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import music_like
from tagmatch.errors import TagmatchError
from tagmatch.train import queries


def _tiny_corpus(tmp_path: Path):
    from tagmatch.train.devcorpus import DevCorpus, Track

    root = tmp_path / "corpus"
    root.mkdir()
    tracks = []
    for i, seconds in enumerate((30.0, 8.0)):  # the second is shorter than every excerpt
        p = root / f"song{i}.wav"
        sf.write(p, np.stack([music_like(seconds) * (i + 1)] * 2, axis=1), 44100)
        tracks.append(Track(p, "artist", f"song {i}", "album", f"song{i}.wav"))
    noise = root / "noise.wav"
    sf.write(noise, np.random.default_rng(3).standard_normal(2 * 22050).astype(np.float32) * 0.1, 22050)
    return DevCorpus(root, known=tracks[:1], unknown=tracks[1:], train_noise=[], bench_noise=[noise])


def test_make_queries_is_deterministic_and_cached(tmp_path):
    corpus = _tiny_corpus(tmp_path)
    conds = queries.select_conditions("noise10_20s,phone_12s,speed_plus3_15s,noise0_reverb_12s")
    qs = queries.make_queries(corpus, conds, seed=1, limit=None, whole_limit=30, cache=tmp_path / "c1")
    assert len(qs) == 8 and {q.kind for q in qs} == {"known", "unknown"}
    by = {(q.condition, q.kind): q for q in qs}
    assert by[("noise10_20s", "known")].meta["duration_s"] == pytest.approx(20.0, abs=0.01)
    assert by[("noise10_20s", "unknown")].meta["duration_s"] == pytest.approx(8.0, abs=0.01)  # whole short track
    assert by[("speed_plus3_15s", "known")].meta["duration_s"] == pytest.approx(15.0, abs=0.01)
    assert by[("phone_12s", "known")].meta["kbps"] < 64
    assert all(q.path.exists() and q.path.with_name(q.path.name + ".json").exists() for q in qs)
    # Same seed elsewhere: identical choices; the second call in place is served from the cache.
    again = queries.make_queries(corpus, conds, seed=1, limit=None, whole_limit=30, cache=tmp_path / "c2")
    assert [q.meta["offset_s"] for q in again] == [q.meta["offset_s"] for q in qs]
    mtimes = [q.path.stat().st_mtime_ns for q in qs]
    queries.make_queries(corpus, conds, seed=1, limit=None, whole_limit=30, cache=tmp_path / "c1")
    assert [q.path.stat().st_mtime_ns for q in qs] == mtimes
    other = queries.make_queries(corpus, conds[:1], seed=2, limit=None, whole_limit=30, cache=tmp_path / "c1")
    assert other[0].meta["offset_s"] != by[("noise10_20s", "known")].meta["offset_s"]


def test_unknown_condition_names_are_refused():
    with pytest.raises(TagmatchError):
        queries.select_conditions("noise10_20s,nope")

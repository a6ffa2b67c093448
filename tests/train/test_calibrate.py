"""The calibration fit as a library function and as `tagmatch calibrate`, on real files."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from tagmatch.train.calibrate import MAX_FALSE_MATCH, fit_calibration


def test_the_fit_puts_the_threshold_just_above_what_unknown_songs_reach():
    rng = np.random.default_rng(0)
    unknown = rng.uniform(0.0, 0.02, 400)
    right = rng.uniform(0.03, 0.2, 600)
    margin = np.concatenate([unknown, right, [-np.inf]])  # one query that found nothing
    label = np.concatenate([np.zeros(400, bool), np.ones(600, bool), [False]])
    is_unknown = np.concatenate([np.ones(400, bool), np.zeros(600, bool), [True]])
    cal, facts = fit_calibration(margin, label, is_unknown)
    assert np.mean(unknown >= cal.mid) < MAX_FALSE_MATCH  # under 0.5% of unknowns pass 0.5
    top = np.sort(unknown)[::-1][math.ceil(MAX_FALSE_MATCH * 401) - 1]
    assert top < cal.mid <= top + 2e-4  # and no further above than the 0.0001 grid
    assert cal.confidence(0.1) > 0.99 and cal.confidence(0.0) < 0.01
    assert facts["n_unknown"] == 401 and facts["known_acc_at_mid"] == 1.0


def test_a_folder_corpus_holds_out_one_song_in_five_and_keeps_the_split(fixture_dir, tmp_path):
    from tagmatch.train.devcorpus import folder_corpus

    lib = fixture_dir / "library"
    corpus = folder_corpus([lib])
    assert len(corpus.known) + len(corpus.unknown) == 14
    assert {t.path for t in corpus.known}.isdisjoint(t.path for t in corpus.unknown)
    again = folder_corpus([lib])
    assert [t.path for t in again.unknown] == [t.path for t in corpus.unknown]
    one_album = next(lib.iterdir())
    held = folder_corpus([lib], unknown=[one_album])
    assert {t.path.parent.parent for t in held.unknown} == {one_album.absolute()}


@pytest.mark.slow
def test_calibrate_command_fits_and_writes_the_threshold_into_the_model(fixture_dir, tmp_path, capsys):
    """Known songs indexed, held-out ones not, degraded queries of both scanned: the calibration
    written into the model file puts every unknown song below the threshold and is recorded as
    the fit of `tagmatch calibrate`; the model's id (so every store) stays."""
    import joblib

    from tagmatch.cli import main
    from tagmatch.model.modelfile import default_model_path, load_model

    model = tmp_path / "model.joblib"
    shutil.copy(default_model_path(), model)
    before = load_model(model)
    known, unknown = tmp_path / "known", tmp_path / "unknown"
    albums = sorted((fixture_dir / "library").iterdir())
    for album in albums[:3]:
        shutil.copytree(album, known / album.name)
    shutil.copytree(albums[3], unknown / albums[3].name)
    rc = main(["calibrate", str(known), "--unknown", str(unknown), "--model", str(model), "--work", str(tmp_path / "w"),
               "--conditions", "noise10_20s,quiet_aac_10s", "--sets", "2", "--limit", "3", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"{model}: calibration mid" in out
    assert "12 of them unknown songs, 0 tolerated above the threshold" in out  # 12 < 1 / 0.5%: none may pass
    after = load_model(model)
    assert after.model_id == before.model_id
    assert after.calibration != before.calibration and after.calibration.score == "verified"
    assert joblib.load(model)["meta"]["calibration_note"].startswith("tagmatch calibrate, model ")
    import json

    queries = list((tmp_path / "w").rglob("unknown-*.json"))
    assert len(queries) == 2 * 2 * 3  # 2 conditions x 2 sets x 3 songs
    assert all(json.loads(q.read_text())["seed"] in (1001, 2001) for q in queries)

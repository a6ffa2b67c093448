"""The calibration fit as a library function and as `tagmatch calibrate`, on real files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import bench_record
from tagmatch.train.calibrate import calibration_data, fit_calibration


def test_calibration_mid_sits_above_the_unknowns_and_width_is_sane():
    rng = np.random.default_rng(0)
    unknown = np.abs(rng.normal(0.04, 0.03, 400))
    right = rng.normal(0.35, 0.1, 900).clip(0.0)
    wrong = np.abs(rng.normal(0.05, 0.03, 40))
    margin = np.concatenate([unknown, right, wrong, [-np.inf] * 5])  # 5 known queries that errored
    label = np.concatenate([np.zeros(400), np.ones(900), np.zeros(45)]).astype(bool)
    is_unknown = np.concatenate([np.ones(400), np.zeros(945)]).astype(bool)
    cal, facts = fit_calibration(margin, label, is_unknown)
    assert cal.mid > np.percentile(unknown, 99.5)
    assert np.mean(unknown >= cal.mid) < 0.005
    assert facts["allowed_false_matches"] == 1  # 2/400 would be 0.5%: not tolerated
    assert cal.mid < np.median(right)
    assert 0.01 <= cal.width < 0.1
    assert facts["free_logistic"]["mid"] < cal.mid  # the threshold is more careful than the fit
    assert cal.confidence(float(np.median(right))) > 0.9
    assert facts["false_match_rate_at_mid"] < 0.005


def test_calibration_with_few_unknowns_sits_above_all_of_them_and_floors_the_width():
    rng = np.random.default_rng(1)
    unknown = rng.uniform(0.0, 0.01, 150)  # 0.5% of 150 is under one query
    right = rng.uniform(0.03, 0.06, 300)  # separable: a free fit would shrink the width to 0
    margin = np.concatenate([unknown, right])
    label = np.concatenate([np.zeros(150), np.ones(300)]).astype(bool)
    cal, facts = fit_calibration(margin, label, np.arange(450) < 150)
    assert facts["allowed_false_matches"] == 0 and unknown.max() < cal.mid <= unknown.max() + 0.0001
    assert cal.width == pytest.approx(0.002)


def test_calibration_data_labels():
    records = [bench_record("a", "known", "g", "g", "match", 0.3), bench_record("a", "known", "g", "h", "match", 0.2),
               bench_record("a", "unknown", "u", "g", "unknown", 0.1), bench_record("a", "known", "g", None, "error", None)]
    m, label, unknown = calibration_data(records)
    assert list(label) == [True, False, False, False] and list(unknown) == [False, False, True, False]
    assert m[3] == -np.inf


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

"""Fast tests of the benchmark's own reporting (no corpus, no model): the accuracy summary, the
trade-off curve, and how it says the corpus is missing."""

from __future__ import annotations

import json

import pytest

from helpers import bench_record
from tools import bench


def test_summary_counts_remasters_as_the_right_song():
    records = [
        bench_record("a", "known", "song1", "song1", "match", 0.4),
        # a query of the remaster whose best candidate is the original: same group, correct
        bench_record("a", "known", "menu", "menu", "match", 0.3),
        bench_record("a", "known", "song2", "song3", "match", 0.3),  # wrong song above threshold
        bench_record("a", "known", "song4", "song4", "unknown", 0.05),  # right guess, below threshold
        bench_record("a", "unknown", "u1", "song1", "match", 0.3),  # a false match
        bench_record("a", "unknown", "u2", "song2", "unknown", 0.02),
        bench_record("b", "known", "song1", None, "error", None),
        bench_record("b", "unknown", "u1", "song3", "unknown", 0.01),
    ]
    s = bench.summarise(records)
    assert list(s) == ["a", "b", "overall"]
    a = s["a"]
    assert a["n_known"] == 4 and a["acc_threshold"] == 0.5 and a["acc_top1"] == 0.75
    assert a["known_wrong_matches"] == 1 and a["n_unknown"] == 2 and a["false_matches"] == 1
    assert a["false_match_rate"] == 0.5
    assert s["b"]["errors"] == 1 and s["b"]["acc_top1"] == 0.0
    o = s["overall"]
    assert o["n_known"] == 5 and o["acc_threshold"] == pytest.approx(2 / 5) and o["false_match_rate"] == pytest.approx(1 / 3)

    from tagmatch.model.calibration import Calibration

    curve = bench.tradeoff(records, Calibration(mid=0.15, width=0.03))
    accs = [r["known_acc"] for r in curve]
    fms = [r["false_match_rate"] for r in curve]
    assert accs == sorted(accs) and fms == sorted(fms)  # loosening never loses a hit or a false match
    assert curve[-1]["known_acc"] == o["acc_top1"]


def test_main_without_corpus_says_how_to_get_it(tmp_path, capsys):
    assert bench.main(["--corpus", str(tmp_path / "missing"), "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "fetch-dev-corpus" in out and out.count("\n") == 1
    assert not (tmp_path / "cache").exists()


def test_results_are_json_serialisable():
    records = [bench_record("a", "known", "g", "g", "match", 0.3)]
    json.dumps({"summary": bench.summarise(records), "speed": bench.speed_summary(records)})


def test_learning_study_scores_the_second_half_before_and_after():
    from tagmatch.model.calibration import Calibration
    from tools.bench_learning import calibration_study, halves

    # right answers at margins 0.03-0.05, unknown songs' best guesses at 0.015-0.028: the model's
    # threshold (mid 0.022) lets some unknown ones through; the decisions say to sit higher
    records = [bench_record("c", "known", "g", "g", "match", 0.03 + 0.0002 * i) for i in range(100)]
    records += [bench_record("c", "unknown", "u", "x", "unknown", 0.015 + 0.00013 * i) for i in range(100)]
    first, second = halves(records)
    assert len(first) == len(second) == 100 and {id(r) for r in first}.isdisjoint(id(r) for r in second)
    study = calibration_study(records, Calibration(mid=0.022, width=0.004))
    assert study["decisions"] == 100
    assert study["after"]["unknown_matched"] < study["before"]["unknown_matched"]
    assert study["after"]["right"] >= study["before"]["right"] - 2

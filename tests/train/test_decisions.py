"""Per-library calibration from review decisions (tagmatch.train.decisions): blended with the
model's so a few decisions move it a little and many move it to what they say; kept in the store
folder, used by the next scan, shown by `info`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tagmatch.cli import main
from tagmatch.model.calibration import Calibration, library_calibration
from tagmatch.train.decisions import fit_from_decisions

PRIOR = Calibration(mid=0.022, width=0.004)


def test_no_decisions_keep_the_model_calibration_and_many_move_it():
    none = fit_from_decisions(np.zeros(0), np.zeros(0), PRIOR)
    assert abs(none.mid - PRIOR.mid) < 1e-4 and abs(none.width - PRIOR.width) / PRIOR.width < 0.05
    two = fit_from_decisions(np.array([0.03, 0.031]), np.array([0.0, 0.0]), PRIOR)  # two wrong, confident matches
    assert PRIOR.mid < two.mid < PRIOR.mid + PRIOR.width  # moved up, a little
    rng = np.random.default_rng(0)  # 600 decisions of a library whose right answers sit higher
    truth = Calibration(mid=0.04, width=0.004)
    m = rng.uniform(0.0, 0.08, 600)
    y = (rng.uniform(size=600) < [truth.confidence(x) for x in m]).astype(float)
    many = fit_from_decisions(m, y, PRIOR)
    assert (many.mid - PRIOR.mid) / (truth.mid - PRIOR.mid) > 0.75  # most of the way (the prior counts as 50)


@pytest.fixture
def store_copy(library_store, tmp_path) -> Path:
    mine = tmp_path / "store"
    shutil.copytree(library_store[1], mine)
    return mine


def _files(path: Path) -> dict[str, dict]:
    return {Path(f["path"]).name: f for f in json.loads(path.read_text(encoding="utf-8"))["files"]}


def test_decisions_refit_the_library_threshold_used_by_the_next_scan(fixture_dir, store_copy, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(fixture_dir / "messy", folder)
    scan = tmp_path / "scan.json"
    assert main(["scan", str(folder), "--store", str(store_copy), "--json", str(scan), "-q"]) == 0
    matched = sorted(n for n, f in _files(scan).items() if f["status"] == "match")
    for name in matched[:4]:
        assert main(["decide", str(scan), str(folder / name), "--accept"]) == 0
    assert main(["decide", str(scan), str(folder / matched[4]), "--reject"]) == 0
    capsys.readouterr()

    assert main(["calibrate", "--from-decisions", str(scan), "--store", str(store_copy)]) == 0
    assert "from 5 decisions (4 right, 1 wrong)" in capsys.readouterr().out
    from tagmatch.model.modelfile import load_model

    cal, facts = library_calibration(store_copy, load_model().query_id)
    assert facts["decisions"] == 5 and cal.mid != facts["prior"]["mid"]

    assert main(["info", "--store", str(store_copy)]) == 0
    assert "this library's, from 5 review decisions" in capsys.readouterr().out

    again = tmp_path / "again.json"
    assert main(["scan", str(folder), "--store", str(store_copy), "--json", str(again), "-q"]) == 0
    for f in _files(again).values():  # every confidence is the library's curve at its margin
        if f["match"]:
            expected = 1 / (1 + math.exp(-(f["match"]["margin"] - cal.mid) / cal.width))
            assert f["match"]["confidence"] == pytest.approx(expected, abs=2e-4)


def test_no_decisions_is_one_line(fixture_dir, store_copy, tmp_path, capsys):
    scan = tmp_path / "scan.json"
    assert main(["scan", str(fixture_dir / "messy" / "01.wav"), "--store", str(store_copy), "--json", str(scan),
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--from-decisions", str(scan), "--store", str(store_copy)]) == 1
    assert "review a scan first" in capsys.readouterr().err


def test_fine_tuning_from_decisions_keeps_or_writes_a_better_model(fixture_dir, store_copy, tmp_path, capsys):
    from tagmatch.model.modelfile import load_model

    folder = tmp_path / "in"
    shutil.copytree(fixture_dir / "messy", folder)
    scan = tmp_path / "scan.json"
    assert main(["scan", str(folder), "--store", str(store_copy), "--json", str(scan), "-q"]) == 0
    files = _files(scan)
    for name, f in files.items():  # a user who accepts every match and rejects every best guess
        if f["status"] in ("match", "unknown") and f["match"]:
            what = "--accept" if f["status"] == "match" else "--reject"
            assert main(["decide", str(scan), str(folder / name), what]) == 0
    capsys.readouterr()
    out = tmp_path / "tuned.joblib"
    code = main(["train", "--from-decisions", str(scan), "--store", str(store_copy), "--out", str(out), "-q"])
    printed = capsys.readouterr().out
    assert code == 0 and "held-out decisions separated" in printed
    if out.exists():  # written only when the held-out decisions are better separated
        assert printed.startswith("wrote")
        tuned = load_model(out)
        assert tuned.query_adapter is not None and tuned.model_id == load_model().model_id
        assert main(["scan", str(folder / "track07.mp3"), "--store", str(store_copy), "--model", str(out),
                     "--json", str(tmp_path / "t.json"), "-q"]) == 0
    else:
        assert printed.startswith("kept the model as it was")
    # the library's own adapter (no --out): kept beside the store, used by its scans, shown by info
    capsys.readouterr()
    assert main(["train", "--from-decisions", str(scan), "--store", str(store_copy), "-q"]) == 0
    printed = capsys.readouterr().out
    kept = (store_copy / "query-adapter.joblib").exists()
    assert printed.startswith("this library's query adapter fine-tuned" if kept else "kept the model as it was")
    assert main(["info", "--store", str(store_copy)]) == 0
    info = capsys.readouterr().out
    assert ("query adapter this library's" in info) == kept
    assert main(["scan", str(folder / "track07.mp3"), "--store", str(store_copy), "--json", str(tmp_path / "u.json"),
                 "-q"]) == 0



def test_fine_tuning_is_checkpointed_and_resumes(tmp_path):
    from tagmatch.train.finetune import FinetuneConfig, Pairs, finetune, identity_adapter

    rng = np.random.default_rng(0)

    def unit(n):
        v = rng.normal(size=(n, 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    pos, neg = Pairs(unit(64), unit(64)), Pairs(unit(32), unit(32))
    cfg, ckpt, seen = FinetuneConfig(steps=200, batch=32), tmp_path / "ft.ckpt", []
    calls = iter(range(10_000))
    assert finetune(identity_adapter(8, 16), pos, neg, cfg, checkpoint=ckpt,
                    should_stop=lambda: next(calls) >= 150) is None  # stopped at step 150
    assert ckpt.exists()
    tuned = finetune(identity_adapter(8, 16), pos, neg, cfg, checkpoint=ckpt, on_progress=seen.append)
    assert tuned is not None and not ckpt.exists()
    assert seen[0].done == 200 and "resumed at step 150" in seen[0].info  # only the last 50 steps ran

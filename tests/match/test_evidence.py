"""The evidence picture (tagmatch.match.evidence) and `tagmatch explain`'s PNG, on the fixtures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tagmatch.cli import main
from tagmatch.match.evidence import picture
from tagmatch.match.picture import rgb, save_png
from tagmatch.match.scan import candidate_json
from tagmatch.match.decide import match_file


@pytest.fixture(scope="module")
def matched(fixture_dir, library_store, model):
    store, _ = library_store
    m = match_file(fixture_dir / "messy" / "track07.mp3", store, model)
    assert m.status == "match"
    return fixture_dir / "messy" / "track07.mp3", candidate_json(m.match, store)


def test_the_right_reference_lines_up_and_another_does_not(matched, library_store, model, fixture_dir):
    store, _ = library_store
    query, cand = matched
    right = picture(query, cand, store, model)
    assert right.query_mel.shape == right.reference_mel.shape and not right.note
    assert right.agreeing > 0.7  # most windows stand above their background
    other = next(t for t in store.tracks if t.path != cand["path"])
    wrong = picture(query, {"path": other.path, "offset_s": cand["offset_s"]}, store, model)
    assert wrong.agreeing < 0.2
    assert np.nanmean(np.abs(right.query_mel - right.reference_mel)) < np.nanmean(
        np.abs(wrong.query_mel - wrong.reference_mel))


def test_a_reference_that_moved_is_a_note_not_an_error(matched, library_store, model, tmp_path):
    store, _ = library_store
    query, cand = matched
    pic = picture(query, {**cand, "path": str(tmp_path / "gone.flac")}, store, model)
    assert pic.reference_mel is None and "cannot be read" in pic.note and "\n" not in pic.note
    assert rgb(pic, 40, 24).shape == (24, 40, 3)  # still drawn: the query, and a dark reference


def test_explain_writes_a_png_with_the_two_spectrograms(fixture_dir, library_store, tmp_path, capsys):
    out = tmp_path / "evidence.png"
    assert main(["explain", str(fixture_dir / "messy" / "track07.mp3"), "--store", str(library_store[1]),
                 "--out", str(out), "-q"]) == 0
    assert "Neon Orchard" in capsys.readouterr().out
    img = np.asarray(Image.open(out).convert("L"), np.float32)
    assert img.shape == (800, 1200)
    # the two spectrogram panels (matplotlib's default margins: rows ~100-310 and ~350-565) are drawn
    for top, bottom in ((110, 300), (360, 555)):
        assert img[top:bottom, 200:1000].std() > 10


def test_explain_a_file_that_is_not_audio_is_one_line(fixture_dir, library_store, capsys):
    assert main(["explain", str(fixture_dir / "messy" / "notes.mp3"), "--store", str(library_store[1]), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes.mp3" in err

"""The dupes report: a written report opens again unchanged, keeper edits are checked, and a
malformed file is refused with one line."""

from __future__ import annotations

import json

import pytest

from tagmatch.cli import main
from tagmatch.dupes.report import DUPES_VERSION, DupesReport, load_report
from tagmatch.errors import TagmatchError
from tagmatch.organize.scandoc import ScanDoc

FILES = [{"path": "/m/a.flac", "format": "flac", "overlap_s": None, "offset_s": 0.0},
         {"path": "/m/b.mp3", "format": "mp3", "overlap_s": 30.0, "offset_s": 0.0}]


def report(**top) -> dict:
    return {"version": 1, "roots": ["/m"], "groups": [
        {"kind": "duplicate", "keeper": "/m/a.flac", "files": FILES},
        {"kind": "partial", "keeper": "/m/a.flac", "files": FILES[:1] + [{"path": "/m/c.wav"}]}], **top}


def test_round_trip_keeps_unknown_keys_and_the_library_list(tmp_path):
    path = tmp_path / "dupes.json"
    path.write_text(json.dumps(report(library=[], note="x")), encoding="utf-8")
    doc = DupesReport.read(path)
    assert doc.library == [] and doc.extra == {"note": "x"}
    doc.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == report(library=[], note="x")
    assert DupesReport.from_json(report()).to_json() == report()  # no "library" key when none was searched


def test_keeper_edits():
    doc = DupesReport.from_json(report())
    assert doc.find_group("/m/a.flac") == 0 and doc.find_group("/m/c.wav") == 1
    doc.set_keeper(0, "/m/b.mp3")
    assert doc.groups[0]["keeper"] == "/m/b.mp3"
    for gi, path, fault in ((1, "/m/c.wav", "partial overlap"), (0, "/m/c.wav", "not in group 1"), (5, "/m/a.flac", "no group 6")):
        with pytest.raises(TagmatchError, match=fault):
            doc.set_keeper(gi, path)
    with pytest.raises(TagmatchError, match="in no group"):
        doc.find_group("/elsewhere.mp3")


def test_review_opens_either_document(tmp_path):
    a, b = tmp_path / "dupes.json", tmp_path / "scan.json"
    a.write_text(json.dumps(report()), encoding="utf-8")
    b.write_text(json.dumps({"version": 1, "store": "/s", "files": []}), encoding="utf-8")
    assert isinstance(load_report(a), DupesReport) and isinstance(load_report(b), ScanDoc)


@pytest.mark.parametrize("content,fault", [
    (json.dumps({"groups": []}), "is not a tagmatch dupes report (no 'version')"),
    (json.dumps(report(version=DUPES_VERSION + 1)), "newer than this tagmatch reads"),
    (json.dumps(report(roots="/m")), "'roots' is not a list of folders"),
    (json.dumps(report(groups=[{"kind": "same", "keeper": "/m/a", "files": []}])), "group 1: kind is none of"),
    (json.dumps(report(groups=[{"kind": "duplicate", "keeper": "/m/a", "files": [{}]}])), "not a list of files"),
    (json.dumps(report(groups=[{"kind": "duplicate", "files": FILES}])), "group 1 has no keeper"),
    (json.dumps(report(library={})), "'library' is not a list"),
])
def test_malformed_reports_are_refused_with_one_line(tmp_path, capsys, content, fault):
    path = tmp_path / "dupes.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TagmatchError, match="^" + str(path)) as info:
        DupesReport.read(path)
    assert fault in str(info.value)
    for cmd in (["dupes", "--from", str(path)], ["review", str(path)]):
        assert main(cmd) == 1
        err = capsys.readouterr().err.strip()
        assert fault in err and "Traceback" not in err and len(err.splitlines()) == 1

"""The scan document: what `scan --json` writes opens again unchanged, and every malformed or
foreign file is refused with one line that names it and the fault."""

from __future__ import annotations

import json

import pytest

from tagmatch.cli import main
from tagmatch.errors import TagmatchError
from tagmatch.organize.scandoc import SCAN_VERSION, ScanDoc

ENTRY = {"path": "/music/a.mp3", "status": "match", "error": None,
         "match": {"path": "/lib/a.flac", "tags": {"title": "A"}, "confidence": 0.9},
         "alternatives": [{"path": "/lib/b.flac", "tags": {}, "confidence": 0.1}], "stopped_at_s": None}


def doc(**top) -> dict:
    return {"version": 1, "store": "/store", "target": "/music", "files": [dict(ENTRY)], **top}


def test_version_1_round_trips_byte_for_byte_keeping_keys_it_does_not_know(tmp_path):
    path = tmp_path / "scan.json"
    written = doc(written_by="a script")
    written["files"][0]["note"] = "kept too"
    path.write_text(json.dumps(written, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    scan = ScanDoc.read(path)
    assert (scan.version, scan.store, scan.target, scan.folder) == (1, "/store", "/music", "/music")
    assert scan.entry("/music/./a.mp3")["note"] == "kept too"
    before = path.read_bytes()
    scan.save(path)
    assert json.loads(path.read_bytes()) == json.loads(before)


def test_folder_without_a_target_is_what_the_files_share():
    scan = ScanDoc("/s", [{**ENTRY, "path": "/m/x/a.mp3"}, {**ENTRY, "path": "/m/y/b.mp3"}])
    assert scan.folder == "/m" and ScanDoc("/s", []).folder == ""


@pytest.mark.parametrize("content,fault", [
    ("not json {", "is not JSON"),
    ("[1, 2]", "no 'files' list"),
    (json.dumps({"files": []}), "no 'version'"),
    (json.dumps(doc(version="1")), "not a version tagmatch wrote"),
    (json.dumps(doc(version=SCAN_VERSION + 1)), "newer than this tagmatch reads"),
    (json.dumps(doc(files=[{"status": "match"}])), "file 1 has no 'path'"),
    (json.dumps(doc(files=[{**ENTRY, "status": "maybe"}])), "status 'maybe' is none of"),
    (json.dumps(doc(files=[{**ENTRY, "match": {"tags": {}}}])), "file 1, match is not a candidate"),
    (json.dumps(doc(files=[{**ENTRY, "match": {"path": "/x", "tags": []}}])), "'tags' is not an object"),
    (json.dumps(doc(files=[{**ENTRY, "alternatives": {"0": ENTRY["match"]}}])), "'alternatives' is not a list"),
    (json.dumps(doc(files=[{**ENTRY, "alternatives": [None]}])), "alternative 1 is not a candidate"),
    (json.dumps(doc(files=[{**ENTRY, "decision": "yes"}])), "'decision' is not an object"),
    (json.dumps(doc(target=["/a"])), "'target' is not a path"),
])
def test_malformed_documents_are_refused_with_one_line(tmp_path, capsys, content, fault):
    path = tmp_path / "scan.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TagmatchError) as info:
        ScanDoc.read(path)
    assert fault in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    for cmd in (["apply", str(path)], ["decide", str(path), "/music/a.mp3", "--reject"], ["review", str(path)]):
        assert main(cmd) == 1
        err = capsys.readouterr().err.strip()
        assert fault in err and "Traceback" not in err and len(err.splitlines()) == 1

"""The reference library is never quarantined: its files are always their group's keepers (even
when a copy ranks higher, even when a report says otherwise), and a quarantine folder inside it is
refused. What is in the library is read from the store, not from the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from helpers import tree

from tagmatch.cli import main

LIBRARY = ["Kosmo Dial/Signal Garden/01 Neon Orchard.flac", "Marguerite Vale/Café Nocturne/01 Café Nocturne.flac",
           "Kosmo Dial/Signal Garden/02 Übertragung.mp3"]


@pytest.fixture
def library_and_copies(fixture_dir, tmp_path) -> tuple[Path, Path, Path]:
    """(library folder, copies folder, its store): the copies out-rank the library's files by the
    keeper rule (WAV at 1,411 kb/s beats FLAC), so only the library rule keeps the originals."""
    lib, copies = tmp_path / "library", tmp_path / "copies"
    for rel in LIBRARY:
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fixture_dir / "library" / rel, lib / rel)
    copies.mkdir()
    for rel in LIBRARY[:2]:
        y, sr = sf.read(lib / rel)
        sf.write(copies / (Path(rel).stem + ".wav"), y, sr)
    store = tmp_path / "store"
    assert main(["index", str(lib), "--store", str(store), "-q"]) == 0
    return lib, copies, store


def _dupes(*args: str, tmp: Path) -> int:
    return main(["dupes", *args, "--cache", str(tmp / "cache"), "-q"])


def test_library_files_are_kept_and_their_copies_moved(library_and_copies, tmp_path, capsys):
    lib, copies, store = library_and_copies
    before = tree(lib)
    report, q = tmp_path / "report.json", tmp_path / "quarantine"
    assert _dupes(str(lib), str(copies), "--store", str(store), "--json", str(report), "--quarantine", str(q),
                  "--yes", tmp=tmp_path) == 0
    capsys.readouterr()
    assert tree(lib) == before  # not one library file moved
    assert sorted(p.name for p in q.rglob("*.wav")) == sorted(Path(r).stem + ".wav" for r in LIBRARY[:2])
    groups = [g for g in json.loads(report.read_text(encoding="utf-8"))["groups"] if g["kind"] == "duplicate"]
    assert len(groups) == 2
    for g in groups:
        assert Path(g["keeper"]).is_relative_to(lib)
        assert [f.get("in_library", False) for f in g["files"]] == [Path(f["path"]).is_relative_to(lib)
                                                                    for f in g["files"]]


def test_a_report_that_names_a_copy_as_keeper_still_moves_no_library_file(library_and_copies, tmp_path, capsys):
    lib, copies, store = library_and_copies
    report = tmp_path / "report.json"
    assert _dupes(str(lib), str(copies), "--store", str(store), "--json", str(report), tmp=tmp_path) == 0
    doc = json.loads(report.read_text(encoding="utf-8"))
    for g in doc["groups"]:  # crafted (or edited): a copy is the keeper, the original an extra
        g["keeper"] = next(f["path"] for f in g["files"] if not Path(f["path"]).is_relative_to(lib))
        for f in g["files"]:
            f.pop("in_library", None)
    report.write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    before = tree(lib)
    assert _dupes("--from", str(report), "--store", str(store), "--quarantine", str(tmp_path / "q"), "--yes",
                  tmp=tmp_path) == 0
    printed = capsys.readouterr().out
    assert printed.count("refused, a file of the reference library: always kept") == 2
    assert tree(lib) == before


@pytest.mark.parametrize("where", [".", "Kosmo Dial/dupes"])
def test_a_quarantine_folder_inside_the_reference_library_is_refused(library_and_copies, tmp_path, capsys, where):
    lib, copies, store = library_and_copies
    shutil.copy2(copies / "01 Neon Orchard.wav", copies / "another copy.wav")
    before, q = tree(lib), lib / where
    assert _dupes(str(copies), "--store", str(store), "--quarantine", str(q), "--yes", tmp=tmp_path) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is inside the reference library" in line and "Traceback" not in line
    assert tree(lib) == before

"""The Duplicates screen driven as a user drives it (Textual's Pilot), on a real report.

The report comes from the real `tagmatch dupes DIR --json R.json` on the folder of duplicates that
tests/dupes/test_dupes.py builds from the fixtures (once per module); each test works on its own copy of
that folder, so moving files aside and undoing them is checked on disk, byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from textual.widgets import Input

from tagmatch.cli import main
from tagmatch.dupes.quarantine import check_quarantine
from tagmatch.dupes.report import DupesReport
from tagmatch.errors import TagmatchError
from tagmatch.tui.app import TagmatchApp
from tagmatch.tui.common import ConfirmScreen, FormScreen, HelpScreen
from tagmatch.tui.dupes import DupesScreen
from helpers import P2, P8, P9, tree


@pytest.fixture(scope="module")
def report(dupes_dir, tmp_path_factory) -> tuple[Path, DupesReport]:
    """`tagmatch dupes` run for real on a copy of the duplicates folder: (folder, report)."""
    base = tmp_path_factory.mktemp("tui_dupes")
    music = base / "music"
    shutil.copytree(dupes_dir, music)
    out = base / "dupes.json"
    assert main(["dupes", str(music), "--json", str(out), "--quiet", "--cache", str(base / "cache")]) == 0
    return music.resolve(), DupesReport.read(out)


@pytest.fixture
def work(report, tmp_path, monkeypatch) -> SimpleNamespace:
    """A private copy of the folder and its report (paths rewritten); runs journaled under tmp."""
    monkeypatch.setenv("TAGMATCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TAGMATCH_STORE", "/nonexistent/tagmatch/store.joblib")
    old_root, doc = report
    music = tmp_path / "music"
    shutil.copytree(old_root, music)
    music = music.resolve()

    def moved(p: str) -> str:
        return str(music / Path(p).relative_to(old_root))

    doc = DupesReport.from_json(json.loads(json.dumps(doc.to_json())))
    doc.roots = [moved(r) for r in doc.roots]
    for g in doc.groups:
        g["keeper"] = moved(g["keeper"])
        for f in g["files"]:
            f["path"] = moved(f["path"])
    path = tmp_path / "dupes.json"
    doc.save(path)
    return SimpleNamespace(music=music, report=path, runs=tmp_path / "runs")


def rows(app) -> list[str]:
    """Files (relative to the folder) in the table's order."""
    screen = app.screen
    out = []
    for key in screen.query_one("#dupes-files").rows:
        gi, fi = map(int, key.value.split(":"))
        out.append(str(Path(screen.groups[gi]["files"][fi]["path"]).relative_to(screen.base)))
    return out


async def goto(pilot, rel: str) -> None:
    """Put the cursor on a file's first row with the keys (g, then j until there)."""
    await pilot.press("g", *["j"] * rows(pilot.app).index(rel))
    screen = pilot.app.screen
    gi, fi = screen._current()
    assert screen.groups[gi]["files"][fi]["path"].endswith(rel)


def keeper(report: Path, member: Path) -> str:
    doc = DupesReport.read(report)
    return doc.groups[doc.find_group(member)]["keeper"]


def messages(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_keep_move_aside_and_undo(work):
    music, report = work.music, work.report
    before = tree(music)
    app = TagmatchApp(report)
    async with app.run_test(size=(150, 36)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DupesScreen) and screen.has_class("-wide")
        assert "4 duplicate groups, 2 partial overlaps, 4 files to move aside" in str(
            screen.query_one("#dupes-title").content)

        await goto(pilot, "messy/track07.mp3")  # keep the MP3 re-encode instead of the FLAC
        await pilot.press("K")
        assert keeper(report, music / P8) == str(music / "messy/track07.mp3")
        assert "kept by your choice" in screen.detail_text(*screen._current()).plain

        await goto(pilot, "messy/-leading dash.wav")  # Enter keeps too; back to the rule's pick
        await pilot.press("enter")
        assert keeper(report, music / P9) == str(music / "messy/-leading dash.wav")
        await goto(pilot, P9)
        await pilot.press("enter")
        assert keeper(report, music / P9) == str(music / P9)
        assert "kept by the keeper rule: complete" in screen.detail_text(*screen._current()).plain

        unchanged = report.read_text()
        await goto(pilot, "made/medley.wav")  # partial overlaps have no keeper
        await pilot.press("K")
        assert "partial overlap" in messages(app)[-1] and report.read_text() == unchanged

        await pilot.press("m")
        assert isinstance(app.screen, FormScreen)
        q = music.parent / "tagmatch-quarantine"  # beside the folder, outside it
        assert app.screen.query_one(Input).value == str(q)
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, DupesScreen)
        assert ": 4 moved, 0 failed" in messages(app)[-1]
        assert "0 files to move aside" in str(screen.query_one("#dupes-title").content)
        await pilot.press("m", "enter")  # again: everything is aside already
        assert messages(app)[-1] == "nothing to move (4 skipped)"

    moved = tree(q)
    assert set(moved) == {"messy/-leading dash.wav", "messy/Ünïcödé café.flac", P2, P8}
    assert all(moved[k] == before[k] for k in moved)  # byte-identical, paths below the folder kept
    assert set(tree(music)) == set(before) - set(moved)  # the keepers stayed

    assert main(["undo", "-q"]) == 0  # a journaled run like the CLI's
    assert tree(music) == before
    assert not any(p.is_file() for p in q.rglob("*"))


async def test_a_quarantine_inside_the_folder_is_refused(work):
    before = tree(work.music)
    app = TagmatchApp(work.report)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, DupesScreen) and app.screen.has_class("-narrow")
        await pilot.press("m")
        app.screen.query_one(Input).value = str(work.music / "aside")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DupesScreen)
        assert "inside a scanned folder" in messages(app)[-1]
        await pilot.press("m", "escape")  # Esc cancels the prompt
        assert isinstance(app.screen, DupesScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
    assert tree(work.music) == before and not work.runs.exists()
    doc = DupesReport.read(work.report)
    with pytest.raises(TagmatchError, match="inside a scanned folder"):
        check_quarantine(doc, work.music)
    assert check_quarantine(doc, work.music.parent / "aside") == work.music.parent / "aside"


def test_cli_keep_from_a_report(work, capsys):
    report, music = work.report, work.music
    track07 = music / "messy/track07.mp3"
    assert main(["dupes", "--from", str(report), "--keep", str(track07), "--json", str(report)]) == 0
    doc = DupesReport.read(report)
    assert doc.groups[doc.find_group(track07)]["keeper"] == str(track07)
    assert report.read_text(encoding="utf-8") == json.dumps(doc.to_json(), indent=1, ensure_ascii=False) + "\n"

    capsys.readouterr()
    assert main(["dupes", "--from", str(report), "--quarantine", str(music.parent / "q")]) == 0  # dry run
    moves = capsys.readouterr().out
    assert "move " + P8 in moves and "move messy/track07.mp3" not in moves

    for path, why in ((music / "made/medley.wav", "partial overlap"), (music / "messy/Track 14.flac", "in no group")):
        assert main(["dupes", "--from", str(report), "--keep", str(path), "--json", str(report)]) == 1
        assert why in capsys.readouterr().err
    assert DupesReport.read(report) == doc

    bad = report.with_name("bad.json")
    bad.write_text('{"groups": []}')
    assert main(["review", str(bad)]) == 1
    assert "is not a tagmatch dupes report" in capsys.readouterr().err


def test_snapshot_dupes_80x24(work, snap_compare):
    assert snap_compare(TagmatchApp(work.report), press=["j"], terminal_size=(80, 24))

"""The terminal UI driven as a user drives it (Textual's Pilot), on copies of the fixture files.

The end-to-end test reviews a real scan (model + store), applies it and undoes it, checking the
files on disk; the others use a scan built from the fixture manifest (no model), which also keeps
the SVG snapshots deterministic (fixed confidences, paths shown relative to the scanned folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tagmatch.organize.plan import build_plan
from tagmatch.organize.scandoc import ScanDoc
from tagmatch.organize.tags import read_tags
from tagmatch.tui.app import TagmatchApp
from tagmatch.tui.common import ConfirmScreen, HelpScreen
from tagmatch.tui.review import ReviewScreen
from helpers import goto, messages, rows, settle, tree


@pytest.fixture(scope="module")
def real_scan_doc(fixture_dir, library_store, model, tmp_path_factory) -> tuple[ScanDoc, Path]:
    """A real `scan` of a copy of the messy folder (once per module): (doc, the folder scanned)."""
    from tagmatch.match.scan import scan, scan_doc, scan_paths

    store, store_path = library_store
    folder = tmp_path_factory.mktemp("scanned") / "messy"
    shutil.copytree(fixture_dir / "messy", folder)
    results = list(scan(scan_paths(folder), store, model))
    return scan_doc(results, store, store_path), folder


# ---- end to end: review, apply, undo -------------------------------------------------------------
@pytest.mark.slow
async def test_review_apply_and_undo_a_real_scan(real_scan_doc, tmp_path, env):
    doc, scanned = real_scan_doc
    messy = tmp_path / "messy"
    shutil.copytree(scanned, messy)
    for f in doc.files:
        f["path"] = str(messy / Path(f["path"]).name)
    scan_path = tmp_path / "scan.json"
    doc.save(scan_path)
    before = tree(messy)
    matched = [Path(f["path"]).name for f in doc.files if f["status"] == "match" and f["alternatives"]]
    unknown = next(Path(f["path"]).name for f in doc.files if f["status"] == "unknown")
    acc1, acc2, rej, alt = matched[:4]

    app = TagmatchApp(scan_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)
        i_unknown = await goto(pilot, unknown)
        # an unsure file was checked against its best guess's reference audio, and the detail says so
        detail = app.screen.detail_text(i_unknown).plain
        assert "reference audio correlates" in detail and "sd above chance" in detail
        await pilot.press("a")  # only matches can be accepted: a notification, no decision
        assert "only matched files can be accepted" in messages(app)[-1]
        await goto(pilot, acc1)
        await pilot.press("a")
        await goto(pilot, acc2)
        await pilot.press("enter")
        await goto(pilot, rej)
        await pilot.press("x")
        i_alt = await goto(pilot, alt)
        await pilot.press("1")
        assert "alternatives:" in app.screen.detail_text(i_alt).plain

        saved = {Path(f["path"]).name: f.get("decision") for f in ScanDoc.read(scan_path).files}
        assert saved[acc1] == saved[acc2] == {"status": "accepted", "choice": 0}
        assert saved[rej] == {"status": "rejected", "choice": 0}
        assert saved[alt] == {"status": "accepted", "choice": 1}
        assert saved[unknown] is None

        plan = build_plan(ScanDoc.read(scan_path))  # what `w` will do (nothing applied yet)
        expect = {Path(op.src).name: op for op in plan.ops}
        assert set(expect) == {acc1, acc2, alt}

        await pilot.press("w")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        assert messages(app)[-1].startswith("run ") and ": 3 done, 0 failed" in messages(app)[-1]

        by_name = {Path(f["path"]).name: f for f in doc.files}
        for name, op in expect.items():
            assert not (messy / name).exists() and op.dst.is_file()
            cand = [by_name[name]["match"], *by_name[name]["alternatives"]][1 if name == alt else 0]
            assert read_tags(op.dst)["title"] == cand["tags"]["title"]
        assert tree(messy)[rej] == before[rej]
        assert app.screen._status(next(i for i, f in enumerate(app.screen.files)
                                       if Path(f["path"]).name == acc1)).plain == "applied"

        await pilot.press("w")  # everything accepted is applied already
        assert "nothing to apply" in messages(app)[-1]

        await pilot.press("U")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert ": 3 undone, 0 refused" in messages(app)[-1]
    assert tree(messy) == before


# ---- decisions -------------------------------------------------------------------------------------
async def test_decisions_are_saved_at_once_and_survive_a_restart(manifest_scan_path):
    app = TagmatchApp(manifest_scan_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        names = rows(app)
        await goto(pilot, "track07.mp3")
        await pilot.press("a")
        await goto(pilot, "01.wav")
        await pilot.press("x")
        await goto(pilot, "AUDIO_0099.MP3")
        await pilot.press("x", "u")  # undone at once: no decision left
        await goto(pilot, "empty.mp3")
        await pilot.press("a")  # an error row cannot be accepted...
        await pilot.press("x")  # ...but can be rejected
        await goto(pilot, "xyz.ogg")
        await pilot.press("3")  # an unknown row: refused, not a crash
        assert any("only matched files" in m for m in messages(app))
    saved = {Path(f["path"]).name: f.get("decision") for f in ScanDoc.read(manifest_scan_path).files}
    assert saved["track07.mp3"] == {"status": "accepted", "choice": 0}
    assert saved["01.wav"]["status"] == saved["empty.mp3"]["status"] == "rejected"
    assert saved["AUDIO_0099.MP3"] is None and saved["xyz.ogg"] is None

    app = TagmatchApp(manifest_scan_path)  # a restart shows them
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert rows(app) == names
        status = {Path(f["path"]).name: app.screen._status(i).plain for i, f in enumerate(app.screen.files)}
        assert status["track07.mp3"] == "accepted" and status["01.wav"] == "rejected"
        assert status["AUDIO_0099.MP3"] == "pending" and status["xyz.ogg"] == "unknown"
        assert status["empty.mp3"] == "rejected"
        await pilot.press("u")  # the undo stack lives as long as the screen: nothing to undo yet
        assert "no decision to undo" in messages(app)[-1]


async def test_accept_all_marks_filter_and_alternatives(manifest_scan_path):
    app = TagmatchApp(manifest_scan_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        files = screen.files
        sure = {Path(f["path"]).name for f in files if f["status"] == "match" and f["match"]["confidence"] >= 0.9}
        await pilot.press("A")  # nothing marked: the sure matches
        accepted = {Path(f["path"]).name for f in files if (f.get("decision") or {}).get("status") == "accepted"}
        assert accepted == sure and 0 < len(sure) < sum(f["status"] == "match" for f in files)
        await pilot.press("u")  # one press undoes the whole batch
        assert not any(f.get("decision") for f in files)

        await pilot.press("slash", *"m4a")  # filter: only the .m4a files
        assert rows(app) and all(".m4a" in n for n in rows(app))
        assert not any(f.get("decision") for f in files)  # the typed "a" went to the box, not `accept`
        await pilot.press("enter", "g", "space", "space")  # mark the first two (space moves down)
        assert len(screen.marked) == 2
        await pilot.press("escape", "slash", "escape")  # reopen and clear the filter
        assert len(rows(app)) == len(files)
        await pilot.press("A")
        decided = {Path(files[i]["path"]).name for i in range(len(files)) if files[i].get("decision")}
        matched_m4a = {n for n in decided if n.endswith(".m4a")}
        assert decided == matched_m4a and not screen.marked

        i = await goto(pilot, "track07.mp3")
        await pilot.press("2")
        assert files[i]["decision"] == {"status": "accepted", "choice": 2}
        assert screen._status(i).plain == "accept alt2"
        assert " >2 " in screen.detail_text(i).plain
        await pilot.press("3")  # only two alternatives: a notification, the decision stays
        assert files[i]["decision"]["choice"] == 2
        assert "no candidate 3" in messages(app)[-1]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is screen


async def test_sort_by_key_and_by_header_click(manifest_scan_path):
    app = TagmatchApp(manifest_scan_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        files = screen.files
        scan_order = rows(app)

        def conf(name: str) -> float:
            f = next(f for f in files if Path(f["path"]).name == name)
            return (f.get("match") or {}).get("confidence") or -1.0

        await pilot.press("s")  # by file name
        assert rows(app) == sorted(scan_order, key=str.lower)
        assert "by file" in str(screen.query_one("#review-title").render())
        await pilot.press("s", "s")  # by confidence, lowest first
        confs = [conf(n) for n in rows(app)]
        assert confs == sorted(confs) and confs[0] < confs[-1]
        i = await goto(pilot, rows(app)[-1])
        await pilot.press("a")  # a decision leaves the rows where they are
        assert rows(app)[-1] == Path(files[i]["path"]).name
        await pilot.press("s", "s")  # status, then the scan's order again
        assert rows(app) == scan_order
        await pilot.click("#files", offset=(40, 0))  # the Suggestion header
        assert screen.sort_by == "suggestion" and not screen.sort_reverse
        await pilot.click("#files", offset=(40, 0))
        assert screen.sort_by == "suggestion" and screen.sort_reverse


async def test_runs_screen_lists_and_undoes_a_run(manifest_scan_path, messy, env):
    before = tree(messy)
    app = TagmatchApp(manifest_scan_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await goto(pilot, "track07.mp3")
        await pilot.press("a", "w", "y")
        await settle(pilot)
        assert ": 1 done, 0 failed" in messages(app)[-1]
        assert tree(messy) != before
    app = TagmatchApp()  # home -> runs -> undo
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert "Runs: 1" in str(app.screen.query_one("#recent").content)
        await pilot.press("r")
        await pilot.pause()
        table = app.screen.query_one("#runs")
        assert table.row_count == 1
        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # declined: nothing happens
        assert tree(messy) != before
        await pilot.press("u", "y")
        await settle(pilot)
        assert ": 1 undone, 0 refused" in messages(app)[-1]
        assert "undone" in str(table.get_row_at(0)[3])
        await pilot.press("escape")  # back home; open the scan from there
        await pilot.press("o", *str(manifest_scan_path), "enter")
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)
    assert tree(messy) == before


# ---- snapshots (SVG, pytest-textual-snapshot; refresh with --snapshot-update) ---------------------
def test_snapshot_review_80x24(manifest_scan_path, snap_compare):
    assert snap_compare(TagmatchApp(manifest_scan_path), press=["j", "a"], terminal_size=(80, 24))


def test_snapshot_review_120x36(manifest_scan_path, snap_compare):
    # `v` hides the evidence pane (tests/tui/test_evidence_pane.py has its own snapshots)
    assert snap_compare(TagmatchApp(manifest_scan_path), press=["v", "j", "j", "j", "1"],
                        terminal_size=(120, 36))


def test_snapshot_home(env, snap_compare):
    assert snap_compare(TagmatchApp(), terminal_size=(80, 24))


# ---- the command line's way in ---------------------------------------------------------------------
def test_cli_review_reports_a_bad_scan_and_bare_tagmatch_without_a_terminal_prints_help(tmp_path, capsys):
    from tagmatch.cli import main

    bad = tmp_path / "scan.json"
    bad.write_text("{}")
    assert main(["review", str(bad)]) == 1
    assert "is not a tagmatch scan" in capsys.readouterr().err
    assert main(["review", str(bad.with_name("missing.json"))]) == 1
    assert main([]) == 0  # stdin/stdout are not a terminal under pytest: help, no UI
    assert "review" in capsys.readouterr().out

"""The Review screen's evidence pane (`v`): drawn in a worker from the real scan of the fixtures,
shown by default on a big terminal, on `v` on a small one; a moved reference is a one-line note."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import goto

from tagmatch.match.scan import scan, scan_doc, scan_paths
from tagmatch.tui.app import TagmatchApp
from tagmatch.tui.evidence import EvidencePane


@pytest.fixture(scope="module")
def real_scan(fixture_dir, library_store, model, tmp_path_factory) -> Path:
    """A real scan of a copy of the messy folder, saved (once per module)."""
    store, store_path = library_store
    folder = tmp_path_factory.mktemp("evidence") / "messy"
    shutil.copytree(fixture_dir / "messy", folder)
    path = folder.parent / "scan.json"
    scan_doc(list(scan(scan_paths(folder), store, model)), store, store_path, folder).save(path)
    return path


async def drawn(pilot) -> EvidencePane:
    pane = pilot.app.screen.query_one(EvidencePane)
    for _ in range(1200):
        if pane.ready:
            break
        await pilot.pause(0.05)
    assert pane.ready, "the evidence was never drawn"
    await pilot.pause()
    return pane


def caption(pane: EvidencePane) -> str:
    return str(pane.query_one("#evidence-caption").render())


async def test_shown_on_a_big_terminal_hidden_on_a_small_one(real_scan, env):
    app = TagmatchApp(real_scan)
    async with app.run_test(size=(120, 36)) as pilot:
        await goto(pilot, "track07.mp3")
        pane = await drawn(pilot)
        assert pane.display and "query / reference at" in caption(pane)
        assert pane.query_one("HalfcellImage").image is not None
    app = TagmatchApp(real_scan)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not app.screen.has_class("-evidence")
        await pilot.press("v")
        pane = await drawn(pilot)
        assert app.screen.has_class("-evidence") and "reference at" in caption(pane)


async def test_a_moved_reference_is_a_one_line_note(real_scan, env, tmp_path):
    import json

    doc = json.loads(real_scan.read_text(encoding="utf-8"))
    entry = next(f for f in doc["files"] if Path(f["path"]).name == "track07.mp3")
    entry["match"]["path"] = str(tmp_path / "moved away.flac")
    moved = tmp_path / "scan.json"
    moved.write_text(json.dumps(doc), encoding="utf-8")
    app = TagmatchApp(moved)
    async with app.run_test(size=(120, 36)) as pilot:
        await goto(pilot, "track07.mp3")
        pane = await drawn(pilot)
        text = caption(pane)
        assert "cannot be read (moved or deleted?)" in text and "Traceback" not in text


def _snapshot(real_scan, snap_compare, size, keys=()):
    async def run_before(pilot):
        await pilot.pause()
        await goto(pilot, "track07.mp3")
        if keys:
            await pilot.press(*keys)
        await drawn(pilot)
    return snap_compare(TagmatchApp(real_scan), run_before=run_before, terminal_size=size)


def test_snapshot_evidence_120x36(real_scan, env, snap_compare):
    assert _snapshot(real_scan, snap_compare, (120, 36))


def test_snapshot_evidence_80x24(real_scan, env, snap_compare):
    assert _snapshot(real_scan, snap_compare, (80, 24), keys=["v"])

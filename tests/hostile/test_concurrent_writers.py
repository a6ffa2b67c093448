"""One writer at a time: a second apply, undo or index is refused with one line, and a plan that
another run overtook is refused rather than applied twice."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import manifest_scan

from tagmatch.errors import TagmatchError
from tagmatch.fsutil import store_lock
from tagmatch.organize.apply import apply_plan, runs_lock, start_run
from tagmatch.organize.plan import build_plan


def _tree(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _tagmatch(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tagmatch", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def _one_line_refusal(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "being written by another tagmatch" in lines[0], proc.stderr
    return lines[0]


def test_a_second_apply_and_an_undo_are_refused_while_one_runs(manifest_scan_path, messy, env):
    before = _tree(messy)
    with runs_lock(env):
        _one_line_refusal(_tagmatch("apply", manifest_scan_path, "--min-confidence", "0.9", "--yes"))
        assert _tree(messy) == before
    done = _tagmatch("apply", manifest_scan_path, "--min-confidence", "0.9", "--yes")
    assert done.returncode == 0, done.stderr
    after = _tree(messy)
    assert after != before
    with runs_lock(env):
        _one_line_refusal(_tagmatch("undo"))
        assert _tree(messy) == after


def test_a_plan_overtaken_by_another_run_is_refused(fixture_dir, manifest, messy, env):
    doc = manifest_scan(fixture_dir, manifest, messy)
    plan = build_plan(doc, min_confidence=0.9)
    same = build_plan(doc, min_confidence=0.9)  # made before the first run
    results = list(apply_plan(plan, start_run(plan, env)))
    assert results and all(r.status == "done" for r in results)
    after = _tree(messy)
    with pytest.raises(TagmatchError, match="applied by another run since it was made"):
        start_run(same, env)
    assert _tree(messy) == after
    start_run(build_plan(doc, min_confidence=0.9), env).release()  # the lock was let go


def test_a_second_index_of_one_store_is_refused(fixture_dir, tmp_path):
    store = tmp_path / "store"
    with store_lock(store):
        line = _one_line_refusal(_tagmatch("index", fixture_dir / "library", "--store", store))
    assert str(store) in line and not store.exists()


async def test_a_scan_under_review_is_not_written_by_decide_or_another_review(manifest_scan_path, fixture_dir,
                                                                               library_store):
    from tagmatch.cli import main
    from tagmatch.organize.scandoc import ScanDoc
    from tagmatch.tui.app import TagmatchApp

    target = next(Path(f["path"]).name for f in ScanDoc.read(manifest_scan_path).files if f["status"] == "match")
    file = str(Path(ScanDoc.read(manifest_scan_path).files[0]["path"]).with_name(target))
    app = TagmatchApp(manifest_scan_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert type(app.screen).__name__ == "ReviewScreen"
        before = manifest_scan_path.read_bytes()
        _one_line_refusal(_tagmatch("decide", manifest_scan_path, file, "--accept"))
        _one_line_refusal(_tagmatch("scan", fixture_dir / "messy", "--store", library_store[1], "--json",
                                    manifest_scan_path, "-q"))  # refused before scanning
        second = TagmatchApp(manifest_scan_path)
        async with second.run_test(size=(80, 24)) as other:
            await other.pause()
            assert type(second.screen).__name__ == "HomeScreen"  # refused, said so, Home instead
        assert manifest_scan_path.read_bytes() == before
    assert main(["decide", str(manifest_scan_path), file, "--accept"]) == 0  # closed: free again

"""A crafted scan or dupes report cannot steer a write outside the folders it claims.

Each hostile entry is refused with one line and the rest of the plan goes on; the files a hostile
entry names keep every byte.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import candidate, manifest_scan

from tagmatch.dupes.quarantine import quarantine_plan
from tagmatch.dupes.report import DupesReport
from tagmatch.organize.confine import outside
from tagmatch.organize.plan import build_plan, set_decision
from tagmatch.organize.scandoc import ScanDoc


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _hostile_entry(path: str, fixture_dir: Path, manifest: dict) -> dict:
    return {"path": path, "status": "match", "error": None,
            "match": candidate(fixture_dir, manifest["library"][0], 0.99), "alternatives": [],
            "decision": {"status": "accepted", "choice": 0}}


def test_outside_says_why(tmp_path):
    (tmp_path / "music" / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "music" / "link").symlink_to(tmp_path / "elsewhere")
    music = tmp_path / "music"
    assert outside(music / "a" / "x.mp3", music) is None
    assert outside(music / "new" / "deeper" / "x.mp3", music) is None  # not there yet: fine
    assert "'..'" in outside(f"{music}/a/../../elsewhere/x.mp3", music)
    assert "outside" in outside(tmp_path / "elsewhere" / "x.mp3", music)
    assert "outside" in outside(music, music)
    assert "symbolic link" in outside(music / "link" / "x.mp3", music)
    assert "outside" in outside(tmp_path / "music2" / "x.mp3", music)  # a prefix is not a folder


def test_scan_entries_outside_the_target_are_refused(fixture_dir, manifest, messy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "precious.flac"
    shutil.copy(fixture_dir / manifest["library"][1]["path"], victim)
    (messy / "linked").symlink_to(elsewhere)
    doc = manifest_scan(fixture_dir, manifest, messy)
    doc.target = str(messy)
    hostile = [str(victim), f"{messy}/../elsewhere/precious.flac", str(messy / "linked" / "precious.flac")]
    doc.files += [_hostile_entry(p, fixture_dir, manifest) for p in hostile]
    plan = build_plan(doc, min_confidence=0.9)
    refused = {s.path: s.reason for s in plan.skipped if s.reason.startswith("refused")}
    assert set(refused) == set(hostile)
    assert "'..'" in refused[hostile[1]] and "symbolic link" in refused[hostile[2]]
    assert plan.ops and all(not outside(op.src, messy) and not outside(op.dst, messy) for op in plan.ops)


def test_decision_paths_stay_in_dest_and_in_the_scanned_folder(fixture_dir, manifest, messy, tmp_path):
    doc = manifest_scan(fixture_dir, manifest, messy)
    doc.target = str(messy)
    matched = [f["path"] for f in doc.files if f["status"] == "match"]
    set_decision(doc, matched[0], "accepted", new_path=str(tmp_path / "outside" / "evil"))
    set_decision(doc, matched[1], "accepted", new_path="../../escape/evil")  # sanitised: stays inside
    dest = tmp_path / "dest"
    for kwargs, root in (({"dest": dest}, dest), ({}, messy)):
        plan = build_plan(doc, min_confidence=0.9, **kwargs)
        reasons = {s.path: s.reason for s in plan.skipped}
        assert reasons[matched[0]].startswith("refused, its new path is not in")
        op = next(op for op in plan.ops if str(op.src) == matched[1])
        assert outside(op.dst, root) is None
        assert all(outside(op.dst, root) is None for op in plan.ops)


def test_cli_apply_of_a_hostile_scan_goes_on_with_the_rest(fixture_dir, manifest, messy, tmp_path, env):
    victim = tmp_path / "precious.flac"
    shutil.copy(fixture_dir / manifest["library"][1]["path"], victim)
    before = _sha(victim)
    doc = manifest_scan(fixture_dir, manifest, messy)
    doc = ScanDoc(doc.store, doc.files + [_hostile_entry(str(victim), fixture_dir, manifest)], str(messy))
    scan = tmp_path / "scan.json"
    doc.save(scan)
    before_messy = {p: _sha(p) for p in messy.rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "tagmatch", "apply", str(scan), "--min-confidence", "0.9",
                           "--yes"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout + proc.stderr
    assert f"{victim}" in out and "refused, not a file of the scanned folder" in out
    assert _sha(victim) == before and victim.exists()
    after_messy = {p: _sha(p) for p in messy.rglob("*") if p.is_file()}
    assert after_messy != before_messy  # the rest of the scan was applied


def test_quarantine_moves_only_files_of_the_scanned_folders(tmp_path):
    music, elsewhere = tmp_path / "music", tmp_path / "elsewhere"
    for d in (music, elsewhere):
        d.mkdir()
    keeper, copy, victim = music / "a.flac", music / "b.mp3", elsewhere / "c.mp3"
    for p in (keeper, copy, victim):
        p.write_bytes(p.name.encode())
    files = [{"path": str(p)} for p in (keeper, copy, victim)]
    files.append({"path": f"{music}/../elsewhere/c.mp3"})
    doc = DupesReport([str(music)], [{"kind": "duplicate", "keeper": str(keeper), "files": files}])
    plan = quarantine_plan(doc, tmp_path / "q")
    assert [op.src for op in plan.ops] == [copy]
    assert plan.ops[0].dst == tmp_path / "q" / "b.mp3"
    assert sorted(s.path for s in plan.skipped) == sorted([str(victim), f"{music}/../elsewhere/c.mp3"])
    assert all(s.reason.startswith("refused") for s in plan.skipped)

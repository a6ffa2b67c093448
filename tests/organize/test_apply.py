"""Plan, apply and undo on real copies of the fixture files: nothing may lose or corrupt a byte.

Scan JSON documents are built here from the fixture manifest (they are just data), so these tests
never run the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tagmatch.organize import apply as apply_mod
from tagmatch.organize.apply import apply_plan, start_run, undo_run
from tagmatch.cli import main
from tagmatch.organize.journal import applied_sources, find_run, read_run
from tagmatch.errors import TagmatchError
from tagmatch.organize.plan import build_plan, clear_decision, set_decision
from tagmatch.organize.scandoc import ScanDoc
from tagmatch.organize.tags import Picture, read_pictures, read_tag_values, write_tags

JSON_TAGS = ("title", "artist", "album", "tracknumber", "date", "genre")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(80))


# ---- helpers -------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root: relative path -> sha256 (folders -> 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def candidate(fixture_dir: Path, ref: dict, confidence: float) -> dict:
    return {"path": str((fixture_dir / ref["path"]).absolute()), "tags": {k: ref.get(k) for k in JSON_TAGS},
            "confidence": confidence, "offset_s": 0.0, "fragments_agreeing": 3, "fragments_total": 3}


def make_scan(fixture_dir: Path, manifest: dict, messy: Path) -> ScanDoc:
    """What `tagmatch scan --json` would say about `messy`, per the manifest."""
    lib = {e["path"]: e for e in manifest["library"]}
    other = manifest["library"][0]
    files = []
    for e in manifest["messy"]:
        path = str((messy / e["path"].split("/", 1)[1]).absolute())
        if e["expect"] == "match":
            files.append({"path": path, "status": "match", "error": None,
                          "match": candidate(fixture_dir, lib[e["reference"]], 0.97),
                          "alternatives": [candidate(fixture_dir, other, 0.02)]})
        elif e["expect"] == "unknown":
            files.append({"path": path, "status": "unknown", "error": None,
                          "match": candidate(fixture_dir, other, 0.2), "alternatives": []})
        else:
            files.append({"path": path, "status": "error", "error": e.get("reason") or "bad file",
                          "match": None, "alternatives": []})
    return ScanDoc("/nowhere/store.joblib", files)


@pytest.fixture
def messy(fixture_dir, tmp_path) -> Path:
    dst = tmp_path / "messy"
    shutil.copytree(fixture_dir / "messy", dst)
    return dst


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "runs"
    monkeypatch.setenv("TAGMATCH_RUNS", str(d))
    return d


@pytest.fixture
def scan_doc(fixture_dir, manifest, messy) -> ScanDoc:
    return make_scan(fixture_dir, manifest, messy)


def write_scan(doc: ScanDoc, path: Path) -> Path:
    path.write_text(json.dumps(doc.to_json(), ensure_ascii=False), encoding="utf-8")
    return path


def run_plan(plan, runs_dir: Path, **kw):
    run = start_run(plan, runs_dir, id3v23=kw.get("id3v23", False))
    return run, list(apply_plan(plan, run, **kw))


def undo(runs_dir: Path, run_id: str | None = None):
    return list(undo_run(find_run(runs_dir, run_id)))


def matched(doc: ScanDoc) -> list[dict]:
    return [f for f in doc.files if f["status"] == "match"]


def audio_tags(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            try:
                out[str(p.relative_to(root))] = read_tag_values(p)
            except Exception:
                pass
    return out


# ---- the plan ------------------------------------------------------------------------------------
def test_dry_run_changes_nothing(scan_doc, messy, runs_dir, tmp_path, capsys, fixture_dir):
    scan = write_scan(scan_doc, tmp_path / "scan.json")
    before, scan_before = snapshot(messy), scan.read_bytes()
    library = snapshot(fixture_dir / "library")  # the references are read, never written
    assert main(["apply", str(scan), "--min-confidence", "0.5"]) == 0
    assert main(["apply", str(scan), "--min-confidence", "0.5", "--dest", str(tmp_path / "out"), "--move"]) == 0
    out, err = capsys.readouterr()
    assert "Dry run: nothing was changed" in err
    assert "-> Kosmo Dial/Signal Garden/01 Neon Orchard.mp3" in out and "+ title: Neon Orchard | artist: Kosmo Dial" in out
    assert snapshot(messy) == before and scan.read_bytes() == scan_before
    assert snapshot(fixture_dir / "library") == library
    assert not runs_dir.exists() and not (tmp_path / "out").exists()


def test_nothing_is_accepted_without_decisions_or_min_confidence(scan_doc, messy, runs_dir, tmp_path, capsys):
    scan = write_scan(scan_doc, tmp_path / "scan.json")
    before = snapshot(messy)
    assert main(["apply", str(scan), "--yes"]) == 1
    assert "nothing accepted" in capsys.readouterr().err
    assert snapshot(messy) == before and not runs_dir.exists()


def test_unknown_error_and_rejected_files_are_never_planned(scan_doc):
    first = matched(scan_doc)[0]["path"]
    set_decision(scan_doc, first, "rejected")
    for f in scan_doc.files:
        if f["status"] == "unknown":
            f["decision"] = {"status": "accepted", "choice": 0}  # even an explicit accept
    plan = build_plan(scan_doc, min_confidence=0.0)
    planned = {str(op.src) for op in plan.ops}
    assert first not in planned
    assert planned == {f["path"] for f in matched(scan_doc)} - {first}
    reasons = {s.path: s.reason for s in plan.skipped}
    assert reasons[first] == "rejected in review"
    assert all(reasons[f["path"]].startswith("status unknown") for f in scan_doc.files if f["status"] == "unknown")
    assert all(reasons[f["path"]] == "status error" for f in scan_doc.files if f["status"] == "error")


def test_decisions_choose_alternatives_override_tags_and_paths(scan_doc, fixture_dir, manifest):
    a, b, c = (f["path"] for f in matched(scan_doc)[:3])
    set_decision(scan_doc, a, "accepted", choice=1)
    set_decision(scan_doc, b, "accepted", tags={"genre": "Trip Hop", "date": None})
    set_decision(scan_doc, c, "accepted", new_path="Keep/Mine")
    with pytest.raises(Exception):
        set_decision(scan_doc, a, "accepted", choice=5)
    plan = build_plan(scan_doc)  # no --min-confidence: only the accepted files
    ops = {str(op.src): op for op in plan.ops}
    assert set(ops) == {a, b, c}
    alt = manifest["library"][0]
    assert ops[a].dst.name == f"{int(alt['tracknumber']):02d} {alt['title']}{Path(a).suffix.lower()}"
    changes_b = {ch.name: ch.new for ch in ops[b].tag_changes}
    assert changes_b["genre"] == ["Trip Hop"] and "date" not in changes_b  # absent already: no change
    assert ops[c].dst == Path(c).parent / "Keep" / ("Mine" + Path(c).suffix.lower())

def test_decisions_are_saved_with_the_scan_and_nothing_else_changes(scan_doc, tmp_path):
    path = tmp_path / "scan.json"
    scan_doc.save(path)
    original = json.loads(path.read_text(encoding="utf-8"))
    doc = ScanDoc.read(path)
    f = matched(doc)[0]["path"]
    set_decision(doc, f, "accepted", choice=1, tags={"genre": "Jazz"})
    doc.save(path)
    again = json.loads(path.read_text(encoding="utf-8"))
    entry = next(x for x in again["files"] if x["path"] == f)
    assert entry.pop("decision") == {"status": "accepted", "choice": 1, "tags": {"genre": "Jazz"}}
    assert again == original
    clear_decision(doc, f)
    assert "decision" not in next(x for x in doc.files if x["path"] == f)
    with pytest.raises(TagmatchError):
        set_decision(doc, "/not/in/the/scan.mp3", "accepted")
    with pytest.raises(TagmatchError):
        set_decision(doc, f, "maybe")


def test_symbolic_links_are_not_touched(scan_doc, messy, runs_dir):
    f = matched(scan_doc)[0]
    link = messy / "link.mp3"
    link.symlink_to(f["path"])
    f["path"] = str(link)
    plan = build_plan(scan_doc, min_confidence=0.5)
    assert str(link) not in {str(op.src) for op in plan.ops}
    assert next(s.reason for s in plan.skipped if s.path == str(link)).endswith("link.mp3 is a symbolic link")


def test_min_confidence_threshold(scan_doc):
    f0, f1 = matched(scan_doc)[:2]
    f0["match"]["confidence"] = 0.6
    plan = build_plan(scan_doc, min_confidence=0.7)
    assert f0["path"] not in {str(op.src) for op in plan.ops}
    assert f1["path"] in {str(op.src) for op in plan.ops}


# ---- apply and undo ----------------------------------------------------------------------------
def test_rename_in_place_retags_every_format_and_undo_restores_every_byte(scan_doc, messy, runs_dir, manifest):
    before, tags_before = snapshot(messy), audio_tags(messy)
    plan = build_plan(scan_doc, min_confidence=0.5)
    assert {op.src.suffix.lower() for op in plan.ops} >= {".mp3", ".m4a", ".ogg", ".flac", ".wav", ".opus"}
    run, results = run_plan(plan, runs_dir)
    assert [r.status for r in results] == ["done"] * len(plan.ops), [r.message for r in results]
    lib = {e["path"]: e for e in manifest["library"]}
    for op in plan.ops:
        assert not op.src.exists() and op.dst.is_file()
        assert op.dst.parent.parent.parent == messy  # $albumartist/$album/ under the file's folder
        tags = read_tag_values(op.dst)
        for ch in op.tag_changes:
            assert tags.get(ch.name) == ch.new
        ref = next(e for e in lib.values() if str(op.reference).endswith(e["path"]))
        assert tags["title"] == [ref["title"]] and tags["artist"] == [ref["artist"]]
    info = read_run(run.dir)
    assert info.status == "done" and info.count("done") == len(plan.ops)
    assert all(o.entry["hash_before"] and o.hash_after for o in info.ops)
    results = undo(runs_dir)
    assert [r.status for r in results] == ["undone"] * len(plan.ops)
    assert snapshot(messy) == before and audio_tags(messy) == tags_before
    assert read_run(run.dir).status == "undone"
    assert not (run.dir / "backup").exists()


def test_copy_to_dest_leaves_originals_and_undo_removes_the_copies(scan_doc, messy, runs_dir, tmp_path):
    before = snapshot(messy)
    out = tmp_path / "out"
    plan = build_plan(scan_doc, min_confidence=0.5, dest=out)
    assert plan.mode == "copy"
    run, results = run_plan(plan, runs_dir)
    assert all(r.status == "done" for r in results)
    assert snapshot(messy) == before
    assert sorted(p.relative_to(out).parts[0] for p in out.rglob("*.*")) == sorted(
        str(op.dst.relative_to(out).parts[0]) for op in plan.ops)
    assert not (run.dir / "backup").exists()  # copies need no backup: the originals stay
    undo(runs_dir)
    assert snapshot(messy) == before and not out.exists()


def test_move_to_dest_and_back(scan_doc, messy, runs_dir, tmp_path):
    before = snapshot(messy)
    out = tmp_path / "out"
    plan = build_plan(scan_doc, min_confidence=0.5, dest=out, mode="move")
    _, results = run_plan(plan, runs_dir)
    assert all(r.status == "done" for r in results)
    assert all(not op.src.exists() and op.dst.is_file() for op in plan.ops)
    undo(runs_dir)
    assert snapshot(messy) == before and not out.exists()


def _other_filesystem() -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != Path(tempfile.gettempdir()).stat().st_dev:
        return shm
    return None


@pytest.mark.skipif(_other_filesystem() is None, reason="needs /dev/shm on another filesystem than the temp dir")
@pytest.mark.parametrize("runs_elsewhere", [False, True])
def test_move_across_filesystems_and_back(scan_doc, messy, runs_dir, runs_elsewhere):
    before = snapshot(messy)
    other = Path(tempfile.mkdtemp(dir=_other_filesystem(), prefix="tagmatch-test-"))
    try:
        runs = other / "runs" if runs_elsewhere else runs_dir  # backups copied, not hard-linked
        plan = build_plan(scan_doc, min_confidence=0.5, dest=other / "out", mode="move")
        run, results = run_plan(plan, runs)
        assert all(r.status == "done" for r in results), [r.message for r in results]
        assert all(not op.src.exists() and op.dst.is_file() for op in plan.ops)
        if runs_elsewhere:
            assert sorted((run.dir / "backup").iterdir())
        undo(runs)
        assert snapshot(messy) == before and not (other / "out").exists()
    finally:
        shutil.rmtree(other)


def test_id3v23_and_aiff(messy, runs_dir, fixture_dir, manifest, tmp_path):
    import mutagen
    import numpy as np
    import soundfile as sf

    aiff = messy / "take 1.AIFF"  # a 3 s tone: the fixtures have no AIFF
    sf.write(str(aiff), (0.3 * np.sin(np.arange(3 * 44100) * 2 * np.pi * 440 / 44100)).astype("float32"), 44100,
             format="AIFF")
    ref = manifest["library"][1]  # an MP3 reference
    doc = ScanDoc("x", [
        {"path": str(aiff), "status": "match", "error": None, "match": candidate(fixture_dir, ref, 0.9),
         "alternatives": []},
        {"path": str(messy / "track07.mp3"), "status": "match", "error": None,
         "match": candidate(fixture_dir, ref, 0.9), "alternatives": []}])
    before = snapshot(messy)
    plan = build_plan(doc, min_confidence=0.5)
    run, results = run_plan(plan, runs_dir, id3v23=True)
    assert all(r.status == "done" for r in results), [r.message for r in results]
    assert plan.ops[0].dst.name == f"02 {ref['title']}.aiff" and plan.ops[1].dst.name == f"02 {ref['title']}.mp3"
    for op in plan.ops:
        assert mutagen.File(str(op.dst)).tags.version[:2] == (2, 3)
        assert read_tag_values(op.dst)["album"] == [ref["album"]]
    undo(runs_dir)
    assert snapshot(messy) == before


def test_collisions_never_overwrite(scan_doc, messy, runs_dir):
    f0, f1 = matched(scan_doc)[:2]
    f1["match"] = dict(f0["match"])  # two files of one plan map to the same name
    f1["path"] = str(Path(f1["path"]).rename(Path(f1["path"]).with_suffix(Path(f0["path"]).suffix)))
    plan = build_plan(scan_doc, min_confidence=0.5)
    d0, d1 = (next(op.dst for op in plan.ops if str(op.src) == f["path"]) for f in (f0, f1))
    assert d1 == d0.with_name(f"{d0.stem} (1){d0.suffix}")
    d0.parent.mkdir(parents=True)
    d0.write_bytes(b"already here")  # appears after the plan was made
    d1.write_bytes(b"and this too")
    before = snapshot(messy)
    _, results = run_plan(plan, runs_dir)
    assert all(r.status == "done" for r in results)
    assert d0.read_bytes() == b"already here" and d1.read_bytes() == b"and this too"
    dsts = {r.src: Path(r.dst) for r in results}
    assert dsts[f0["path"]].name == f"{d0.stem} (2){d0.suffix}" and dsts[f1["path"]].name == f"{d0.stem} (3){d0.suffix}"
    undo(runs_dir)
    assert snapshot(messy) == before


def test_illegal_characters_and_long_names(scan_doc, messy, runs_dir):
    before = snapshot(messy)
    f = matched(scan_doc)[0]
    f["match"]["tags"].update(title="Who? What: <This> | " + "Ärger " * 80, artist="AC/DC", album="CON")
    plan = build_plan(scan_doc, min_confidence=0.5)
    op = next(op for op in plan.ops if str(op.src) == f["path"])
    rel = op.dst.relative_to(messy)
    assert rel.parts[:2] == ("AC_DC", "CON_")
    assert len(rel.name.encode()) <= 200 and not set('?:<>|') & set(rel.name)
    _, results = run_plan(plan, runs_dir)
    assert all(r.status == "done" for r in results)
    assert read_tag_values(op.dst)["title"][0].startswith("Who? What: <This>")  # tags keep the real title
    undo(runs_dir)
    assert snapshot(messy) == before


def test_art_is_kept_or_copied_from_the_reference(messy, runs_dir, fixture_dir, manifest, tmp_path):
    ref_file = tmp_path / "ref.flac"
    shutil.copy(fixture_dir / manifest["library"][0]["path"], ref_file)
    write_tags(ref_file, {}, add_pictures=[Picture(PNG, "image/png")])
    ref = {**manifest["library"][0], "path": str(ref_file)}
    with_art = messy / "audio_0012.ogg"
    write_tags(with_art, {}, add_pictures=[Picture(b"\xff\xd8own art", "image/jpeg")])
    doc = ScanDoc("x", [
        {"path": str(p), "status": "match", "error": None, "match": candidate(tmp_path, ref, 0.9), "alternatives": []}
        for p in (messy / "track07.mp3", messy / "New Recording 3.m4a", with_art)])
    plan = build_plan(doc, min_confidence=0.5, dest=tmp_path / "out")
    assert [op.art_from is not None for op in plan.ops] == [True, True, False]
    _, results = run_plan(plan, runs_dir)
    assert all(r.status == "done" for r in results), [r.message for r in results]
    assert [p.data for p in read_pictures(plan.ops[0].dst)] == [PNG]
    assert [p.data for p in read_pictures(plan.ops[1].dst)] == [PNG]
    assert [p.data for p in read_pictures(plan.ops[2].dst)] == [b"\xff\xd8own art"]


# ---- failures: each leaves its file byte-for-byte, and the run goes on ----------------------------
def _apply_expecting(plan, runs_dir, messy, failing: set[str], before: dict):
    run, results = run_plan(plan, runs_dir)
    status = {r.src: r.status for r in results}
    assert {s for s, st in status.items() if st == "failed"} == failing, [r.message for r in results]
    assert sum(st == "done" for st in status.values()) == len(plan.ops) - len(failing)
    undo(runs_dir)
    assert snapshot(messy) == before
    assert not list(messy.rglob(".tagmatch-*"))
    return results


def test_read_only_file_is_left_alone(scan_doc, messy, runs_dir):
    victim = matched(scan_doc)[0]["path"]
    os.chmod(victim, 0o444)
    before = snapshot(messy)
    plan = build_plan(scan_doc, min_confidence=0.5)
    results = _apply_expecting(plan, runs_dir, messy, {victim}, before)
    assert "read-only" in next(r.message for r in results if r.src == victim)


def test_retagged_files_keep_their_mode(scan_doc, messy, runs_dir):
    f = matched(scan_doc)[0]["path"]
    os.chmod(f, 0o640)
    plan = build_plan(scan_doc, min_confidence=0.5)
    op = next(op for op in plan.ops if str(op.src) == f)
    assert op.retags
    _, results = run_plan(plan, runs_dir)
    assert all(r.status == "done" for r in results)
    assert (op.dst.stat().st_mode & 0o777) == 0o640


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_folder_is_left_alone(scan_doc, messy, runs_dir):
    sub = messy / "ro"
    sub.mkdir()
    f = matched(scan_doc)[0]
    f["path"] = str(Path(f["path"]).rename(sub / Path(f["path"]).name))
    os.chmod(sub, 0o555)
    try:
        before = snapshot(messy)
        _apply_expecting(build_plan(scan_doc, min_confidence=0.5), runs_dir, messy, {f["path"]}, before)
    finally:
        os.chmod(sub, 0o755)


def test_corrupt_file_is_skipped_and_a_file_corrupted_after_planning_is_not_touched(scan_doc, messy, runs_dir):
    f0, f1 = matched(scan_doc)[:2]
    Path(f0["path"]).write_bytes(b"\x00garbage" * 100)  # before planning: skipped by the plan
    plan = build_plan(scan_doc, min_confidence=0.5)
    assert "cannot read tags" in next(s.reason for s in plan.skipped if s.path == f0["path"])
    Path(f1["path"]).write_bytes(b"ID3\x04garbage" * 100)  # after planning: fails, unchanged
    before = snapshot(messy)
    _apply_expecting(plan, runs_dir, messy, {f1["path"]}, before)


def test_tag_write_failure_midway_is_rolled_back(scan_doc, messy, runs_dir):
    m4a = next(f for f in matched(scan_doc) if f["path"].endswith(".m4a"))
    set_decision(scan_doc, m4a["path"], "accepted", tags={"tracknumber": "B2"})  # MP4 holds numbers only
    before = snapshot(messy)
    plan = build_plan(scan_doc, min_confidence=0.5)
    run, results = run_plan(plan, runs_dir)
    (bad,) = [r for r in results if r.status == "failed"]
    assert bad.src == m4a["path"] and "not a number" in bad.message
    assert read_run(run.dir).ops[bad.i].state == "failed"
    undo(runs_dir)
    assert snapshot(messy) == before


def test_file_deleted_between_plan_and_apply(scan_doc, messy, runs_dir):
    victim = matched(scan_doc)[1]["path"]
    plan = build_plan(scan_doc, min_confidence=0.5)
    os.unlink(victim)
    before = snapshot(messy)
    results = _apply_expecting(plan, runs_dir, messy, {victim}, before)
    assert "gone" in next(r.message for r in results if r.src == victim)


def test_folder_in_the_way_is_a_file(scan_doc, messy, runs_dir, tmp_path):
    out = tmp_path / "out"
    plan = build_plan(scan_doc, min_confidence=0.5, dest=out, mode="move")
    blocked = plan.ops[0].dst.parent.parent  # out/<artist>: make it a file
    blocked.parent.mkdir(parents=True)
    blocked.write_bytes(b"not a folder")
    victims = {str(op.src) for op in plan.ops if blocked in op.dst.parents}
    before = snapshot(messy)
    _apply_expecting(plan, runs_dir, messy, victims, before)
    assert blocked.read_bytes() == b"not a folder"


# ---- undo in the face of change and interruption ------------------------------------------------
def test_undo_refuses_to_overwrite_changed_files_and_goes_on(scan_doc, messy, runs_dir, capsys):
    before = snapshot(messy)
    plan = build_plan(scan_doc, min_confidence=0.5)
    run, _ = run_plan(plan, runs_dir)
    changed, gone = plan.ops[0], plan.ops[1]
    changed.dst.write_bytes(changed.dst.read_bytes() + b"user edit")
    gone.dst.unlink()
    assert main(["undo", run.id]) == 0
    err = capsys.readouterr().err
    assert "changed since the run (hash differs)" in err and "is gone" in err
    assert changed.dst.read_bytes().endswith(b"user edit")  # left as the user made it
    after = snapshot(messy)
    for op in plan.ops[2:]:
        rel = str(op.src.relative_to(messy))
        assert after[rel] == before[rel]
    info = read_run(run.dir)
    assert info.status == "partly undone" and info.ops[0].reason
    assert (run.dir / "backup").is_dir()  # the originals of the refused ops are still kept
    assert main(["runs"]) == 0 and "partly undone" in capsys.readouterr().out


@pytest.mark.parametrize("crash_at", ["write_tags", "_backup", "_place", "unlink_src"])
def test_crash_at_any_step_can_be_undone(scan_doc, messy, runs_dir, monkeypatch, crash_at):
    """Simulate a kill mid-operation (BaseException skips the rollback): undo restores everything."""
    before, tags_before = snapshot(messy), audio_tags(messy)
    plan = build_plan(scan_doc, min_confidence=0.5)
    target = plan.ops[2]
    calls = {"n": 0}

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")

    if crash_at == "unlink_src":
        real_unlink = os.unlink

        def unlink(p, *a, **k):
            if str(p) == str(target.src):
                raise KeyboardInterrupt("killed")
            return real_unlink(p, *a, **k)
        monkeypatch.setattr(apply_mod.os, "unlink", unlink)
    else:
        real = getattr(apply_mod, crash_at)

        def maybe(*a, **k):
            calls["n"] += 1
            if calls["n"] == 3:
                boom()
            return real(*a, **k)
        monkeypatch.setattr(apply_mod, crash_at, maybe)
    run = start_run(plan, runs_dir)
    with pytest.raises(KeyboardInterrupt):
        for _ in apply_plan(plan, run):
            pass
    monkeypatch.undo()
    info = read_run(run.dir)
    assert info.status == "in-flight" and len(info.in_flight) == 1
    assert info.count("done") == 2
    results = undo(runs_dir)
    assert [r.status for r in results] == ["undone"] * 3 and results[0].was_in_flight
    assert snapshot(messy) == before and audio_tags(messy) == tags_before


@pytest.mark.parametrize("crash", [None, "_backup", "after_replace"])
def test_retag_in_place_under_the_same_name(scan_doc, messy, runs_dir, monkeypatch, crash):
    """A file that keeps its name is only retagged: temp copy, backup, atomic replace, undo."""
    before, tags_before = snapshot(messy), audio_tags(messy)
    f = matched(scan_doc)[0]
    set_decision(scan_doc, f["path"], "accepted", new_path=Path(f["path"]).name)
    plan = build_plan(scan_doc)
    (op,) = plan.ops
    assert op.dst == op.src and op.tag_changes
    if crash == "_backup":
        monkeypatch.setattr(apply_mod, "_backup", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    elif crash == "after_replace":
        real_replace = os.replace

        def replace_then_die(a, b):
            real_replace(a, b)
            if str(b) == str(op.src):
                raise KeyboardInterrupt
        monkeypatch.setattr(apply_mod.os, "replace", replace_then_die)
    run = start_run(plan, runs_dir)
    if crash:
        with pytest.raises(KeyboardInterrupt):
            list(apply_plan(plan, run))
        monkeypatch.undo()
        assert read_run(run.dir).status == "in-flight"
    else:
        (r,) = apply_plan(plan, run)
        assert r.status == "done" and read_tag_values(op.src)["title"] == [f["match"]["tags"]["title"]]
        assert (run.dir / "backup").is_dir()
    (u,) = undo(runs_dir)
    assert u.status == "undone"
    assert snapshot(messy) == before and audio_tags(messy) == tags_before


def test_reapply_skips_what_is_done_and_works_again_after_undo(scan_doc, messy, runs_dir):
    plan = build_plan(scan_doc, min_confidence=0.5)
    run, _ = run_plan(plan, runs_dir)
    again = build_plan(scan_doc, min_confidence=0.5, already_applied=applied_sources(runs_dir))
    assert not again.ops and all(f"already applied in run {run.id}" == s.reason
                                 for s in again.skipped if s.path in {str(op.src) for op in plan.ops})
    undo(runs_dir)
    assert len(build_plan(scan_doc, min_confidence=0.5, already_applied=applied_sources(runs_dir)).ops) == len(plan.ops)


def test_cli_apply_runs_undo(scan_doc, messy, runs_dir, tmp_path, capsys):
    scan = write_scan(scan_doc, tmp_path / "scan.json")
    before = snapshot(messy)
    assert main(["apply", str(scan), "--min-confidence", "0.5", "--yes", "-q"]) == 0
    err = capsys.readouterr().err
    assert " done, 0 failed" in err and "undo with: tagmatch undo " in err
    assert snapshot(messy) != before
    assert main(["runs"]) == 0
    line = capsys.readouterr().out.strip()
    assert " done " in line and "rename in place" in line and len(line.splitlines()) == 1
    run_id = line.split()[0]
    assert main(["runs", run_id]) == 0 and "title: (none) -> " in capsys.readouterr().out
    assert main(["apply", str(scan), "--min-confidence", "0.5", "--yes"]) == 0  # nothing left to do
    assert "already applied" in capsys.readouterr().out
    assert main(["undo"]) == 0
    assert snapshot(messy) == before
    assert main(["undo"]) == 1 and "all runs are undone" in capsys.readouterr().err


def _journal_lines(runs_dir: Path) -> list[dict]:
    out = []
    for j in runs_dir.glob("*/journal.jsonl"):
        for line in j.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def test_killed_apply_process_is_undone_completely(scan_doc, messy, runs_dir, tmp_path, capsys):
    """A real `python -m tagmatch apply --yes`, SIGKILLed while an op is in flight, then `undo`."""
    scan = write_scan(scan_doc, tmp_path / "scan.json")
    before, tags_before = snapshot(messy), audio_tags(messy)
    env = {**os.environ, "TAGMATCH_RUNS": str(runs_dir), "TAGMATCH_TEST_SLOW_APPLY": "0.4"}
    cmd = [sys.executable, "-m", "tagmatch"]
    proc = subprocess.Popen([*cmd, "apply", str(scan), "--min-confidence", "0.5", "--yes", "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while True:
        lines = _journal_lines(runs_dir) if runs_dir.exists() else []
        if sum(e["type"] == "done" for e in lines) >= 2 and lines[-1]["type"] == "ready":
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "apply never got midway"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = _journal_lines(runs_dir)
    n_ops = lines[0]["n_ops"]
    assert 2 <= sum(e["type"] == "done" for e in lines) < n_ops and lines[-1]["type"] != "end"
    assert snapshot(messy) != before
    in_flight = lines[-1]["type"] in ("op", "ready")  # almost always: it was killed while sleeping there
    assert main(["runs"]) == 0 and ("in-flight" if in_flight else "interrupted") in capsys.readouterr().out
    res = subprocess.run([*cmd, "undo"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert ("in flight" in res.stderr) == in_flight and " 0 refused" in res.stderr
    assert snapshot(messy) == before and audio_tags(messy) == tags_before

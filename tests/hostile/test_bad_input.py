"""Bad input gets one clear line and a non-zero exit, and nothing already in a store, a journal or
a scan is lost: odd file names, output paths that are folders, broken links, a runs folder that is
a file, a full disk, values out of range, folders that cannot be read, a library that vanished,
and a terminal UI started without a terminal."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
from helpers import tree, tree_bytes

from tagmatch.cli import main
from tagmatch.errors import TagmatchError
from tagmatch.store.index import index_library
from tagmatch.store.shards import Store

BAD_NAME = b"bad \xff\xfe name.wav"  # not UTF-8: Python sees it with surrogates (U+DCFF, U+DCFE)


def _one_error_line(capsys) -> str:
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in printed.err, printed.err
    return lines[0]


def test_a_file_name_that_is_not_utf8_is_scanned_applied_and_undone(fixture_dir, library_store, tmp_path, env,
                                                                    capsys):
    _, store_path = library_store
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy2(fixture_dir / "messy" / "01.wav", os.fsdecode(os.fsencode(folder) + b"/" + BAD_NAME))
    shutil.copy2(fixture_dir / "messy" / "track07.mp3", folder / "track07.mp3")
    before = tree_bytes(folder)
    scan = tmp_path / "scan.json"

    assert main(["scan", str(folder), "--store", str(store_path), "--json", str(scan), "-q"]) == 0
    printed = capsys.readouterr()
    assert r"bad \udcff\udcfe name.wav" in printed.out  # shown, escaped
    text = scan.read_bytes().decode("utf-8")  # the document stays UTF-8
    entry = next(f for f in json.loads(text)["files"] if "bad" in f["path"])
    assert os.fsencode(entry["path"]).endswith(BAD_NAME) and entry["status"] == "match"

    assert main(["apply", str(scan), "--min-confidence", "0.9", "--yes", "-q"]) == 0
    capsys.readouterr()
    after = tree_bytes(folder)
    assert BAD_NAME not in after and len(after) == 2  # renamed from its tags
    assert main(["undo", "-q"]) == 0
    assert tree_bytes(folder) == before


@pytest.mark.parametrize("command", ["scan", "dupes"])
def test_an_output_path_that_is_a_folder_is_refused_before_the_work(command, fixture_dir, library_store, tmp_path,
                                                                   capsys):
    _, store_path = library_store
    out = tmp_path / "out"
    out.mkdir()
    args = [command, str(fixture_dir / "messy"), "--json", str(out), "-q", "--store", str(store_path)]
    if command == "dupes":
        args += ["--cache", str(tmp_path / "cache")]
    assert main(args) == 1
    assert "is a folder: name a file to write" in _one_error_line(capsys)
    assert not (tmp_path / "cache").exists()  # refused before any file was embedded


def test_a_broken_link_in_the_library_is_one_error_and_its_track_is_kept(library_copy, model, tmp_path):
    store, report = index_library(library_copy, None, model)
    n = len(store.tracks)
    victim = sorted(library_copy.rglob("*.flac"))[0]
    moved = tmp_path / "elsewhere.flac"
    victim.rename(moved)
    victim.symlink_to(moved)
    assert index_library(library_copy, store, model)[1].unchanged == n  # a working link: unchanged
    moved.unlink()  # now it points nowhere
    (library_copy / "dangling.mp3").symlink_to(tmp_path / "never-was.mp3")

    store, report = index_library(library_copy, store, model)
    reasons = dict(report.errors)
    assert reasons[str(victim)] == "a broken link" and reasons[str(library_copy / "dangling.mp3")] == "a broken link"
    assert len(store.tracks) == n and not report.removed  # the track it had stays


def test_runs_folder_that_is_a_file_is_one_line(manifest_scan_path, messy, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs-file"
    runs.write_text("not a folder")
    monkeypatch.setenv("TAGMATCH_RUNS", str(runs))
    before = tree(messy)
    for args in (["apply", str(manifest_scan_path), "--min-confidence", "0.9", "--yes", "-q"], ["runs"], ["undo"]):
        assert main(args) == 1
        assert "is a file, not a folder" in _one_error_line(capsys)
    assert tree(messy) == before and runs.read_text() == "not a folder"


def _disk_full_after(monkeypatch, n_fsyncs: int) -> list[int]:
    """Every fsync after the first `n_fsyncs` fails as on a full disk (writes before it land in
    the page cache, as they do): the point where a write is known to have failed."""
    real, calls = os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] > n_fsyncs:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_a_full_disk_keeps_the_old_scan_json_and_the_old_store(fixture_dir, library_store, model, tmp_path,
                                                               monkeypatch, capsys):
    store, store_path = library_store
    mine = tmp_path / "store"
    shutil.copytree(store_path, mine)
    scan = tmp_path / "scan.json"
    scan.write_text('{"old": true}')

    _disk_full_after(monkeypatch, 0)
    assert main(["scan", str(fixture_dir / "messy" / "01.wav"), "--store", str(mine), "--json", str(scan),
                 "-q"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"tagmatch: error: cannot write {scan}: No space left on device"
    assert scan.read_text() == '{"old": true}'

    shutil.copy2(fixture_dir / "messy" / "01.wav", tmp_path / "new.wav")
    grown = Store.load(mine)
    with pytest.raises(TagmatchError, match="No space left on device"):
        index_library(tmp_path, grown, model, prune=False)[0].save(mine)
    monkeypatch.undo()
    again = Store.load(mine)  # the store as it was
    assert [t.path for t in again.tracks] == [t.path for t in store.tracks]
    assert again.n_vectors == store.n_vectors


@pytest.mark.parametrize("fsyncs", [1, 4, 9])
def test_a_full_disk_stops_an_apply_and_undo_puts_everything_back(manifest_scan_path, messy, env, monkeypatch,
                                                                  fsyncs):
    from tagmatch.organize.apply import apply_plan, start_run, undo_run
    from tagmatch.organize.journal import list_runs
    from tagmatch.organize.plan import build_plan
    from tagmatch.organize.scandoc import ScanDoc

    before = tree(messy)
    plan = build_plan(ScanDoc.read(manifest_scan_path), min_confidence=0.9)
    run = start_run(plan, env)
    _disk_full_after(monkeypatch, fsyncs)
    with pytest.raises(TagmatchError) as stopped:
        list(apply_plan(plan, run))
    message = str(stopped.value)
    assert "\n" not in message and f"tagmatch undo {run.id}" in message and "No space left on device" in message
    kept = set(tree(messy).values()) | set(tree(env).values())  # retagged files: originals in the run's backup
    assert set(before.values()) <= kept  # no byte lost meanwhile
    monkeypatch.undo()  # space again
    list(undo_run(next(r for r in list_runs(env) if r.id == run.id)))
    assert tree(messy) == before


@pytest.mark.parametrize("args", [
    ["scan", "DIR", "--threshold", "-1"], ["scan", "DIR", "--threshold", "2"], ["scan", "DIR", "--threshold", "nan"],
    ["apply", "SCAN", "--min-confidence", "-1"], ["apply", "SCAN", "--min-confidence", "inf"],
    ["index", "DIR", "--jobs", "0"], ["train", "DIR", "--out", "m.joblib", "--steps", "-5"],
])
def test_values_out_of_range_are_refused(args, fixture_dir, manifest_scan_path, capsys):
    args = [{"DIR": str(fixture_dir / "messy"), "SCAN": str(manifest_scan_path)}.get(a, a) for a in args]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "is not a" in capsys.readouterr().err.strip().splitlines()[-1]


def test_library_calls_refuse_out_of_range_values(fixture_dir, library_store, manifest_scan_path):
    from tagmatch.jobs import scan_job
    from tagmatch.organize.plan import build_plan
    from tagmatch.organize.scandoc import ScanDoc

    with pytest.raises(TagmatchError, match="from 0 to 1"):
        scan_job(fixture_dir / "messy", library_store[1], threshold=float("nan"))
    with pytest.raises(TagmatchError, match="from 0 to 1"):
        build_plan(ScanDoc.read(manifest_scan_path), min_confidence=-1)


def test_an_unreadable_folder_keeps_its_tracks(library_copy, model, monkeypatch):
    store, _ = index_library(library_copy, None, model)
    n = len(store.tracks)
    locked = next(p for p in sorted(library_copy.iterdir()) if p.is_dir())
    real = os.scandir

    def scandir(path="."):  # as for a folder of mode 000 (root reads those anyway, so it is simulated)
        if os.fspath(path) == str(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(locked))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    store, report = index_library(library_copy, store, model)
    assert len(store.tracks) == n and not report.removed
    assert report.errors == [(str(locked), "cannot read this folder (Permission denied); its tracks are kept "
                                           "as they were")]


def test_an_emptied_library_does_not_empty_the_store(library_copy, model, tmp_path, capsys):
    store_path = tmp_path / "store"
    assert main(["index", str(library_copy), "--store", str(store_path), "-q"]) == 0
    capsys.readouterr()
    n = len(Store.load(store_path).tracks)
    kept = sorted(library_copy.rglob("*.*"))[: n // 2 - 1]
    for p in sorted(library_copy.rglob("*.*")):
        if p not in kept:
            p.unlink()  # as good as unmounted: most of it is gone

    assert main(["index", str(library_copy), "--store", str(store_path), "-q"]) == 1
    line = _one_error_line(capsys)
    assert "are no longer there" in line and "--prune" in line
    assert len(Store.load(store_path).tracks) == n

    assert main(["index", str(library_copy), "--store", str(store_path), "-q", "--prune"]) == 0
    assert len(Store.load(store_path).tracks) == len(kept)


def test_review_without_a_terminal_says_so(manifest_scan_path, capsys):
    assert main(["review", str(manifest_scan_path)]) == 1  # pytest's stdin is not a terminal
    assert "review needs a terminal" in _one_error_line(capsys)


def test_a_file_error_under_the_progress_bars_is_one_line_in_a_narrow_terminal(fixture_dir, library_store, tmp_path):
    """The progress bars' console wraps at the terminal's width; a file's error must not be cut."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "tagmatch", "scan", str(fixture_dir / "messy" / "notes.mp3"),
                        "--store", str(library_store[1]), "--json", str(tmp_path / "s.json")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "50"})
    lines = [line for line in r.stderr.splitlines() if "notes.mp3:" in line]
    assert len(lines) == 1 and lines[0].endswith("Invalid data found when processing input"), r.stderr

"""Fuzzing with hypothesis: whatever the tags and file names, plan and apply keep every new file
inside --dest (or the scanned folder), never crash and never lose a byte, and undo restores every
name and byte; whatever a scan or dupes document holds, its reader and what plans from it answer
with one-line errors only."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import tree_bytes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tagmatch.errors import TagmatchError
from tagmatch.organize.scandoc import ScanDoc

FUZZ = settings(max_examples=int(os.environ.get("TAGMATCH_FUZZ_EXAMPLES", 40)), deadline=None, database=None,
                derandomize=not os.environ.get("TAGMATCH_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Whatever a tag can hold: every plane of Unicode (controls, bidi, surrogate-free), separators,
# dots and slashes, long runs.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
TAG_VALUE = st.one_of(TEXT, st.sampled_from(["..", ".", "/", "../../etc", "CON", "a/../../b", " ", "\u202egpj",
                                             "\x1b[2J", "x" * 400]))
SOURCES = ["01.wav", "track07.mp3", "Track 14.flac", "audio_0012.ogg", "New Recording 3.m4a", "rip  (1).opus"]


def _file_name(draw_text: str, suffix: str) -> str:
    """A name the file system takes: no '/' or NUL, at most 200 bytes, not '.' or '..'."""
    name = draw_text.replace("/", "_").replace("\x00", "_")
    while len(os.fsencode(name + suffix)) > 200:
        name = name[:-1]
    return (name if name.strip(".") else "x" + name) + suffix


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


@FUZZ
@given(source=st.sampled_from(SOURCES), name=TEXT, mode=st.sampled_from(["copy", "move", "in place"]),
       tags=st.fixed_dictionaries({}, optional={k: TAG_VALUE for k in ("title", "artist", "album", "tracknumber",
                                                                      "date", "genre")}),
       new_path=st.one_of(st.none(), TAG_VALUE))
def test_tags_and_names_from_anyone_stay_inside_and_lose_nothing(fixture_dir, source, name, mode, tags, new_path):
    from tagmatch.organize.apply import apply_plan, start_run, undo_run
    from tagmatch.organize.journal import list_runs
    from tagmatch.organize.plan import build_plan, set_decision

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, dest, runs = tmp / "in", tmp / "dest", tmp / "runs"
        folder.mkdir()
        src = folder / _file_name(name, Path(source).suffix)
        shutil.copy2(fixture_dir / "messy" / source, src)
        before = tree_bytes(folder)
        ref = next((fixture_dir / "library").rglob("*.flac"))
        entry = {"path": str(src), "status": "match", "error": None, "alternatives": [],
                 "match": {"path": str(ref), "tags": tags, "confidence": 0.99}}
        doc = ScanDoc(str(tmp / "store"), [entry], str(folder))
        try:
            set_decision(doc, src, "accepted", tags=tags or None, new_path=new_path or None)
        except TagmatchError as exc:  # a tag name or path the decision refuses: one line
            assert "\n" not in str(exc)
            event("decision refused")
            return
        try:
            plan = build_plan(doc, dest=dest if mode != "in place" else None,
                              mode={"copy": "copy", "move": "move", "in place": None}[mode])
        except TagmatchError as exc:
            assert "\n" not in str(exc)
            event("plan refused")
            return
        event(f"{len(plan.ops)} op(s) planned")
        for op in plan.ops:
            assert _inside(op.dst, dest if mode != "in place" else folder), op.dst
        for sk in plan.skipped:
            assert "\n" not in sk.reason
        results = list(apply_plan(plan, start_run(plan, runs)))
        event("applied: " + ", ".join(sorted({r.status for r in results})))
        for r in results:
            assert r.status == "done" or (r.message and "\n" not in r.message)
        made = [Path(os.fsdecode(dirpath)) / os.fsdecode(n) for dirpath, _, names in os.walk(os.fsencode(tmp))
                for n in names]
        for p in made:  # every file tagmatch wrote is in --dest, the scanned folder or its runs folder
            assert any(_inside(p, f) for f in (dest, folder, runs)), p
        if mode == "copy":
            assert tree_bytes(folder) == before  # the original untouched
        for run in list_runs(runs):
            list(undo_run(run))
        assert tree_bytes(folder) == before  # every name and byte back
        assert not dest.exists() or not any(p.is_file() for p in dest.rglob("*"))


# ---- documents -------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)


def _mutations(doc: dict):
    """Strategies that replace one value somewhere in `doc` by any JSON value, or drop a key."""
    paths = []

    def walk(node, at):
        paths.append(at)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, at + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, at + (i,))

    walk(doc, ())
    return st.tuples(st.sampled_from(paths), JSON, st.booleans())


def _mutate(doc: dict, at: tuple, value, drop: bool) -> object:
    doc = copy.deepcopy(doc)
    if not at:
        return value
    node = doc
    for k in at[:-1]:
        node = node[k]
    if drop and isinstance(node, dict):
        del node[at[-1]]
    else:
        node[at[-1]] = value
    return doc


@pytest.fixture(scope="module")
def scan_json(fixture_dir, manifest, tmp_path_factory) -> dict:
    from helpers import manifest_scan

    messy = tmp_path_factory.mktemp("fuzz") / "messy"
    shutil.copytree(fixture_dir / "messy", messy)
    doc = manifest_scan(fixture_dir, manifest, messy)
    doc.target = str(messy)
    doc.files[0]["decision"] = {"status": "accepted", "choice": 0, "tags": {"title": "x"}, "path": "A/b"}
    doc.files[1]["seen"] = {"size": 1, "mtime_ns": 2, "blake2b_edges": "ab"}
    return json.loads(json.dumps(doc.to_json()))


def _hostile_copy(data, doc: dict, path: Path) -> Path:
    """`doc` with one value anywhere replaced by any JSON value (or a key dropped), written to `path`."""
    at, value, drop = data.draw(_mutations(doc))
    path.write_text(json.dumps(_mutate(doc, at, value, drop)), encoding="utf-8")
    return path


def _one_line_or_fine(f) -> None:
    try:
        f()
    except TagmatchError as exc:
        assert "\n" not in str(exc) and str(exc)


@FUZZ
@given(data=st.data())
def test_a_scan_document_with_anything_in_it_gets_one_line_errors(scan_json, tmp_path, data):
    from tagmatch.organize.plan import build_plan

    path = _hostile_copy(data, scan_json, tmp_path / "scan.json")

    def read_and_plan():
        doc = ScanDoc.read(path)
        build_plan(doc, min_confidence=0.5)
        build_plan(doc, dest=tmp_path / "dest", min_confidence=0.5)

    _one_line_or_fine(read_and_plan)
    assert not (tmp_path / "dest").exists()  # planning writes nothing


@pytest.fixture(scope="module")
def dupes_json(dupes_dir, tmp_path_factory) -> dict:
    from tagmatch.jobs import dupes_job

    doc = dupes_job([dupes_dir], tmp_path_factory.mktemp("fuzz-cache") / "cache")
    return json.loads(json.dumps(doc.to_json()))


@FUZZ
@given(data=st.data())
def test_a_dupes_report_with_anything_in_it_gets_one_line_errors(dupes_json, tmp_path, data):
    from tagmatch.dupes.quarantine import check_quarantine, quarantine_plan
    from tagmatch.dupes.report import DupesReport, load_report

    path = _hostile_copy(data, dupes_json, tmp_path / "report.json")

    def read_and_plan():
        doc = load_report(path)
        if isinstance(doc, DupesReport):
            q = check_quarantine(doc, tmp_path / "q")
            quarantine_plan(doc, q)
            if doc.groups:
                doc.set_keeper(0, str(tmp_path / "nothing.wav"))

    _one_line_or_fine(read_and_plan)
    assert not (tmp_path / "q").exists()

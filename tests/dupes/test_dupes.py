"""Duplicate recordings on real files: re-encodes, excerpts, gain and format changes are grouped,
distinct pieces are not, shared stretches are partial overlaps; quarantine and undo restore all."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagmatch.dupes.find import against_library, find_duplicates, restrict
from tagmatch.dupes.keeper import choose_keeper
from tagmatch.store.index import index_library
from tagmatch.store.shards import vector_scale
from helpers import GROUPS, P0, P1, P2, P8, tree


@pytest.fixture(scope="module")
def found(dupes_dir, model):
    from tagmatch.dupes.report import file_facts

    store, report = index_library(dupes_dir, None, model)
    assert not report.errors
    infos = {i: file_facts(t.path, t.tags, t.size) for i, t in enumerate(store.tracks)}
    fc = model.feature_config
    window_s = fc.window_samples / fc.sample_rate
    groups = find_duplicates(store, infos, window_s)

    def rel(i):
        return str(Path(store.tracks[i].path).relative_to(dupes_dir))
    return {"store": store, "groups": groups, "rel": rel, "window_s": window_s, "infos": infos}


def test_copies_are_grouped_with_the_right_keeper(found):
    dup = [[found["rel"](m) for m in g.members] for g in found["groups"] if g.kind == "duplicate"]
    assert sorted(dup) == sorted(GROUPS)


def test_distinct_pieces_are_in_no_group(found):
    grouped = {found["rel"](m) for g in found["groups"] for m in g.members}
    assert "messy/Track 14.flac" not in grouped  # a piece with no copy
    assert P0 in grouped and P1 in grouped  # only through the medley, as partial overlaps
    for g in found["groups"]:
        if g.kind == "duplicate":
            assert "made/medley.wav" not in [found["rel"](m) for m in g.members]


def test_shared_stretches_are_partial_overlaps_with_their_length(found):
    partial = {frozenset(map(found["rel"], g.members)): g for g in found["groups"] if g.kind == "partial"}
    # xyz.ogg and clip_final_FINAL.m4a are excerpts of one piece that share only ~6 s: below
    # min_partial_s, so not reported.
    assert set(partial) == {frozenset({P0, "made/medley.wav"}), frozenset({P1, "made/medley.wav"})}
    for piece, length in ((P0, 12.0), (P1, 20.0)):
        g = partial[frozenset({piece, "made/medley.wav"})]
        ov = g.overlaps[g.members[1]]
        assert abs(ov.overlap_s - length) <= 1.5, (piece, ov)


def test_excerpt_overlap_and_offset(found, manifest):
    expect = {e["path"]: e for e in manifest["messy"]}
    for g in found["groups"]:
        for m, ov in g.overlaps.items():
            e = expect.get(found["rel"](m))
            if g.kind == "duplicate" and e and found["rel"](g.members[0]) == e["reference"]:
                # the copy starts offset_s into the keeper and is shared whole
                assert abs(-ov.offset_s - e["offset_s"]) <= 0.5, (e["path"], ov)
                assert ov.overlap_s >= 0.9 * e["duration_s"], (e["path"], ov)


def test_keeper_rule():
    infos = {
        0: {"path": "/a.mp3", "lossless": False, "bitrate": 320000, "duration_s": 200.0, "tags": {}},
        1: {"path": "/b.flac", "lossless": True, "bitrate": 900000, "duration_s": 200.0, "tags": {}},
        2: {"path": "/c.flac", "lossless": True, "bitrate": 950000, "duration_s": 60.0, "tags": {}},  # excerpt
        3: {"path": "/d.mp3", "lossless": False, "bitrate": 320000, "duration_s": 200.0, "tags": {"title": "x"}},
    }
    assert choose_keeper([0, 1, 2, 3], infos) == 1  # lossless and complete
    assert choose_keeper([0, 2], infos) == 0  # a lossless excerpt never displaces the whole recording
    assert choose_keeper([0, 3], infos) == 3  # same quality: better tagged
    assert choose_keeper([0, 1, 3], infos, keep={"/a.mp3"}) == 0  # the user's choice


def test_against_library(found, library_store, dupes_dir):
    store, _ = library_store
    hits = against_library(found["store"], store, found["window_s"])
    got = {found["rel"](h.track): Path(store.tracks[h.library_track].path).name for h in hits}
    for name in ("messy/track07.mp3", "messy/-leading dash.wav", "made/quiet copy.flac", P8):
        assert name in got, got
    assert got["messy/track07.mp3"] == Path(P8).name
    assert "messy/Track 14.flac" not in got and "messy/xyz.ogg" not in got


def test_restrict_keeps_only_the_named_tracks(found):
    sub, old = restrict(found["store"], [1, 3])
    assert old == [1, 3] and len(sub.tracks) == 2
    assert sub.tracks[1].path == found["store"].tracks[3].path
    assert set(np.unique(sub.vec_track)) == {0, 1}


# ---- the command line: report, dry run, quarantine, undo ------------------------------------------
def run(*args, env):
    proc = subprocess.run([sys.executable, "-m", "tagmatch", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_cli_report_quarantine_and_undo(dupes_dir, tmp_path):
    music = tmp_path / "music"
    shutil.copytree(dupes_dir, music)
    env = {"TAGMATCH_RUNS": str(tmp_path / "runs"), "TAGMATCH_CACHE_STORE": str(tmp_path / "cache")}
    before = tree(music)
    report = tmp_path / "dupes.json"
    out = run("dupes", music, "--json", report, "--quiet", env=env)
    doc = json.loads(report.read_text())
    assert doc["version"] == 1 and doc["roots"] == [str(music.resolve())]
    dup = [g for g in doc["groups"] if g["kind"] == "duplicate"]
    assert sorted([str(Path(f["path"]).relative_to(music.resolve())) for f in g["files"]] for g in dup) \
        == sorted(GROUPS)
    for g in doc["groups"]:
        assert g["keeper"] == g["files"][0]["path"]
        for f in g["files"]:
            assert set(f) >= {"path", "format", "bitrate", "duration_s", "overlap_s", "offset_s"}
            assert Path(f["path"]).is_absolute()
    assert "duplicate group" in out.stdout and "partial group" in out.stdout

    q = tmp_path / "quarantine"
    dry = run("dupes", music, "--quarantine", q, "--quiet", env=env)
    assert "Dry run" in dry.stderr and not q.exists() and tree(music) == before

    # Choose another keeper in the report: the MP3 re-encode instead of the FLAC.
    for g in doc["groups"]:
        if g["keeper"].endswith("Neon Orchard.flac"):
            g["keeper"] = next(f["path"] for f in g["files"] if f["path"].endswith("track07.mp3"))
    report.write_text(json.dumps(doc))
    run("dupes", "--from", report, "--quarantine", q, "--yes", "--quiet", env=env)
    moved = tree(q)
    assert set(moved) == {"messy/-leading dash.wav", "messy/Ünïcödé café.flac", P2, P8}
    assert all(moved[k] == before[k] for k in moved)  # byte-identical, relative paths kept
    after = tree(music)
    assert set(after) == set(before) - set(moved)

    run("undo", env=env)
    assert tree(music) == before
    assert not any(p.is_file() for p in q.rglob("*"))


@pytest.mark.slow
def test_cli_refuses_a_quarantine_inside_the_scanned_folder(dupes_dir, tmp_path):
    env = {"TAGMATCH_RUNS": str(tmp_path / "runs"), "TAGMATCH_CACHE_STORE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "tagmatch", "dupes", str(dupes_dir), "--quarantine",
                           str(dupes_dir / "aside"), "--quiet"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    assert proc.returncode == 1 and "inside a scanned folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_approximate_search_finds_the_same_groups(found):
    """The IVF index (used above dupes.APPROX_ABOVE vectors) on a small store: same groups."""
    from tagmatch.store.ann import IVFSearch

    store = found["store"]
    ivf = IVFSearch(store, nlist=16, nprobe=4)
    q = store.vectors[::7].astype(np.float32) / np.float32(vector_scale(store.dim))
    _, exact = store.search(q, 1)
    _, approx = ivf.search(q, 1)
    # The same similarity, not the same vector number: duplicates have near-identical vectors.
    assert np.mean(np.isclose(exact[:, 0], approx[:, 0], atol=1e-4)) >= 0.95
    groups = find_duplicates(store, found["infos"], found["window_s"], search="approximate")
    assert [g.members for g in groups] == [g.members for g in found["groups"]]


def test_an_excerpt_of_a_passage_two_recordings_share_does_not_join_them():
    """A and B share a passage (a partial overlap only); X, an excerpt of B from that passage, is
    contained in both. Grouping through X would make A and B copies: X goes with B, the recording
    it matches best, and A keeps its own copy."""
    from tagmatch.dupes.find import _duplicate_groups, Overlap

    A, A2, B, B2, X = range(5)
    pairs = {(A, A2): 0.97, (B, B2): 0.96, (B, X): 0.95, (B2, X): 0.93, (A, X): 0.66, (A2, X): 0.65}
    pairs = {p: Overlap(*p, 30.0, 0.0, "duplicate", s) for p, s in pairs.items()}
    length = {A: 756.0, A2: 755.0, B: 372.0, B2: 371.0, X: 40.0}.__getitem__
    asked = []

    def duplicates(a, b):
        asked.append({a, b})
        return {a, b} <= {A, A2} or {a, b} <= {B, B2, X}

    assert _duplicate_groups(pairs, length, duplicates) == [[A, A2], [B, B2, X]]
    assert {A, B} in asked  # the longest members were compared before joining
    # the same pairs when the two recordings are copies of each other: one group
    assert _duplicate_groups(pairs, length, lambda a, b: True) == [[A, A2, B, B2, X]]



def test_each_pair_is_measured_once(found, monkeypatch):
    """A third copy whose pair with its source was not a search candidate joins the group through
    the other copy, and its overlap is still measured and reported; no pair is aligned twice
    (checking a join and reporting the keeper's overlaps share one measurement)."""
    import tagmatch.dupes.find as dupes
    from tagmatch.store.shards import TrackInfo

    store, infos, rel = found["store"], dict(found["infos"]), found["rel"]
    sub, _ = restrict(store, list(range(len(store.tracks))))
    keeper = next(i for i in range(len(store.tracks)) if rel(i) == GROUPS[0][0])  # the copied file
    times, vectors = sub.track_vectors(keeper)
    info = store.tracks[keeper]
    third = sub.add_track(TrackInfo(info.path + ".copy.flac", info.tags, info.duration_s, info.size, info.mtime_ns),
                          vectors, times)
    infos[third] = dict(infos[keeper], path=info.path + ".copy.flac")
    real_pairs, real_verify = dupes.candidate_pairs, dupes.verify
    calls = []

    def pairs_without_the_keepers(*args, **kwargs):
        return [p for p in real_pairs(*args, **kwargs) if p != (keeper, third)]

    def counting(tracks_a, a, tracks_b, b, *args, **kwargs):
        calls.append((min(a, b), max(a, b)))
        return real_verify(tracks_a, a, tracks_b, b, *args, **kwargs)

    monkeypatch.setattr(dupes, "candidate_pairs", pairs_without_the_keepers)
    monkeypatch.setattr(dupes, "verify", counting)
    groups = find_duplicates(sub, infos, found["window_s"])
    group = next(g for g in groups if keeper in g.members)
    assert sorted(group.members) == sorted([keeper, third, *(i for i in range(len(store.tracks))
                                                             if rel(i) == GROUPS[0][1])])
    assert len(group.overlaps) == 2 and all(ov.kind == "duplicate" for ov in group.overlaps.values())
    assert calls.count((keeper, third)) == 1 and len(calls) == len(set(calls))

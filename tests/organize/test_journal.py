"""The journal: append-only JSON lines, replayed into op states and run statuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tagmatch.errors import TagmatchError
from tagmatch.organize.journal import (JOURNAL, Journal, applied_sources, create_run, default_runs_dir, find_run, list_runs,
                              read_run)


def op(i: int, src: str = None, **kw) -> dict:
    return {"type": "op", "i": i, "mode": "move", "src": src or f"/m/{i}.mp3", "dst": f"/m/A/{i}.mp3",
            "tmp": None, "backup": None, "dirs": [], "old_tags": {}, "new_tags": {}, "art": False,
            "hash_before": "h0", "hash_after": None, **kw}


def make_run(runs_dir: Path, lines: list[dict], n_ops: int | None = None) -> str:
    run_id, _, j = create_run(runs_dir, {"mode": "move", "dest": None, "n_ops": n_ops or len(lines)})
    with j:
        for e in lines:
            j.write(e)
    return run_id


def test_runs_dir_comes_from_the_environment_or_the_user_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TAGMATCH_RUNS", str(tmp_path / "r"))
    assert default_runs_dir() == tmp_path / "r"
    monkeypatch.delenv("TAGMATCH_RUNS")
    assert default_runs_dir().parts[-2:] == ("tagmatch", "runs")


def test_every_line_is_json_and_the_header_comes_first(tmp_path):
    run_id = make_run(tmp_path, [op(0), {"type": "done", "i": 0}, {"type": "end", "interrupted": False}])
    lines = [json.loads(l) for l in (tmp_path / run_id / JOURNAL).read_text().splitlines()]
    assert lines[0]["type"] == "run" and lines[0]["id"] == run_id and lines[0]["version"] == 1
    assert [l["type"] for l in lines[1:]] == ["op", "done", "end"]


@pytest.mark.parametrize("lines,status,states", [
    ([op(0), {"type": "done", "i": 0}, op(1), {"type": "ready", "i": 1, "hash_after": "h1"}], "in-flight",
     ["done", "in-flight"]),
    ([op(0), {"type": "done", "i": 0}], "interrupted", ["done"]),  # killed between two ops
    ([op(0), {"type": "done", "i": 0}, {"type": "end", "interrupted": False}], "done", ["done"]),
    ([op(0), {"type": "done", "i": 0}, op(1), {"type": "done", "i": 1}, {"type": "end"},
      {"type": "undone", "i": 1}], "partly undone", ["done", "undone"]),
    ([op(0), {"type": "done", "i": 0}, {"type": "end"}, {"type": "undone", "i": 0}], "undone", ["undone"]),
    ([{"type": "failed", "i": 0, "src": "/m/0.mp3", "dst": "/m/x.mp3", "reason": "gone"}, {"type": "end"}],
     "failed", ["failed"]),
    ([{"type": "end"}], "empty", []),
])
def test_replay_states_and_status(tmp_path, lines, status, states):
    info = read_run(tmp_path / make_run(tmp_path, lines))
    assert info.status == status and [o.state for o in info.ops] == states


def test_ready_line_carries_the_new_hash_and_refusals_their_reason(tmp_path):
    lines = [op(0), {"type": "ready", "i": 0, "hash_after": "h1"}, {"type": "done", "i": 0},
             {"type": "undo_refused", "i": 0, "reason": "changed since the run"}]
    (o,) = read_run(tmp_path / make_run(tmp_path, lines)).ops
    assert o.hash_after == "h1" and o.ready and o.state == "done" and o.reason == "changed since the run"


def test_a_torn_last_line_is_ignored_but_a_corrupt_middle_is_not(tmp_path):
    run_dir = tmp_path / make_run(tmp_path, [op(0)])
    with open(run_dir / JOURNAL, "a") as f:
        f.write('{"type": "done", "i"')  # killed mid-write
    assert [o.state for o in read_run(run_dir).ops] == ["in-flight"]
    with open(run_dir / JOURNAL, "a") as f:
        f.write('\n{"type": "end"}\n')
    with pytest.raises(TagmatchError, match="corrupt journal"):
        read_run(run_dir)


def test_an_open_run_is_locked(tmp_path):
    run_id, run_dir, j = create_run(tmp_path, {"n_ops": 0})
    with pytest.raises(TagmatchError, match="in use"):
        Journal(run_dir / JOURNAL)
    j.close()
    Journal(run_dir / JOURNAL).close()


def test_find_and_list_runs(tmp_path):
    assert list_runs(tmp_path / "none") == []
    with pytest.raises(TagmatchError, match="no run to undo"):
        find_run(tmp_path, None)
    a = make_run(tmp_path, [op(0), {"type": "done", "i": 0}, {"type": "end"}])
    b = make_run(tmp_path, [op(0), {"type": "done", "i": 0}, {"type": "end"}, {"type": "undone", "i": 0}])
    (tmp_path / "not-a-run").mkdir()
    assert [r.id for r in list_runs(tmp_path)] == sorted([a, b])
    assert find_run(tmp_path, None).id == a  # the latest run that is not undone yet
    assert find_run(tmp_path, b).id == b
    with pytest.raises(TagmatchError, match="no run"):
        find_run(tmp_path, "nope")
    with pytest.raises(TagmatchError, match="ambiguous"):
        find_run(tmp_path, "20")  # both ids start with the century
    if a[:-2] != b[:-2]:
        assert find_run(tmp_path, a[:-2]).id == a  # a unique prefix is enough


def test_applied_sources(tmp_path):
    make_run(tmp_path, [op(0, "/m/a.mp3"), {"type": "done", "i": 0}, op(1, "/m/b.mp3"), {"type": "done", "i": 1},
                        {"type": "undone", "i": 1}, op(2, "/m/c.mp3"),
                        {"type": "failed", "i": 3, "src": "/m/d.mp3", "dst": "/x", "reason": "r"}])
    got = applied_sources(tmp_path)
    assert {k: v[1] for k, v in got.items()} == {"/m/a.mp3": "done", "/m/c.mp3": "in-flight"}

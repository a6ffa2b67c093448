"""Runs and their journals: an append-only, fsync'd JSON-lines record of every file operation.

Each `apply --yes` is a run: `<runs dir>/<run id>/journal.jsonl`, plus `backup/` holding the
originals of files that were retagged in place or moved (byte-exact undo). The runs dir is
`$TAGMATCH_RUNS`, else `<user data dir>/tagmatch/runs`. One line per event, written and fsynced
before the next step, so after a crash the journal says what may have happened:

    {"type": "run", "version": 1, "id", "time", "scan", "mode", "dest", "template", "id3v23", "n_ops", "pid"}
    {"type": "op", "i", "mode", "src", "dst", "tmp", "backup", "dirs", "old_tags", "new_tags",
     "art", "hash_before", "hash_after"}   # before anything the user can see changes
    {"type": "ready", "i", "hash_after"}   # the new file is staged beside dst and verified
    {"type": "done", "i"}                  # dst in place (and src retired, for moves)
    {"type": "failed", "i", "reason"}      # rolled back: nothing changed (alone, with src/dst,
                                           # when the op failed its checks before its "op" line)
    {"type": "undone", "i", "note"}
    {"type": "undo_refused", "i", "reason"}
    {"type": "end", "interrupted"}

`hash_after` is in the "op" line when it is known up front (no retag: the bytes do not change).
An op whose last word is "op" or "ready" was in flight when the process died.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from tagmatch.errors import TagmatchError
from tagmatch.fsutil import fsync_dir, json_text, make_folder

JOURNAL_VERSION = 1
RUNS_ENV = "TAGMATCH_RUNS"
JOURNAL = "journal.jsonl"


def default_runs_dir() -> Path:
    """$TAGMATCH_RUNS, else the user's data dir (XDG on Linux)."""
    env = os.environ.get(RUNS_ENV)
    if env:
        if os.path.exists(env) and not os.path.isdir(env):
            raise TagmatchError(f"${RUNS_ENV} is {env}, which is a file, not a folder")
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("tagmatch")) / "runs"


class JournalError(TagmatchError):
    """A journal line could not be written: the run must stop before its next step."""


class Journal:
    """Appends fsynced lines to a run's journal; holds an exclusive lock while open so an undo
    cannot run while the apply is still going (the lock dies with the process)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc.strerror or exc}") from None
        try:
            import fcntl

            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory locks; one process at a time is on the user
            pass
        except OSError as exc:
            self._f.close()
            raise TagmatchError(f"run {self.path.parent.name} is in use by another tagmatch process") from exc

    def write(self, entry: dict) -> None:
        """Append `entry`, durably; a journal that cannot be written (a full disk) raises
        JournalError, and the caller must not do what the entry announces."""
        try:
            self._f.write(json_text(entry) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def new_run_id() -> str:
    """Sortable by time, unique enough: 20261125-134501-3f2a."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def create_run(runs_dir: Path, meta: dict) -> tuple[str, Path, Journal]:
    """A new run folder and its open journal, header written."""
    runs_dir = make_folder(Path(runs_dir))
    while True:
        run_id = new_run_id()
        run_dir = runs_dir / run_id
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
    j = Journal(run_dir / JOURNAL)
    j.write({"type": "run", "version": JOURNAL_VERSION, "id": run_id,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), **meta})
    fsync_dir(runs_dir)
    return run_id, run_dir, j


@dataclass
class OpRecord:
    """One operation as the journal tells it."""

    i: int
    entry: dict
    hash_after: str | None
    state: str  # "in-flight" | "done" | "failed" | "undone"
    reason: str | None = None  # why it failed, or why an undo was refused
    ready: bool = False

    @property
    def src(self) -> str:
        return self.entry["src"]

    @property
    def dst(self) -> str:
        return self.entry["dst"]


@dataclass
class RunInfo:
    id: str
    dir: Path
    header: dict
    ops: list[OpRecord] = field(default_factory=list)
    ended: bool = False

    def count(self, state: str) -> int:
        return sum(o.state == state for o in self.ops)

    @property
    def in_flight(self) -> list[OpRecord]:
        return [o for o in self.ops if o.state == "in-flight"]

    @property
    def status(self) -> str:
        """'in-flight' (an op was cut short), 'interrupted' (stopped between ops), 'done',
        'partly undone', 'undone', 'failed' (nothing succeeded) or 'empty'."""
        done, undone = self.count("done"), self.count("undone")
        if self.in_flight:
            return "in-flight"
        if undone and not done:
            return "undone"
        if undone:
            return "partly undone"
        if not self.ended:
            return "interrupted"
        if done:
            return "done"
        return "failed" if self.count("failed") else "empty"

    @property
    def when(self) -> str:
        """When the run started, to the second ('2026-12-03 15:04:05')."""
        return self.header.get("time", "")[:19].replace("T", " ")

    @property
    def how(self) -> str:
        """'copy to /music/sorted', 'move to ...' or 'rename in place'."""
        h = self.header
        return f"{h.get('mode')} to {h['dest']}" if h.get("dest") else "rename in place"

    @property
    def counts(self) -> str:
        """'3 done, 1 failed': its operations by state, the states with none left out."""
        return ", ".join(f"{self.count(s)} {s}" for s in ("done", "undone", "in-flight", "failed") if self.count(s))


def read_run(run_dir: Path) -> RunInfo:
    """Replay a journal. A torn last line (killed mid-write) is ignored: its step never happened
    as far as anyone can know, and the state checks in undo do not rely on it."""
    run_dir = Path(run_dir)
    path = run_dir / JOURNAL
    try:
        # "\n" ends a line, and only it: str.splitlines() also breaks at U+0085, U+2028 and the
        # like, which a file name or a tag (written raw in the JSON) may hold
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
    except OSError as exc:
        raise TagmatchError(f"cannot read journal {path}: {exc.strerror or exc}") from exc
    entries = []
    for n, line in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines) - 1:
                raise TagmatchError(f"corrupt journal {path}, line {n + 1}")
    if not entries or entries[0].get("type") != "run":
        raise TagmatchError(f"not a tagmatch journal: {path}")
    if entries[0].get("version") != JOURNAL_VERSION:
        raise TagmatchError(f"journal {path} has version {entries[0].get('version')}, expected {JOURNAL_VERSION}")
    info = RunInfo(entries[0]["id"], run_dir, entries[0])
    ops: dict[int, OpRecord] = {}
    for e in entries[1:]:
        t, i = e.get("type"), e.get("i")
        if t == "op":
            ops[i] = OpRecord(i, e, e.get("hash_after"), "in-flight")
        elif t == "end":
            info.ended = True
        elif t == "failed" and i not in ops:  # failed its checks before anything was done
            ops[i] = OpRecord(i, e, None, "failed", e.get("reason"))
        elif i in ops:
            o = ops[i]
            if t == "ready":
                o.hash_after, o.ready = e["hash_after"], True
            elif t in ("done", "failed", "undone"):
                o.state, o.reason = t, e.get("reason") or e.get("note")
            elif t == "undo_refused":
                o.reason = e.get("reason")
    info.ops = [ops[i] for i in sorted(ops)]
    return info


def list_runs(runs_dir: Path | None = None) -> list[RunInfo]:
    """Every readable run, oldest first (run ids sort by time)."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted(runs_dir.iterdir()):
        if (d / JOURNAL).is_file():
            try:
                out.append(read_run(d))
            except TagmatchError:
                continue
    return out


def find_run(runs_dir: Path | None, run_id: str | None) -> RunInfo:
    """A run by id (or unique prefix); without an id, the latest run that is not fully undone."""
    runs = list_runs(runs_dir)
    if run_id is None:
        todo = [r for r in runs if r.status not in ("undone", "empty", "failed")]
        if not todo:
            raise TagmatchError("no run to undo" + (" (all runs are undone)" if runs else ""))
        return todo[-1]
    hits = [r for r in runs if r.id == run_id] or [r for r in runs if r.id.startswith(run_id)]
    if len(hits) != 1:
        raise TagmatchError(f"no run {run_id!r}" if not hits else f"run id {run_id!r} is ambiguous")
    return hits[0]


def applied_sources(runs_dir: Path | None) -> dict[str, tuple[str, str]]:
    """Source path -> (run id, state) for ops that are done or in flight in any run: a new plan
    skips them instead of doing them twice."""
    out = {}
    for r in list_runs(runs_dir):
        for o in r.ops:
            if o.state in ("done", "in-flight"):
                out[o.src] = (r.id, o.state)
    return out

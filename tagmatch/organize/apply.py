"""Carrying out a plan, and undoing a run: the only code that changes users' files.

One operation, each step journaled (fsynced) before the next (line types in journal.py):

1. "op": paths, tags, the source's sha256, the temp, backup and new folders' paths.
2. Stage: copy the source to a hidden temp file in the destination folder, retag it there and
   verify it (`tags.write_tags` re-reads every tag), fsync; "ready" with the new sha256.
3. Moves and in-place renames that retag keep the original in the run's `backup/` folder: a hard
   link when the runs dir is on the same disk (free: the old bytes stay where they are), else a
   copy verified by hash. That makes undo byte-exact, audio and tags alike.
4. Put the temp file at the destination without overwriting anything (link + unlink; a plain
   replace only when the destination is the source itself), remove the source for moves; "done".

Pure renames (no tag change, same disk) are a single link/rename. A failed operation is rolled
back by the same state-checking code that undo uses (`_revert`), which decides from the files'
hashes what has happened, so a run killed at any instant can be undone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from tagmatch.errors import TagmatchError, TagReadError, TagWriteError
from tagmatch.fsutil import exclusive, fsync_dir
from tagmatch.organize.journal import Journal, JournalError, OpRecord, RunInfo, applied_sources, create_run
from tagmatch.organize.naming import free_path
from tagmatch.organize.plan import Plan, PlannedOp
from tagmatch.progress import OnProgress, Progress, quiet
from tagmatch.organize.tags import is_read_only, read_pictures, read_tag_values, write_tags

TEST_DELAY_ENV = "TAGMATCH_TEST_SLOW_APPLY"  # test-only: seconds to sleep after each journal line


class UndoRefused(TagmatchError):
    """Undoing one operation would overwrite or lose something that changed since the run."""


@dataclass
class Run:
    id: str
    dir: Path
    journal: Journal
    lock: ContextManager | None = field(default=None, repr=False)  # the runs folder's, until it ends

    def release(self) -> None:
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None


APPLY_LOCK = "apply.lock"


def runs_lock(runs_dir: Path) -> ContextManager:
    """One apply or undo at a time per runs folder: two at once would move the same files."""
    return exclusive(Path(runs_dir) / APPLY_LOCK, f"the runs folder {runs_dir}")


@dataclass
class OpResult:
    i: int
    src: str
    dst: str
    status: str  # "done" | "failed"
    message: str = ""


@dataclass(frozen=True)
class RunOutcome:
    """How a run of a plan ended, as the CLI and the TUI report it."""

    run_id: str
    done: int
    failed: list[OpResult]
    left: int  # planned ops never started (the run was stopped)

    @classmethod
    def of(cls, run_id: str, results: list[OpResult], n_planned: int) -> "RunOutcome":
        return cls(run_id, sum(r.status == "done" for r in results), [r for r in results if r.status == "failed"],
                   n_planned - len(results))

    def line(self, done_word: str = "done") -> str:
        """'run 20261204-101500-3f2a: 3 done, 1 failed (left unchanged), 2 not started (interrupted)'."""
        return (f"run {self.run_id}: {self.done} {done_word}, {len(self.failed)} failed"
                + (" (left unchanged)" if self.failed else "")
                + (f", {self.left} not started (interrupted)" if self.left else ""))


@dataclass
class UndoResult:
    op: OpRecord
    status: str  # "undone" | "refused"
    message: str
    was_in_flight: bool


# ---- file primitives ---------------------------------------------------------------------------
def sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _hash_or_none(path: Path | None) -> str | None:
    if path is None or not os.path.isfile(path):
        return None
    return sha256(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _copy_like(a: Path, b: Path) -> None:
    """Copy a's bytes, mode and (when we may) owner to b: a retagged file replaces the user's, so
    it should look like the user's file, even when root runs tagmatch."""
    shutil.copyfile(a, b)
    shutil.copymode(a, b)
    st = os.stat(a)
    if hasattr(os, "chown") and (st.st_uid, st.st_gid) != (os.stat(b).st_uid, os.stat(b).st_gid):
        try:
            os.chown(b, st.st_uid, st.st_gid)
        except OSError:
            pass


def _copy_verified(a: Path, b: Path, expected: str) -> None:
    """Copy a to b (mode too), fsync, and check b's hash: a copy is trusted only once verified."""
    _copy_like(a, b)
    _fsync_file(b)
    if sha256(b) != expected:
        os.unlink(b)
        raise TagmatchError(f"copy of {a} does not match the original (hash differs)")


def _place(a: Path, b: Path) -> None:
    """Rename a to b, never overwriting b (FileExistsError). Hard link + unlink is atomic and
    no-clobber; filesystems without hard links get a check then a rename. EXDEV propagates."""
    try:
        os.link(a, b)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise
        if os.path.lexists(b):
            raise FileExistsError(errno.EEXIST, "destination exists", str(b)) from exc
        os.rename(a, b)
        return
    os.unlink(a)


def _move(a: Path, b: Path, expected: str, *, replace: bool = False) -> None:
    """Move a to b; across filesystems: copy beside b, fsync, verify the hash, place, remove a."""
    try:
        os.replace(a, b) if replace else _place(a, b)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = b.parent / f".tagmatch-move-{secrets.token_hex(4)}.tmp"
    try:
        _copy_verified(a, tmp, expected)
        os.replace(tmp, b) if replace else _place(tmp, b)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    os.unlink(a)


def _backup(src: Path, backup: Path, expected: str) -> None:
    backup.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(backup):
        os.unlink(backup)  # ours, from an earlier attempt of this very op
    try:
        os.link(src, backup)  # same disk: free, and the original bytes stay untouched
    except OSError:
        try:
            _copy_verified(src, backup, expected)
        except OSError as exc:
            raise TagmatchError(f"cannot keep a backup in the runs folder ({exc.strerror or exc}); "
                                "the file is unchanged") from None
    else:
        if sha256(backup) != expected:
            raise TagmatchError(f"{src} changed while it was being applied")
    fsync_dir(backup.parent)


def _missing_dirs(folder: Path) -> list[Path]:
    """Folders to create for `folder` to exist, outermost first; raise if a file is in the way."""
    out = []
    p = folder
    while not p.is_dir():
        if os.path.lexists(p):
            raise TagmatchError(f"{p} is in the way: it exists and is not a folder")
        out.append(p)
        if p.parent == p:
            break
        p = p.parent
    return out[::-1]


def _remove_dirs(dirs: list[str]) -> None:
    for d in reversed(dirs):
        try:
            os.rmdir(d)
        except OSError:  # not empty (someone else's files) or already gone
            pass


# ---- apply -------------------------------------------------------------------------------------
def start_run(plan: Plan, runs_dir: Path, *, scan: str | None = None, id3v23: bool = False) -> Run:
    """Open a run for `plan`, holding the runs folder's lock until `apply_plan` ends. A plan with
    files that another run applied after it was made is refused: plan again."""
    lock = runs_lock(runs_dir)
    lock.__enter__()
    try:
        applied = applied_sources(runs_dir)
        stale = [str(op.src) for op in plan.ops if str(op.src) in applied]
        if stale:
            raise TagmatchError(f"{len(stale)} file(s) of this plan were applied by another run since it was "
                                f"made (the first: {stale[0]}): plan again")
        run = _create(plan, runs_dir, scan, id3v23)
    except BaseException:
        lock.__exit__(None, None, None)
        raise
    run.lock = lock
    return run


def _create(plan: Plan, runs_dir: Path, scan: str | None, id3v23: bool) -> Run:
    meta = {"scan": scan, "mode": plan.mode, "dest": str(plan.dest) if plan.dest else None,
            "template": plan.template, "id3v23": id3v23, "n_ops": len(plan.ops)}
    run_id, run_dir, journal = create_run(runs_dir, meta)
    return Run(run_id, run_dir, journal)


def apply_plan(plan: Plan, run: Run, *, id3v23: bool = False, should_stop: Callable[[], bool] | None = None,
               delay_s: float = 0.0, on_progress: OnProgress = quiet) -> Iterator[OpResult]:
    """Carry out every op of `plan` in `run`, one result each (and a Progress "applying" event);
    a failed op is rolled back and the run goes on. Closes the journal at the end (or when the
    caller stops iterating)."""
    completed = False
    try:
        for i, op in enumerate(plan.ops):
            if should_stop and should_stop():
                return
            try:
                r = _apply_one(op, i, run, id3v23, delay_s)
            except JournalError as exc:  # a step not journaled is not taken: the run stops here
                raise TagmatchError(f"run {run.id} stopped at {op.src}: {exc}. What it did is journaled: "
                                    f"`tagmatch undo {run.id}` puts it back") from None
            on_progress(Progress("applying", i + 1, len(plan.ops), r.src, r.message if r.status == "failed" else None))
            yield r
        completed = True
    finally:
        try:
            run.journal.write({"type": "end", "interrupted": not completed})
        except JournalError:  # a run without its end line reads as interrupted, which it was
            pass
        run.journal.close()
        run.release()


def _fail(run: Run, i: int, op: PlannedOp, reason: str) -> OpResult:
    run.journal.write({"type": "failed", "i": i, "src": str(op.src), "dst": str(op.dst), "mode": op.mode,
                       "reason": reason})
    return OpResult(i, str(op.src), str(op.dst), "failed", reason)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (TagWriteError, TagReadError)):
        return exc.reason
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


def _apply_one(op: PlannedOp, i: int, run: Run, id3v23: bool, delay_s: float) -> OpResult:
    src = op.src
    # -- checks, before anything is journaled as started
    if not src.is_file():
        return _fail(run, i, op, "source file is gone (deleted or moved since the scan)")
    if src.is_symlink():
        return _fail(run, i, op, "a symbolic link: not touched")
    if op.retags and is_read_only(src):
        return _fail(run, i, op, "file is read-only: tags not written")
    try:
        h0 = sha256(src)
        old_tags = read_tag_values(src)
        dst = op.dst
        if dst != src and os.path.lexists(dst):  # appeared since the plan: never overwrite
            dst = free_path(dst, own=src if op.mode == "move" else None)
        dirs = _missing_dirs(dst.parent)
        pictures = read_pictures(op.art_from) if op.art_from else []
    except (OSError, TagmatchError) as exc:
        return _fail(run, i, op, _reason(exc))
    retags = bool(op.tag_changes or pictures)
    if dst == src and not retags:
        return _fail(run, i, op, "nothing left to change (the reference's art is gone)")
    entry = {"type": "op", "i": i, "mode": op.mode, "src": str(src), "dst": str(dst),
             "tmp": str(dst.parent / f".tagmatch-{run.id}-{i}.tmp"),
             "backup": str(run.dir / "backup" / f"{i:05d}{src.suffix.lower()}") if retags and op.mode == "move" else None,
             "dirs": [str(d) for d in dirs], "old_tags": old_tags, "new_tags": op.changes,
             "art": bool(pictures), "hash_before": h0, "hash_after": None if retags else h0}
    run.journal.write(entry)
    time.sleep(delay_s)
    tmp, h1 = Path(entry["tmp"]), entry["hash_after"]
    try:
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        moved = False
        if not retags and op.mode == "move":
            try:  # a pure rename: one atomic, no-clobber step on the same disk
                _place(src, dst)
                moved = True
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        if not moved:  # staged through the journaled temp file (retag, copy, or across disks)
            _copy_like(src, tmp)
            if retags:
                write_tags(tmp, op.changes, add_pictures=pictures, id3v23=id3v23)
            _fsync_file(tmp)
            h1 = sha256(tmp)
            if not retags and h1 != h0:
                raise TagmatchError(f"copy of {src} does not match the original (hash differs)")
            if retags:
                run.journal.write({"type": "ready", "i": i, "hash_after": h1})
                time.sleep(delay_s)
            if entry["backup"]:
                _backup(src, Path(entry["backup"]), h0)
            if dst == src:
                os.replace(tmp, dst)
            else:
                _place(tmp, dst)
                if op.mode == "move":
                    os.unlink(src)
        for d in {dst.parent, src.parent}:
            fsync_dir(d)
    except Exception as exc:
        reason = _reason(exc)
        try:
            _revert(entry, h1, done=False)
        except Exception as exc2:  # the op stays "in flight" in the journal; undo will retry
            return OpResult(i, str(src), str(dst), "failed",
                            f"{reason}; rollback incomplete ({_reason(exc2)}): run `tagmatch undo {run.id}`")
        run.journal.write({"type": "failed", "i": i, "reason": reason})
        return OpResult(i, str(src), str(dst), "failed", reason)
    run.journal.write({"type": "done", "i": i})
    return OpResult(i, str(src), str(dst), "done")


# ---- undo --------------------------------------------------------------------------------------
def _revert(e: dict, h1: str | None, *, done: bool) -> str:
    """Put one op's files back as they were, judging by hashes what state they are in (so it works
    for done ops and for ops cut short at any step). Raises `UndoRefused` rather than overwrite or
    remove anything that is not exactly what the run left. Returns a note."""
    src, dst, mode, h0 = Path(e["src"]), Path(e["dst"]), e["mode"], e["hash_before"]
    tmp = Path(e["tmp"]) if e.get("tmp") else None
    backup = Path(e["backup"]) if e.get("backup") else None
    kept = f"; the original is kept at {backup}" if backup and backup.is_file() else ""
    if tmp and os.path.lexists(tmp):
        os.unlink(tmp)  # our temp file, never the user's
    note = "nothing to undo"
    if src == dst:  # retagged in place
        cur = _hash_or_none(src)
        if cur != h0:
            if cur is None or cur != h1:
                raise UndoRefused(f"{src} {'is gone' if cur is None else 'changed since the run (hash differs)'}"
                                  f"; left as is{kept}")
            if _hash_or_none(backup) != h0:
                raise UndoRefused(f"{src}: no intact backup of the original; left as is")
            _move(backup, src, h0, replace=True)
            note = "original restored"
    elif mode == "copy":
        d = _hash_or_none(dst)
        if d is not None and h1 is not None and d == h1:
            os.unlink(dst)
            note = "copy removed"
        elif d is not None and done:
            raise UndoRefused(f"{dst} changed since the run (hash differs); left as is")
    else:
        s, d = _hash_or_none(src), _hash_or_none(dst)
        ours = d is not None and h1 is not None and d == h1
        if s == h0:
            if ours:
                os.unlink(dst)
                note = "new file removed, original was still in place"
        elif s is not None:
            raise UndoRefused(f"{src} now holds another file (hash differs); {dst} left as is{kept}")
        elif not ours:
            raise UndoRefused(f"{dst} {'is gone' if d is None else 'changed since the run (hash differs)'}"
                              f"; left as is{kept}")
        elif backup is not None:
            if _hash_or_none(backup) != h0:
                raise UndoRefused(f"{dst}: no intact backup of the original; left as is")
            _move(backup, src, h0)
            os.unlink(dst)
            note = "original restored"
        elif h1 == h0:
            _move(dst, src, h0)
            note = "moved back"
        else:
            raise UndoRefused(f"{dst}: no backup of the original; left as is")
        fsync_dir(src.parent)
    if backup and os.path.lexists(backup) and _hash_or_none(src) == h0:
        os.unlink(backup)  # the original is back in place: the backup is redundant
    _remove_dirs(e.get("dirs") or [])
    return note


def undo_counts(results: list[UndoResult]) -> tuple[int, int]:
    """(undone, refused) of a finished undo."""
    undone = sum(r.status == "undone" for r in results)
    return undone, len(results) - undone


def undo_run(info: RunInfo, on_progress: OnProgress = quiet) -> Iterator[UndoResult]:
    """Revert a run's done and in-flight ops, newest first, each judged on its own: one refusal
    does not stop the rest. Journals every outcome in the run's own journal; each comes as a
    result and as a Progress "undoing" event (a refusal as its error)."""
    from tagmatch.organize.journal import JOURNAL, read_run

    with runs_lock(info.dir.parent), Journal(info.dir / JOURNAL) as journal:  # not while an apply runs
        info = read_run(info.dir)
        todo = [o for o in reversed(info.ops) if o.state in ("done", "in-flight")]
        for n, o in enumerate(todo, 1):
            was_in_flight = o.state == "in-flight"
            try:
                note = _revert(o.entry, o.hash_after, done=o.state == "done")
            except (OSError, TagmatchError) as exc:
                reason = _reason(exc)
                journal.write({"type": "undo_refused", "i": o.i, "reason": reason})
                on_progress(Progress("undoing", n, len(todo), str(o.dst), reason))
                yield UndoResult(o, "refused", reason, was_in_flight)
                continue
            journal.write({"type": "undone", "i": o.i, "note": note})
            on_progress(Progress("undoing", n, len(todo), str(o.dst)))
            yield UndoResult(o, "undone", note, was_in_flight)
    backup_dir = info.dir / "backup"
    if backup_dir.is_dir() and not any(backup_dir.iterdir()):
        backup_dir.rmdir()

"""Apply never retags other content as if it were what the scan saw (tagmatch.organize.seen)."""

from __future__ import annotations

import os
import shutil

from helpers import manifest_scan

from tagmatch.organize.plan import build_plan
from tagmatch.organize.seen import EDGE, changed, seen


def test_a_record_tells_other_content_from_a_new_modification_time(tmp_path):
    f = tmp_path / "a.bin"
    body = os.urandom(3 * EDGE)
    f.write_bytes(body)
    rec = seen(f)
    assert rec["size"] == len(body) and changed(f, rec) is None
    os.utime(f, ns=(0, 0))  # touched, restored from a backup: the same content
    assert changed(f, rec) is None
    f.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # the same size, another last byte
    assert changed(f, rec) == "changed since the scan: scan again"
    f.write_bytes(body[:-1])
    assert changed(f, rec) == "changed since the scan: scan again"
    f.unlink()
    assert changed(f, rec) == "unreadable now" and seen(f) is None


def test_small_files_are_hashed_whole(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10)
    rec = seen(f)
    f.write_bytes(b"x" * 9 + b"y")
    assert changed(f, rec)


def test_apply_refuses_a_file_replaced_since_the_scan(fixture_dir, manifest, messy):
    doc = manifest_scan(fixture_dir, manifest, messy)
    for f in doc.files:
        f["seen"] = seen(f["path"])
    before = build_plan(doc, min_confidence=0.9)
    victim, other = [op.src for op in before.ops][:2]
    shutil.copy(other, victim)  # another song copied over it
    plan = build_plan(doc, min_confidence=0.9)
    assert {s.path: s.reason for s in plan.skipped}[str(victim)] == "changed since the scan: scan again"
    assert [op.src for op in plan.ops] == [op.src for op in before.ops if op.src != victim]
